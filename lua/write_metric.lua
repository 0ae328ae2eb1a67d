#!lua
-- write_metric.lua: apply one metric point atomically, in diffadd or increment mode.
--
-- KEYS[1]     {uid}:<thing>:acts  hash aid -> msgpack {ts, amount, atid, ts, amount, atid, ...}
--                                 (the activity's recorded changes) and "_span" (the longest
--                                 first-to-last change distance of any activity, for reads)
-- KEYS[2]     {uid}:<thing>:idx   zset "<atid or *>:<aid>:<first ts>" scored by last change ts
-- KEYS[3..8]  counter hashes root, year, month, day, hour, minute of ts2
-- ARGV[1]     mode: "d" diffadd (value is the running total since ts1) or "i" increment
-- ARGV[2]     aid                 ARGV[3] atid (decimal strings)
-- ARGV[4]     value               ARGV[5] ts1       ARGV[6] ts2
-- ARGV[7..12] child field of each counter hash (year, month, day, hour, minute, second)
-- ARGV[13..18] Unix time at which each counter hash expires, 0 = never
-- ARGV[19]    seconds the activity state lives after its last write, 0 = forever
-- Returns {status, delta}: status "ok", "same" (nothing to add) or "stale" (ts2 is older
-- than a change already recorded for this activity: a late update, ignored).
local acts, idx = KEYS[1], KEYS[2]
local mode, aid, atid = ARGV[1], ARGV[2], ARGV[3]
local value, ts1, ts2 = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state_ttl = tonumber(ARGV[19])

local packed = redis.call('HGET', acts, aid)
local rec = packed and cmsgpack.unpack(packed) or {}

-- first and last change of an activity, and its type ("*" once it has had several)
local function summary(r)
  local first, last, typ
  for i = 1, #r, 3 do
    local ts, t = r[i], r[i + 2]
    if first == nil or ts < first then first = ts end
    if last == nil or ts > last then last = ts end
    if typ == nil then typ = t elseif typ ~= t then typ = '*' end
  end
  return first, last, typ
end

local first, last, typ = summary(rec)
local delta = value
if mode == 'd' then
  if last ~= nil and ts2 < last then return {'stale', 0} end
  local sum = 0
  for i = 1, #rec, 3 do
    if rec[i] >= ts1 and rec[i] <= ts2 then sum = sum + rec[i + 1] end
  end
  delta = value - sum
end
if delta == 0 then return {'same', 0} end

-- record the change: merge into an entry of the same second and type, drop it if it nets 0
local merged = false
for i = 1, #rec, 3 do
  if rec[i] == ts2 and rec[i + 2] == atid then
    rec[i + 1] = rec[i + 1] + delta
    if rec[i + 1] == 0 then
      table.remove(rec, i + 2); table.remove(rec, i + 1); table.remove(rec, i)
    end
    merged = true
    break
  end
end
if not merged then
  rec[#rec + 1] = ts2; rec[#rec + 1] = delta; rec[#rec + 1] = atid
end

for i = 1, 6 do
  local key, child, expire_at = KEYS[2 + i], ARGV[6 + i], tonumber(ARGV[12 + i])
  local n = redis.call('HINCRBY', key, child, delta)
  redis.call('HINCRBY', key, child .. ':' .. atid, delta)
  if n == delta and expire_at > 0 then
    -- a new field: give a new key its expiry; the root (all years) only ever extends it
    redis.call('EXPIREAT', key, expire_at, 'NX')
    if i == 1 then redis.call('EXPIREAT', key, expire_at, 'GT') end
  end
end

local old_member = first and (typ .. ':' .. aid .. ':' .. first)
if #rec == 0 then
  redis.call('HDEL', acts, aid)
  if old_member then redis.call('ZREM', idx, old_member) end
else
  redis.call('HSET', acts, aid, cmsgpack.pack(rec))
  local nfirst, nlast, ntyp = summary(rec)
  local member = ntyp .. ':' .. aid .. ':' .. nfirst
  if old_member and old_member ~= member then redis.call('ZREM', idx, old_member) end
  redis.call('ZADD', idx, nlast, member)
  if nlast > nfirst then
    local span = tonumber(redis.call('HGET', acts, '_span') or '0')
    if nlast - nfirst > span then redis.call('HSET', acts, '_span', nlast - nfirst) end
  end
end
if state_ttl > 0 then
  redis.call('EXPIRE', acts, state_ttl)
  redis.call('EXPIRE', idx, state_ttl)
end
return {'ok', delta}
