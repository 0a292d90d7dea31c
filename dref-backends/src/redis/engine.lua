-- dref's engine on Redis: every operation is this one script, so that the
-- condition check, the field update, the version and revision increments,
-- lease bookkeeping and the change notification commit as one atomic step.
--
-- ARGV[1] is the operation, ARGV[2] the key prefix (namespace); the rest
-- depends on the operation. Layout (P = prefix):
--   P..'rev'          store revision (INCR)
--   P..'r:'..key      record hash: m:ver, m:crev, m:mrev, m:lease, m:n (field
--                     count), f:<name> = field bytes, r:<name> = field mod revision
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
  -- One read of everything this write needs.
  local want = {'m:ver', 'm:crev', 'm:mrev', 'm:lease', 'm:n', 'r:' .. cfield}
  for i = 0, nfields - 1 do
    want[#want + 1] = 'f:' .. ARGV[10 + 2 * i]
  end
  local got = redis.call('HMGET', rkey, unpack(want))
  local exists = got[1] ~= false
  if not exists and redis.call('EXISTS', rkey) == 1 then
    return redis.error_reply('dref: ' .. rkey .. ' holds a hash that is not a dref record')
  end
  local ok
  if cond == 'any' then
    ok = true
  elseif cond == 'absent' then
    ok = not exists
  elseif cond == 'exists' then
    ok = exists
  elseif cond == 'ver' then
    ok = got[1] == carg
  elseif cond == 'mrev' then
    ok = got[3] == carg
  elseif cond == 'frev' then
    ok = exists and got[6] == carg
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
  local old_lease = got[4] or ''
  if op == 'del' then
    if old_lease ~= '' then
      redis.call('SREM', P .. 'lk:' .. old_lease, key)
    end
    redis.call('DEL', rkey)
    publish(key, {'deleted', rev})
    return {1, rev, 0}
  end
  local version, crev, count = 1, rev, 0
  if exists then
    version = tonumber(got[1]) + 1
    crev = got[2]
    count = tonumber(got[5]) or 0
  end
  local set = {}
  local changed, listed = {}, {}
  local present = 0
  for i = 0, nfields - 1 do
    local name, value = ARGV[10 + 2 * i], ARGV[11 + 2 * i]
    local old = got[7 + i]
    listed[name] = true
    if old then
      present = present + 1
    else
      count = count + 1
    end
    if old ~= value then
      set[#set + 1] = 'f:' .. name
      set[#set + 1] = value
      set[#set + 1] = 'r:' .. name
      set[#set + 1] = rev
      changed[#changed + 1] = name
      changed[#changed + 1] = value
    end
  end
  local removed = {}
  -- Only a put that does not list every stored field removes some.
  if op == 'put' and exists and present < tonumber(got[5] or 0) then
    for _, h in ipairs(redis.call('HKEYS', rkey)) do
      if string.sub(h, 1, 2) == 'f:' then
        local name = string.sub(h, 3)
        if not listed[name] then
          redis.call('HDEL', rkey, h, 'r:' .. name)
          removed[#removed + 1] = name
        end
      end
    end
    count = nfields
  end
  local new_lease = old_lease
  if op == 'put' and lease ~= old_lease then
    if old_lease ~= '' then
      redis.call('SREM', P .. 'lk:' .. old_lease, key)
    end
    if lease ~= '' then
      set[#set + 1] = 'm:lease'
      set[#set + 1] = lease
      redis.call('SADD', P .. 'lk:' .. lease, key)
    else
      redis.call('HDEL', rkey, 'm:lease')
    end
    new_lease = lease
  end
  redis.call('HSET', rkey, 'm:ver', version, 'm:crev', crev, 'm:mrev', rev, 'm:n', count, unpack(set))
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

-- Writes and reads do not sweep: expiry may be seen late, never early, and
-- the lease operations and the periodic sweep keep it prompt.
if OP == 'write' then
  return write()
elseif OP == 'read' then
  -- The record with the store revision it is current at.
  return {redis.call('GET', REV) or '0', redis.call('HGETALL', P .. 'r:' .. ARGV[3])}
end
sweep()
if OP == 'grant' then
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
