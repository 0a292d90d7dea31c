-- dref's engine on Redis: every operation is this one script, so that the
-- condition check, the field update, the version and revision increments,
-- lease bookkeeping and the change notification commit as one atomic step.
--
-- ARGV[1] is the operation, ARGV[2] the key prefix (namespace); the rest
-- depends on the operation. Layout (P = prefix):
--   P..'rev'          store revision (INCR; seeded from the server clock)
--   P..'r:'..key      record hash: m:ver, m:crev, m:mrev, m:lease, m:n (field
--                     count), f:<name> = field bytes, r:<name> = field mod revision
--   P..'c:'..key      pub/sub channel of the key's events
--   P..'lseq'         lease id sequence (INCR; seeded from the server clock)
--   P..'l:'..id       lease hash: ttl (milliseconds)
--   P..'lk:'..id      set of keys attached to the lease
--   P..'leases'       sorted set of lease ids by deadline (milliseconds)
--
-- Every number stored is a canonical decimal (digits, no sign, no leading
-- zero) below 2^53, so that Lua's numbers (doubles) hold it exactly. What
-- an operation relies on is checked before it changes anything: malformed
-- data (written by another client) is answered with an error reply whose
-- code is DREFDATA, then the Redis key and what is wrong with it, and the
-- store is left as it was. A request the script does not understand is
-- answered with the code DREFARG.
--
-- Cost notes (this script is the server's CPU per dref write): numbers are
-- turned into strings once, with string.format('%d'), and only strings are
-- passed to redis.call. Lua's own number-to-string conversion (tostring,
-- `..` on a number) and redis.call's conversion of number arguments go
-- through printf's floating-point path, which made up about half of a
-- write's time. string.format('%s') stops at a zero byte, so it is used only
-- for digits the script formatted itself; field names and values, which are
-- arbitrary bytes, are concatenated. Stored numbers are checked as strings
-- (one anchored string.find each), and converted only to compute with.
-- Every `local function` below is a new closure on every run (about 65 ns
-- each): a read defines none, and each helper is defined only before the
-- operations that use it. A `write` call carries one or more writes (the
-- client batches those issued concurrently), so the call's own cost (the
-- EVALSHA, ARGV, this prologue) is shared by all of them.

local OP = ARGV[1]
local P = ARGV[2]
local REV = P .. 'rev'

-- Writes and reads do not sweep: expiry may be seen late, never early, and
-- the lease operations and the periodic sweep keep it prompt.
if OP == 'read' then
  -- The record with the store revision it is current at (the caller
  -- checks both).
  local revision = redis.pcall('GET', REV)
  if type(revision) == 'table' then
    return redis.error_reply('DREFDATA `' .. REV .. '` is not a string')
  end
  local rkey = P .. 'r:' .. ARGV[3]
  local record = redis.pcall('HGETALL', rkey)
  if record.err then
    return redis.error_reply('DREFDATA `' .. rkey .. '` is not a hash: not a dref record')
  end
  return {revision or '0', record}
end

if OP == 'list' then
  -- Every record whose key starts with ARGV[3], with the store revision:
  -- one script, so one consistent cut of the store. KEYS walks the whole
  -- keyspace (the contract says a listing's cost grows with the store).
  local revision = redis.pcall('GET', REV)
  if type(revision) == 'table' then
    return redis.error_reply('DREFDATA `' .. REV .. '` is not a string')
  end
  local base = P .. 'r:'
  local pattern = string.gsub(base .. ARGV[3], '[%*%?%[%]\\]', '\\%0')
  local listed = {}
  for _, rkey in ipairs(redis.call('KEYS', pattern .. '*')) do
    local record = redis.pcall('HGETALL', rkey)
    if record.err then
      return redis.error_reply('DREFDATA `' .. rkey .. '` is not a hash: not a dref record')
    end
    listed[#listed + 1] = string.sub(rkey, #base + 1)
    listed[#listed + 1] = record
  end
  return {revision or '0', listed}
end

local fmt = string.format
local find = string.find

-- 2^53 - 1: below it, every integer is a double.
local EXACT = 9007199254740991

-- Whether `s` is a canonical decimal from 1 to 2^53 - 1 (`zero`: from 0).
local function canonical(s, zero)
  local n = #s
  if n > 16 then
    return false
  elseif find(s, '^[1-9]%d*$') then
    return n < 16 or s <= '9007199254740991'
  end
  return zero == true and s == '0'
end

-- The answer to malformed data under the Redis key `key`: `what` is wrong
-- with it, and `value` is what the store holds instead (false: nothing).
local function malformed(key, what, value)
  local text = 'DREFDATA `' .. key .. '` ' .. what
  if value == false then
    text = text .. ': missing'
  elseif value then
    if #value > 40 then
      value = string.sub(value, 1, 40) .. '...'
    end
    value = string.gsub(value, '[^%w%p ]', function(c)
      return fmt('\\x%02x', string.byte(c))
    end)
    text = text .. ': "' .. value .. '"'
  end
  return redis.error_reply(text)
end

-- The next value of the counter `key` (the store revision or the lease id
-- sequence), or nil and the error reply. A missing counter (a new
-- namespace, or a server that lost its data) starts from the server's
-- clock in microseconds since the epoch: the counter has never grown by
-- more than one per microsecond (a commit takes several), so a counter
-- seeded that way is above any value it had before the loss. A malformed
-- counter is left as it was (INCR fails on a non-integer; an integer out
-- of range is decremented back at once).
local function next_value(key)
  local n = redis.pcall('INCR', key)
  if type(n) ~= 'number' then
    local value = redis.pcall('GET', key)
    if type(value) ~= 'string' then
      return nil, malformed(key, 'is not a string')
    end
    return nil, malformed(key, 'is not a canonical number', value)
  end
  if n == 1 then
    local t = redis.call('TIME')
    n = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', key, fmt('%d', n))
  elseif n < 1 or n > EXACT then
    redis.call('DECR', key)
    return nil, malformed(key, 'is not a canonical number', redis.call('GET', key))
  end
  return n
end

if OP == 'write' then
  -- ARGV[3] is the number of writes; each follows as its key, condition,
  -- condition argument, condition field, operation, lease, field count,
  -- name and value per field, and record size limit ('' for none). The
  -- writes run in order, each with its own condition, revision and event,
  -- as if each were a call of its own: reply i answers write i (one of the
  -- shapes below, or an error reply for malformed data). A write that
  -- meets malformed data changes nothing and the others go on, so nothing
  -- below may raise a Lua error for bad data (an error would end the call
  -- with the earlier writes committed, answering for all of them).

  -- Small counts and lengths (of netstrings, fields, removals) as
  -- decimals, each formatted once per call: string.format costs a third
  -- of a microsecond, and a call's writes share most of these numbers.
  local small = {}
  local function digits(n)
    local s = small[n]
    if not s then
      s = fmt('%d', n)
      small[n] = s
    end
    return s
  end

  -- One write, whose key is ARGV[at]; its field names and values start at
  -- ARGV[at + 7]. Returns its reply: {1, revision, version} committed,
  -- {0, record} rejected (the record as HGETALL gives it), {2} for a lease
  -- that is gone, {3, size} for a record above the limit, or an error
  -- reply.
  local function write(at, nfields)
    local key, cond, carg, cfield = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
    local op, lease, count_arg = ARGV[at + 4], ARGV[at + 5], ARGV[at + 6]
    local f = at + 7
    local rkey = P .. 'r:' .. key
    -- One read of everything this write needs: the metadata, then the
    -- bytes of each named field, then their revisions, then the revision
    -- the condition names.
    local want = {'m:ver', 'm:crev', 'm:mrev', 'm:lease', 'm:n'}
    for i = 0, nfields - 1 do
      local name = ARGV[f + 2 * i]
      want[6 + i] = 'f:' .. name
      want[6 + nfields + i] = 'r:' .. name
    end
    local cond_rev = 6 + 2 * nfields
    if cond == 'frev' then
      want[cond_rev] = 'r:' .. cfield
    end
    local got = redis.pcall('HMGET', rkey, unpack(want))
    if got.err then
      if find(got.err, '^WRONGTYPE') then
        return malformed(rkey, 'is not a hash: not a dref record')
      end
      return got
    end
    local exists = got[1] ~= false
    local lease_known
    if exists then
      -- Everything below relies on these (a Put keeps the revision of each
      -- named field it does not change). A value equal to one checked
      -- already, or to the condition's number (which the client sends in
      -- canonical form, so a range check will do), needs no other check: in
      -- the common case only m:ver and m:crev are searched.
      local ver, crev, mrev = got[1], got[2], got[3]
      local n = #carg
      local same = (n > 0 and n < 16 and carg ~= '0' or n == 16 and carg <= '9007199254740991')
        and carg
      if not (cond == 'ver' and ver == same) and not canonical(ver) then
        return malformed(rkey, 'field m:ver is not a canonical number', ver)
      elseif not crev or not canonical(crev) then
        return malformed(rkey, 'field m:crev is not a canonical number', crev)
      elseif not mrev or mrev ~= crev and not (cond == 'mrev' and mrev == same)
          and not canonical(mrev) then
        return malformed(rkey, 'field m:mrev is not a canonical number', mrev)
      elseif got[4] and not canonical(got[4]) then
        return malformed(rkey, 'field m:lease is not a canonical number', got[4])
      elseif got[5] and got[5] ~= count_arg and not canonical(got[5], true) then
        return malformed(rkey, 'field m:n is not a canonical number', got[5])
      end
      local named = got[cond_rev]
      if cond == 'frev' and named and named ~= same and not canonical(named) then
        return malformed(rkey, 'field ' .. want[cond_rev] .. ' is not a canonical number', named)
      end
      for i = 6, 5 + nfields do
        local field, revision = want[i + nfields], got[i + nfields]
        if got[i] and not (revision == mrev or revision == crev
            or revision and canonical(revision)) then
          return malformed(rkey, 'field ' .. field .. ' is not a canonical number', revision)
        end
      end
    elseif op == 'put' and lease ~= '' then
      -- One call for both checks: the lease key is counted twice.
      local lkey = P .. 'l:' .. lease
      local n = redis.call('EXISTS', rkey, lkey, lkey)
      if n % 2 == 1 then
        return malformed(rkey, 'holds a hash that is not a dref record (no m:ver)')
      end
      lease_known = n >= 2
    elseif redis.call('EXISTS', rkey) == 1 then
      return malformed(rkey, 'holds a hash that is not a dref record (no m:ver)')
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
      ok = exists and got[cond_rev] == carg
    else
      return redis.error_reply('DREFARG unknown condition')
    end
    if op ~= 'put' and not exists then
      ok = false
    end
    if not ok then
      return {0, redis.call('HGETALL', rkey)}
    end
    -- A limit on the record this write makes (after the fields: a Patch
    -- keeps the fields it does not name, whose sizes only the store knows).
    local limit = ARGV[f + 2 * nfields]
    if limit ~= '' then
      local size, named = 0, {}
      for i = 0, nfields - 1 do
        named['f:' .. ARGV[f + 2 * i]] = true
        size = size + #ARGV[f + 1 + 2 * i]
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
    -- The lease sets change before the revision is taken, so that nothing
    -- can fail after it; if anything fails before, they are changed back.
    local old_lease = got[4] or ''
    local new_lease = old_lease
    if op == 'put' then
      new_lease = lease
    elseif op == 'del' then
      new_lease = ''
    end
    local added, removed, err = 0, 0, nil
    if new_lease ~= old_lease then
      if new_lease ~= '' then
        added = redis.pcall('SADD', P .. 'lk:' .. new_lease, key)
        if type(added) ~= 'number' then
          return malformed(P .. 'lk:' .. new_lease, 'is not a set')
        end
      end
      if old_lease ~= '' then
        removed = redis.pcall('SREM', P .. 'lk:' .. old_lease, key)
        if type(removed) ~= 'number' then
          removed = 0
          err = malformed(P .. 'lk:' .. old_lease, 'is not a set')
        end
      end
    end
    local revision
    if not err then
      revision, err = next_value(REV)
    end
    if err then
      if added == 1 then
        redis.call('SREM', P .. 'lk:' .. new_lease, key)
      end
      if removed == 1 then
        redis.call('SADD', P .. 'lk:' .. old_lease, key)
      end
      return err
    end
    local rev = fmt('%d', revision)
    if op == 'del' then
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
      local name, value = ARGV[f + 2 * i], ARGV[f + 1 + 2 * i]
      local old = got[6 + i]
      listed[name] = true
      if old then
        present = present + 1
      end
      if old ~= value then
        local n = #set
        set[n + 1] = want[6 + i]
        set[n + 2] = value
        set[n + 3] = 'r:' .. name
        set[n + 4] = rev
        changed[#changed + 1] = i
      end
    end
    -- The field count changes when fields are added or removed.
    -- (m:n is written only then; it is compared as a string first, since
    -- the field count argument and m:n are both canonical decimals.)
    local count
    if not exists or not got[5] then
      count = nfields - present
    elseif present < nfields then
      count = (tonumber(got[5]) or 0) + (nfields - present)
    end
    local removed = {}
    -- Only a put that does not list every stored field removes some.
    if op == 'put' and exists and (present < nfields or got[5] ~= count_arg)
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
      set[#set + 1] = digits(count)
    end
    if new_lease ~= old_lease then
      if new_lease ~= '' then
        set[#set + 1] = 'm:lease'
        set[#set + 1] = new_lease
      else
        redis.call('HDEL', rkey, 'm:lease')
      end
    end
    redis.call('HSET', rkey, unpack(set))
    -- The event, in as few pieces as it has fields: each `..` chain is
    -- one concatenation.
    local nchanged = digits(#changed)
    local parts = {
      '3:put' .. digits(#rev) .. ':' .. rev .. digits(#ver) .. ':' .. ver
        .. digits(#crev) .. ':' .. crev .. digits(#new_lease) .. ':' .. new_lease
        .. digits(#nchanged) .. ':' .. nchanged,
    }
    for _, i in ipairs(changed) do
      local name, value = ARGV[f + 2 * i], ARGV[f + 1 + 2 * i]
      parts[#parts + 1] = digits(#name) .. ':' .. name .. digits(#value) .. ':' .. value
    end
    local nremoved = digits(#removed)
    parts[#parts + 1] = digits(#nremoved) .. ':' .. nremoved
    for _, name in ipairs(removed) do
      parts[#parts + 1] = digits(#name) .. ':' .. name
    end
    redis.call('PUBLISH', P .. 'c:' .. key, table.concat(parts))
    return {1, revision, version}
  end

  -- The layout of every write is checked before the first runs: a request
  -- found malformed half-way would be answered with an error after the
  -- writes before it had committed. (tonumber, not `canonical`: this runs
  -- for every call, and any miscount shows in the total.)
  local count = tonumber(ARGV[3])
  if not count or count < 1 or count % 1 ~= 0 then
    return redis.error_reply('DREFARG the write count is not a positive number')
  end
  local at = 4
  for _ = 1, count do
    local nfields = tonumber(ARGV[at + 6])
    if not nfields or nfields < 0 or nfields % 1 ~= 0 then
      return redis.error_reply('DREFARG a write lacks its field count')
    end
    at = at + 8 + 2 * nfields
  end
  if at ~= #ARGV + 1 then
    return redis.error_reply('DREFARG the writes do not match their arguments')
  end
  local replies = {}
  at = 4
  for w = 1, count do
    local nfields = tonumber(ARGV[at + 6])
    replies[w] = write(at, nfields)
    at = at + 8 + 2 * nfields
  end
  return replies
end

local LEASES = P .. 'leases'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Deletes the records of lease `id`, each with its own revision and
-- `expired` event, then the lease. Returns an error reply if the store
-- revision is malformed; the records deleted before stay deleted (each
-- was a complete commit), the others and the lease stay for the next try.
local function expire_lease(id)
  local members = redis.call('SMEMBERS', P .. 'lk:' .. id)
  table.sort(members)
  for _, key in ipairs(members) do
    local rkey = P .. 'r:' .. key
    -- (A key that no longer holds a record of this lease is skipped.)
    if redis.pcall('HGET', rkey, 'm:lease') == id then
      local revision, err = next_value(REV)
      if not revision then
        return err
      end
      local rev = fmt('%d', revision)
      redis.call('DEL', rkey)
      redis.call('PUBLISH', P .. 'c:' .. key, fmt('7:expired%d:%s', #rev, rev))
    end
  end
  redis.call('DEL', P .. 'lk:' .. id, P .. 'l:' .. id)
  redis.call('ZREM', LEASES, id)
end

local function sweep()
  local due = redis.pcall('ZRANGEBYSCORE', LEASES, '-inf', fmt('%d', now_ms()))
  if due.err then
    return malformed(LEASES, 'is not a sorted set')
  end
  for _, id in ipairs(due) do
    local err = expire_lease(id)
    if err then
      return err
    end
  end
end

-- Every lease operation sweeps first; the sweep's expiries are commits of
-- their own, whatever the operation then answers.
local swept = sweep()
if swept then
  return swept
end
if OP == 'grant' then
  local n, bad = next_value(P .. 'lseq')
  if not n then
    return bad
  end
  local id = fmt('%d', n)
  redis.call('HSET', P .. 'l:' .. id, 'ttl', ARGV[3])
  redis.call('ZADD', LEASES, fmt('%d', now_ms() + tonumber(ARGV[3])), id)
  return id
elseif OP == 'keepalive' then
  local lkey = P .. 'l:' .. ARGV[3]
  local ttl = redis.call('HGET', lkey, 'ttl')
  if not ttl then
    return 0
  elseif not canonical(ttl) then
    return malformed(lkey, 'field ttl is not a canonical number', ttl)
  end
  redis.call('ZADD', LEASES, fmt('%d', now_ms() + tonumber(ttl)), ARGV[3])
  return 1
elseif OP == 'revoke' then
  if redis.call('EXISTS', P .. 'l:' .. ARGV[3]) == 1 then
    local bad = expire_lease(ARGV[3])
    if bad then
      return bad
    end
  end
  return 1
elseif OP == 'sweep' then
  return 1
end
return redis.error_reply('DREFARG unknown operation')
