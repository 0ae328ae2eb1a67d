#!lua flags=allow-cross-slot-keys
-- write_metric.lua: apply a batch of metric points, each atomically, in diffadd or increment
-- mode. One call per batch saves a round trip and the script start-up per point.
--
-- KEYS    9 per point, in point order:
--           {uid}:acts  the user's activity state, a hash; an activity is "<thing>:<aid>":
--             "<thing>:<aid>"        msgpack {first, last, type, changes, hour, total, ...}:
--                                    first and last change (Unix s), its type ("*" once it
--                                    has had several), its number of changes, and the total
--                                    of each hour (ts // 3600) with changes, ascending
--             "<thing>:<aid>:<hour>" msgpack {ts, amount, atid, ...}: that hour's changes;
--                                    absent while the activity has a single change
--             "_span"                the longest first-to-last distance of any activity
--           {uid}:idx   zset "<thing>:<type>:<aid>:<first>" scored by the last change
--           counter hashes {uid}:r, {uid}:yYYYY, {uid}:mYYYYMM of the point's ts2 (every
--           type), then {uid}:tr, {uid}:tyYYYY, {uid}:tmYYYYMM (per type)
--           {uid}:once  the user's record of applied deliveries (once.lua)
-- ARGV[1] msgpack list of points, each
--           {mode, aid, atid, value, ts1, ts2, children, expires, thing, delivery}:
--           mode "d" diffadd (value = running total since ts1) or "i" increment;
--           aid, atid decimal strings; children = its year (in root), month (in year), day
--           and hour (in month), each counted in the slot child * 10 + thing, field
--           "<slot>" (every type) and "<slot>:<atid>" (per type); expires = Unix time each
--           counter hash expires at (psd/retention.py), 0 = never: set when a field is
--           added, and a hash already past it is not written; thing = the thing's number;
--           delivery = the key of the delivery the point came in, "" = none (applied
--           whatever came before)
-- ARGV[2] seconds the activity state lives after a new activity, 0 = forever
-- ARGV[3..5] now, window, cutoff of once.lua
-- Returns {status, delta, status, delta, ...} per point: "ok", "same" (nothing to add),
-- "stale" (ts2 older than a change already recorded for this activity: a late update; or
-- the update needs detail that compaction dropped, psd/maintenance.py) or "duplicate" (its
-- delivery was applied before).
local points = cmsgpack.unpack(ARGV[1])
local state_ttl = tonumber(ARGV[2])
local once = {ARGV[3], ARGV[4], ARGV[5]}
local now = ARGV[3] + 0
local HASH_OF_CHILD = {1, 2, 3, 3}
local PER_POINT = 9

-- #include once.lua

local function hour_of(ts) return math.floor(ts / 3600) end

local function hour_slot(summary, h)
  for i = 5, #summary, 2 do
    if summary[i] == h then return i end
  end
  return nil
end

-- the changes of the given hours, hour -> {ts, amount, atid, ...} (a single change is
-- read from the summary); nil if compaction dropped one of them
local function load_hours(acts, id, summary, hours)
  local chunks = {}
  if summary[4] == 1 then
    chunks[summary[5]] = {summary[1], summary[6], summary[3]}
    return chunks
  end
  local fields, wanted = {}, {}
  for _, h in ipairs(hours) do
    if chunks[h] == nil and hour_slot(summary, h) then
      chunks[h] = {}
      fields[#fields + 1] = id .. ':' .. h; wanted[#wanted + 1] = h
    end
  end
  if #fields > 0 then
    local vals = redis.call('HMGET', acts, unpack(fields))
    for i = 1, #fields do
      if not vals[i] then return nil end
      chunks[wanted[i]] = cmsgpack.unpack(vals[i])
    end
  end
  return chunks
end

-- what the activity recorded inside [ts1, ts2]: whole hours from their totals, the two
-- partial ones from their changes
local function window_sum(summary, chunks, ts1, ts2)
  local sum = 0
  for i = 5, #summary, 2 do
    local start = summary[i] * 3600
    if start >= ts1 and start + 3599 <= ts2 then
      sum = sum + summary[i + 1]
    elseif start + 3599 >= ts1 and start <= ts2 then
      local changes = chunks[summary[i]]
      for j = 1, #changes, 3 do
        if changes[j] >= ts1 and changes[j] <= ts2 then sum = sum + changes[j + 1] end
      end
    end
  end
  return sum
end

-- add the change to the summary and its hour; returns hour -> changes to store
local function record(summary, chunks, ts, delta, atid)
  local h = hour_of(ts)
  local stored = {}
  if summary[4] == 1 then
    if summary[1] == ts and summary[3] == atid then
      summary[6] = summary[6] + delta
      return stored
    end
    stored[summary[5]] = chunks[summary[5]]  -- a second change: the first gets its hour
  end
  local changes = chunks[h] or {}
  chunks[h] = changes
  local merged = false
  for j = 1, #changes, 3 do
    if changes[j] == ts and changes[j + 2] == atid then
      changes[j + 1] = changes[j + 1] + delta
      merged = true
      break
    end
  end
  if not merged then
    changes[#changes + 1] = ts; changes[#changes + 1] = delta; changes[#changes + 1] = atid
    summary[4] = summary[4] + 1
  end
  stored[h] = changes
  local slot = hour_slot(summary, h)
  if slot then
    summary[slot + 1] = summary[slot + 1] + delta
  else
    local at = #summary + 1
    while at > 5 and summary[at - 2] > h do at = at - 2 end
    table.insert(summary, at, delta)
    table.insert(summary, at, h)
  end
  if ts < summary[1] then summary[1] = ts end
  if ts > summary[2] then summary[2] = ts end
  if summary[3] ~= atid then summary[3] = '*' end
  return stored
end

-- a new field may be a new hash: give it its expiry; the root only ever extends it
local function expire_new(key, expire_at, is_root)
  redis.call('EXPIREAT', key, expire_at, 'NX')
  if is_root then redis.call('EXPIREAT', key, expire_at, 'GT') end
end

local function add_to_counters(k, p, delta)
  local atid, children, expires, thing = p[3], p[7], p[8], p[9]
  local fresh = {}  -- hash number -> a field of it was added
  for c = 1, 4 do
    local j = HASH_OF_CHILD[c]
    local expire_at = expires[j]
    if expire_at == 0 or expire_at > now then
      local slot = children[c] * 10 + thing
      local n = redis.call('HINCRBY', KEYS[k + 2 + j], slot, delta)
      local m = redis.call('HINCRBY', KEYS[k + 5 + j], slot .. ':' .. atid, delta)
      if expire_at > 0 then
        if n == delta then fresh[j] = true end
        if m == delta then fresh[j + 3] = true end
      end
    end
  end
  for j, _ in pairs(fresh) do
    local hash = (j - 1) % 3 + 1
    expire_new(KEYS[k + 2 + j], expires[hash], hash == 1)
  end
end

-- the activity's index member: "<thing>:<type>:<aid>:<first>"
local function member_of(thing, aid, summary)
  return thing .. ':' .. summary[3] .. ':' .. aid .. ':' .. summary[1]
end

local function save_state(acts, idx, thing, aid, summary, stored, old_member)
  local id = thing .. ':' .. aid
  local hset = {'HSET', acts, id, cmsgpack.pack(summary)}
  for h, changes in pairs(stored) do
    hset[#hset + 1] = id .. ':' .. h
    hset[#hset + 1] = cmsgpack.pack(changes)
  end
  redis.call(unpack(hset))
  local first, last = summary[1], summary[2]
  local member = member_of(thing, aid, summary)
  if old_member and old_member ~= member then redis.call('ZREM', idx, old_member) end
  redis.call('ZADD', idx, last, member)
  if last > first then
    local span = tonumber(redis.call('HGET', acts, '_span') or '0')
    if last - first > span then redis.call('HSET', acts, '_span', last - first) end
  end
  if old_member == nil and state_ttl > 0 then
    redis.call('EXPIRE', acts, state_ttl)
    redis.call('EXPIRE', idx, state_ttl)
  end
end

local function apply(k, p)
  local acts, idx = KEYS[k + 1], KEYS[k + 2]
  local mode, aid, atid, value, ts1, ts2 = p[1], p[2], p[3], p[4], p[5], p[6]
  local thing, delivery = p[9], p[10]
  if delivery ~= '' and applied_before(KEYS[k + 9], delivery, once) then
    return 'duplicate', 0
  end
  local id = thing .. ':' .. aid
  local packed = redis.call('HGET', acts, id)
  local delta, summary, chunks, old_member = value, nil, {}, nil
  if packed then
    summary = cmsgpack.unpack(packed)
    old_member = member_of(thing, aid, summary)
    if mode == 'd' and ts2 < summary[2] then return 'stale', 0 end
    local hours = {hour_of(ts2)}
    if mode == 'd' then hours[2] = hour_of(ts1) end
    chunks = load_hours(acts, id, summary, hours)
    if chunks == nil then return 'stale', 0 end
    if mode == 'd' then delta = value - window_sum(summary, chunks, ts1, ts2) end
  end
  if delta == 0 then return 'same', 0 end
  local stored = {}
  if summary then
    stored = record(summary, chunks, ts2, delta, atid)
  else
    summary = {ts2, ts2, atid, 1, hour_of(ts2), delta}
  end
  add_to_counters(k, p, delta)
  save_state(acts, idx, thing, aid, summary, stored, old_member)
  return 'ok', delta
end

local out = {}
for n = 1, #points do
  local status, delta = apply((n - 1) * PER_POINT, points[n])
  out[#out + 1] = status; out[#out + 1] = delta
end
return out
