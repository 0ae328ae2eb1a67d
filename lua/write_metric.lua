#!lua flags=allow-cross-slot-keys
-- write_metric.lua: apply a batch of metric points, each atomically, in diffadd or increment
-- mode. One call per batch saves a round trip and the script start-up per point.
--
-- KEYS    5 per point, in point order:
--           {uid}:<thing>:acts  hash aid -> msgpack {ts, amount, atid, ...} (the activity's
--                               changes) and "_span" (longest first-to-last change distance
--                               of any activity, so reads know how far back to look)
--           {uid}:<thing>:idx   zset "<atid or *>:<aid>:<first change ts>" scored by the
--                               activity's last change
--           counter hashes root, year, month of the point's ts2
-- ARGV[1] msgpack list of points, each {mode, aid, atid, value, ts1, ts2, children, expires}:
--           mode "d" diffadd (value = running total since ts1) or "i" increment;
--           aid, atid decimal strings; children = its year (in root), month (in year), day
--           and hour (in month), each counted in fields "<child>" and "<child>:<atid>";
--           expires = Unix time each counter hash expires at, 0 = never
-- ARGV[2] seconds the activity state lives after a new activity, 0 = forever
-- Returns {status, delta, status, delta, ...} per point: "ok", "same" (nothing to add) or
-- "stale" (ts2 older than a change already recorded for this activity: a late update).
local points = cmsgpack.unpack(ARGV[1])
local state_ttl = tonumber(ARGV[2])
local HASH_OF_CHILD = {1, 2, 3, 3}
local PER_POINT = 5

-- first and last change of an activity, and its type ("*" once it has had several)
local function summary(rec)
  local first, last, typ
  for i = 1, #rec, 3 do
    local ts, t = rec[i], rec[i + 2]
    if first == nil or ts < first then first = ts end
    if last == nil or ts > last then last = ts end
    if typ == nil then typ = t elseif typ ~= t then typ = '*' end
  end
  return first, last, typ
end

-- the amount to add for a point, or nil and why not
local function delta_of(rec, mode, value, ts1, ts2, last)
  if mode == 'i' then return value end
  if last ~= nil and ts2 < last then return nil, 'stale' end
  local sum = 0
  for i = 1, #rec, 3 do
    if rec[i] >= ts1 and rec[i] <= ts2 then sum = sum + rec[i + 1] end
  end
  return value - sum
end

-- record a change: merge into an entry of the same second and type, drop it if it nets 0
local function record(rec, ts, delta, atid)
  for i = 1, #rec, 3 do
    if rec[i] == ts and rec[i + 2] == atid then
      rec[i + 1] = rec[i + 1] + delta
      if rec[i + 1] == 0 then
        table.remove(rec, i + 2); table.remove(rec, i + 1); table.remove(rec, i)
      end
      return
    end
  end
  rec[#rec + 1] = ts; rec[#rec + 1] = delta; rec[#rec + 1] = atid
end

local function add_to_counters(k, p, delta)
  local atid, children, expires = p[3], p[7], p[8]
  for c = 1, 4 do
    local j = HASH_OF_CHILD[c]
    local key, expire_at = KEYS[k + 2 + j], expires[j]
    local n = redis.call('HINCRBY', key, children[c], delta)
    redis.call('HINCRBY', key, children[c] .. ':' .. atid, delta)
    if n == delta and expire_at > 0 then
      -- a new field, maybe a new hash: give it its expiry; the root only ever extends it
      redis.call('EXPIREAT', key, expire_at, 'NX')
      if j == 1 then redis.call('EXPIREAT', key, expire_at, 'GT') end
    end
  end
end

local function update_state(acts, idx, aid, rec, old_member, is_new)
  if #rec == 0 then
    redis.call('HDEL', acts, aid)
    if old_member then redis.call('ZREM', idx, old_member) end
    return
  end
  redis.call('HSET', acts, aid, cmsgpack.pack(rec))
  local first, last, typ = summary(rec)
  local member = typ .. ':' .. aid .. ':' .. first
  if old_member and old_member ~= member then redis.call('ZREM', idx, old_member) end
  redis.call('ZADD', idx, last, member)
  if last > first then
    local span = tonumber(redis.call('HGET', acts, '_span') or '0')
    if last - first > span then redis.call('HSET', acts, '_span', last - first) end
  end
  if is_new and state_ttl > 0 then
    redis.call('EXPIRE', acts, state_ttl)
    redis.call('EXPIRE', idx, state_ttl)
  end
end

local out = {}
for n = 1, #points do
  local p = points[n]
  local k = (n - 1) * PER_POINT
  local acts, idx = KEYS[k + 1], KEYS[k + 2]
  local mode, aid, atid, value, ts1, ts2 = p[1], p[2], p[3], p[4], p[5], p[6]
  local packed = redis.call('HGET', acts, aid)
  local rec = packed and cmsgpack.unpack(packed) or {}
  local first, last, typ = summary(rec)
  local delta, why = delta_of(rec, mode, value, ts1, ts2, last)
  if delta == nil then
    out[#out + 1] = why; out[#out + 1] = 0
  elseif delta == 0 then
    out[#out + 1] = 'same'; out[#out + 1] = 0
  else
    record(rec, ts2, delta, atid)
    add_to_counters(k, p, delta)
    update_state(acts, idx, aid, rec, first and (typ .. ':' .. aid .. ':' .. first), not packed)
    out[#out + 1] = 'ok'; out[#out + 1] = delta
  end
end
return out
