-- dref's engine on Redis: every operation is this one script, so that the
-- condition check, the field update, the version and revision increments,
-- lease bookkeeping and the change notification commit as one atomic step.
--
-- ARGV[1] is the operation, ARGV[2] the key prefix (namespace); the rest
-- depends on the operation. Layout (P = prefix):
--   P..'rev'          store revision (INCR)
--   P..'r:'..key      record hash: m:ver, m:crev, m:mrev, m:lease,
--                     f:<name> = field bytes, r:<name> = field mod revision
--   P..'c:'..key      pub/sub channel of the key's events
--   P..'lseq'         lease id sequence
--   P..'l:'..id       lease hash: ttl (milliseconds)
--   P..'lk:'..id      set of keys attached to the lease
--   P..'leases'       sorted set of lease ids by deadline (milliseconds)

local OP = ARGV[1]
local P = ARGV[2]
local REV = P .. 'rev'
local LEASES = P .. 'leases'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Events are netstrings ("<length>:<bytes>"), which carry arbitrary bytes.
local function publish(key, parts)
  local out = {}
  for i = 1, #parts do
    local s = tostring(parts[i])
    out[i] = #s .. ':' .. s
  end
  redis.call('PUBLISH', P .. 'c:' .. key, table.concat(out))
end

local function expire_lease(id)
  local members = redis.call('SMEMBERS', P .. 'lk:' .. id)
  table.sort(members)
  for _, key in ipairs(members) do
    local rkey = P .. 'r:' .. key
    if redis.call('HGET', rkey, 'm:lease') == id then
      redis.call('DEL', rkey)
      publish(key, {'expired', redis.call('INCR', REV)})
    end
  end
  redis.call('DEL', P .. 'lk:' .. id, P .. 'l:' .. id)
  redis.call('ZREM', LEASES, id)
end

local function sweep()
  local due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now_ms())
  for _, id in ipairs(due) do
    expire_lease(id)
  end
end

local function write()
  local key, cond, carg, cfield = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local op, lease, nfields = ARGV[7], ARGV[8], tonumber(ARGV[9])
  local rkey = P .. 'r:' .. key
  local exists = redis.call('EXISTS', rkey) == 1
  local ok
  if cond == 'any' then
    ok = true
  elseif cond == 'absent' then
    ok = not exists
  elseif cond == 'exists' then
    ok = exists
  elseif cond == 'ver' then
    ok = exists and redis.call('HGET', rkey, 'm:ver') == carg
  elseif cond == 'mrev' then
    ok = exists and redis.call('HGET', rkey, 'm:mrev') == carg
  elseif cond == 'frev' then
    ok = exists and redis.call('HGET', rkey, 'r:' .. cfield) == carg
  else
    return redis.error_reply('dref: unknown condition ' .. cond)
  end
  if op ~= 'put' and not exists then
    ok = false
  end
  if not ok then
    return {0, redis.call('HGETALL', rkey)}
  end
  if op == 'put' and lease ~= '' and redis.call('EXISTS', P .. 'l:' .. lease) == 0 then
    return {2}
  end
  local rev = redis.call('INCR', REV)
  if op == 'del' then
    local old_lease = redis.call('HGET', rkey, 'm:lease')
    if old_lease then
      redis.call('SREM', P .. 'lk:' .. old_lease, key)
    end
    redis.call('DEL', rkey)
    publish(key, {'deleted', rev})
    return {1, rev, 0}
  end
  local version, crev
  if exists then
    version = tonumber(redis.call('HGET', rkey, 'm:ver')) + 1
    crev = redis.call('HGET', rkey, 'm:crev')
  else
    version = 1
    crev = tostring(rev)
  end
  local changed, listed = {}, {}
  for i = 0, nfields - 1 do
    local name, value = ARGV[10 + 2 * i], ARGV[11 + 2 * i]
    listed[name] = true
    if redis.call('HGET', rkey, 'f:' .. name) ~= value then
      redis.call('HSET', rkey, 'f:' .. name, value, 'r:' .. name, rev)
      changed[#changed + 1] = name
      changed[#changed + 1] = value
    end
  end
  local removed = {}
  if op == 'put' and exists then
    for _, h in ipairs(redis.call('HKEYS', rkey)) do
      if string.sub(h, 1, 2) == 'f:' then
        local name = string.sub(h, 3)
        if not listed[name] then
          redis.call('HDEL', rkey, h, 'r:' .. name)
          removed[#removed + 1] = name
        end
      end
    end
  end
  redis.call('HSET', rkey, 'm:ver', version, 'm:crev', crev, 'm:mrev', rev)
  local new_lease = redis.call('HGET', rkey, 'm:lease') or ''
  if op == 'put' and lease ~= new_lease then
    if new_lease ~= '' then
      redis.call('SREM', P .. 'lk:' .. new_lease, key)
    end
    if lease ~= '' then
      redis.call('HSET', rkey, 'm:lease', lease)
      redis.call('SADD', P .. 'lk:' .. lease, key)
    else
      redis.call('HDEL', rkey, 'm:lease')
    end
    new_lease = lease
  end
  local parts = {'put', rev, version, crev, new_lease, #changed / 2}
  for _, v in ipairs(changed) do
    parts[#parts + 1] = v
  end
  parts[#parts + 1] = #removed
  for _, v in ipairs(removed) do
    parts[#parts + 1] = v
  end
  publish(key, parts)
  return {1, rev, version}
end

sweep()
if OP == 'write' then
  return write()
elseif OP == 'read' then
  -- The record with the store revision it is current at.
  return {redis.call('GET', REV) or '0', redis.call('HGETALL', P .. 'r:' .. ARGV[3])}
elseif OP == 'grant' then
  local id = tostring(redis.call('INCR', P .. 'lseq'))
  redis.call('HSET', P .. 'l:' .. id, 'ttl', ARGV[3])
  redis.call('ZADD', LEASES, now_ms() + tonumber(ARGV[3]), id)
  return id
elseif OP == 'keepalive' then
  local ttl = redis.call('HGET', P .. 'l:' .. ARGV[3], 'ttl')
  if not ttl then
    return 0
  end
  redis.call('ZADD', LEASES, now_ms() + tonumber(ttl), ARGV[3])
  return 1
elseif OP == 'revoke' then
  if redis.call('EXISTS', P .. 'l:' .. ARGV[3]) == 1 then
    expire_lease(ARGV[3])
  end
  return 1
elseif OP == 'sweep' then
  return 1
end
return redis.error_reply('dref: unknown operation ' .. tostring(OP))
