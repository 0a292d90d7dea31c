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
--
-- Cost notes (this script is the server's CPU per dref write): numbers are
-- turned into strings once, with string.format('%d'), and only strings are
-- passed to redis.call. Lua's own number-to-string conversion (tostring,
-- `..` on a number) and redis.call's conversion of number arguments go
-- through printf's floating-point path, which made up about half of a
-- write's time. string.format('%s') stops at a zero byte, so it is used only
-- for digits the script formatted itself; field names and values, which are
-- arbitrary bytes, are concatenated.

local OP = ARGV[1]
local P = ARGV[2]
local REV = P .. 'rev'
local fmt = string.format

-- A netstring ("<length>:<bytes>"), which carries arbitrary bytes.
local function ns(s)
  return fmt('%d:', #s) .. s
end

local function write()
  local key, cond, carg, cfield = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local op, lease, nfields = ARGV[7], ARGV[8], tonumber(ARGV[9])
  local rkey = P .. 'r:' .. key
  -- One read of everything this write needs.
  local want = {'m:ver', 'm:crev', 'm:mrev', 'm:lease', 'm:n', 'm:n'}
  if cond == 'frev' then
    want[6] = 'r:' .. cfield
  end
  for i = 0, nfields - 1 do
    want[7 + i] = 'f:' .. ARGV[10 + 2 * i]
  end
  local got = redis.call('HMGET', rkey, unpack(want))
  local exists = got[1] ~= false
  local lease_known
  if not exists then
    if op == 'put' and lease ~= '' then
      -- One call for both checks: the lease key is counted twice.
      local lkey = P .. 'l:' .. lease
      local n = redis.call('EXISTS', rkey, lkey, lkey)
      if n % 2 == 1 then
        return redis.error_reply('dref: ' .. rkey .. ' holds a hash that is not a dref record')
      end
      lease_known = n >= 2
    elseif redis.call('EXISTS', rkey) == 1 then
      return redis.error_reply('dref: ' .. rkey .. ' holds a hash that is not a dref record')
    end
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
  -- A limit on the record this write makes (after the fields: a Patch
  -- keeps the fields it does not name, whose sizes only the store knows).
  local limit = ARGV[10 + 2 * nfields]
  if limit and limit ~= '' then
    local size, named = 0, {}
    for i = 0, nfields - 1 do
      named['f:' .. ARGV[10 + 2 * i]] = true
      size = size + #ARGV[11 + 2 * i]
    end
    if op == 'patch' then
      for _, h in ipairs(redis.call('HKEYS', rkey)) do
        if string.sub(h, 1, 2) == 'f:' and not named[h] then
          size = size + redis.call('HSTRLEN', rkey, h)
        end
      end
    end
    if size > tonumber(limit) then
      return {3, size}
    end
  end
  if op == 'put' and lease ~= '' then
    if lease_known == nil then
      lease_known = redis.call('EXISTS', P .. 'l:' .. lease) == 1
    end
    if not lease_known then
      return {2}
    end
  end
  local revision = redis.call('INCR', REV)
  local rev = fmt('%d', revision)
  local old_lease = got[4] or ''
  if op == 'del' then
    if old_lease ~= '' then
      redis.call('SREM', P .. 'lk:' .. old_lease, key)
    end
    redis.call('DEL', rkey)
    redis.call('PUBLISH', P .. 'c:' .. key, fmt('7:deleted%d:%s', #rev, rev))
    return {1, revision, 0}
  end
  local version, crev = 1, rev
  local set
  if exists then
    version = tonumber(got[1]) + 1
    crev = got[2]
    set = {'m:ver', fmt('%d', version), 'm:mrev', rev}
  else
    set = {'m:ver', '1', 'm:mrev', rev, 'm:crev', rev}
  end
  local ver = set[2]
  local changed, listed = {}, {}
  local present = 0
  for i = 0, nfields - 1 do
    local name, value = ARGV[10 + 2 * i], ARGV[11 + 2 * i]
    local old = got[7 + i]
    listed[name] = true
    if old then
      present = present + 1
    end
    if old ~= value then
      local n = #set
      set[n + 1] = want[7 + i]
      set[n + 2] = value
      set[n + 3] = 'r:' .. name
      set[n + 4] = rev
      changed[#changed + 1] = i
    end
  end
  -- The field count changes when fields are added or removed.
  -- (m:n is written only then; it is compared as a string first, since
  -- ARGV[9] and m:n are both canonical decimals.)
  local count
  if not exists or not got[5] then
    count = nfields - present
  elseif present < nfields then
    count = (tonumber(got[5]) or 0) + (nfields - present)
  end
  local removed = {}
  -- Only a put that does not list every stored field removes some.
  if op == 'put' and exists and (present < nfields or got[5] ~= ARGV[9])
      and present < (tonumber(got[5]) or 0) then
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
  if count then
    set[#set + 1] = 'm:n'
    set[#set + 1] = fmt('%d', count)
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
  redis.call('HSET', rkey, unpack(set))
  local nchanged = fmt('%d', #changed)
  local parts = {
    fmt('3:put%d:%s%d:%s%d:', #rev, rev, #ver, ver, #crev),
    crev,
    fmt('%d:', #new_lease),
    new_lease,
    fmt('%d:%s', #nchanged, nchanged),
  }
  local n = 5
  for _, i in ipairs(changed) do
    local name, value = ARGV[10 + 2 * i], ARGV[11 + 2 * i]
    parts[n + 1] = fmt('%d:', #name)
    parts[n + 2] = name
    parts[n + 3] = fmt('%d:', #value)
    parts[n + 4] = value
    n = n + 4
  end
  if #removed == 0 then
    parts[n + 1] = '1:0'
  else
    local nremoved = fmt('%d', #removed)
    parts[n + 1] = fmt('%d:%s', #nremoved, nremoved)
    for _, name in ipairs(removed) do
      parts[#parts + 1] = ns(name)
    end
  end
  redis.call('PUBLISH', P .. 'c:' .. key, table.concat(parts))
  return {1, revision, version}
end

-- Writes and reads do not sweep: expiry may be seen late, never early, and
-- the lease operations and the periodic sweep keep it prompt.
if OP == 'write' then
  return write()
elseif OP == 'read' then
  -- The record with the store revision it is current at.
  return {redis.call('GET', REV) or '0', redis.call('HGETALL', P .. 'r:' .. ARGV[3])}
end

local LEASES = P .. 'leases'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function expire_lease(id)
  local members = redis.call('SMEMBERS', P .. 'lk:' .. id)
  table.sort(members)
  for _, key in ipairs(members) do
    local rkey = P .. 'r:' .. key
    if redis.call('HGET', rkey, 'm:lease') == id then
      redis.call('DEL', rkey)
      local rev = fmt('%d', redis.call('INCR', REV))
      redis.call('PUBLISH', P .. 'c:' .. key, fmt('7:expired%d:%s', #rev, rev))
    end
  end
  redis.call('DEL', P .. 'lk:' .. id, P .. 'l:' .. id)
  redis.call('ZREM', LEASES, id)
end

local function sweep()
  local due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', fmt('%d', now_ms()))
  for _, id in ipairs(due) do
    expire_lease(id)
  end
end

sweep()
if OP == 'grant' then
  local id = fmt('%d', redis.call('INCR', P .. 'lseq'))
  redis.call('HSET', P .. 'l:' .. id, 'ttl', ARGV[3])
  redis.call('ZADD', LEASES, fmt('%d', now_ms() + tonumber(ARGV[3])), id)
  return id
elseif OP == 'keepalive' then
  local ttl = redis.call('HGET', P .. 'l:' .. ARGV[3], 'ttl')
  if not ttl then
    return 0
  end
  redis.call('ZADD', LEASES, fmt('%d', now_ms() + tonumber(ttl)), ARGV[3])
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
