#!lua flags=allow-cross-slot-keys
-- maintain.lua: one step of the beat tasks (psd/maintenance.py) over a batch of keys, each
-- job atomic against concurrent writes (which is why this is a script: a field read as zero
-- in Python could be written again before it is deleted).
--
-- KEYS    the keys of the jobs, in order: one per counter hash, two (acts, idx) per state
-- ARGV[1] msgpack list of jobs (psd.scriptargs.HashJob, RootJob, StateJob; psd.maintenance
--         builds them):
--           {"h", expire_at, first_kept_hour, pack}  a counter hash: its expiry (0 = never,
--             -1 = leave it), and hour fields (children >= 100 of a month hash, and its
--             packed half-days: hours.lua) below child first_kept_hour are dropped (0 =
--             none); pack 1: a user's month hash's plain hour fields (psd's layout 1,
--             psd/layout.py) are packed into its half-days
--           {"r", retention}  a root hash: expires `retention` seconds after the end of the
--             newest year in it (0 = never, -1 = leave it)
--           {"t", pack}  a twin hash of keyspace layouts before 3 ({uid}:tr, {uid}:tyYYYY,
--             {uid}:tmYYYYMM: per-type fields) and, its second key, the hash whose per-type
--             fields it holds ({uid}:r, ...): its fields are moved there (the month's open
--             day closed first), added to any that writes have put there since; pack as for
--             "h", of the hash moved to
--           {"s", record_cut, changes_keep}  an activity state and its index: a user's
--             records an earlier psd wrote are brought to layout 3 (convert.lua; a day's
--             changes kept changes_keep seconds after it ends, 0 = forever); activities
--             whose last change is <= record_cut (-1 = none) are removed; a state without
--             expiry gets one, record_cut seconds after its newest change
-- ARGV[2] now (Unix s)
-- ARGV[3] "1": also drop zero-valued counter fields (compaction), "0": not
-- Returns {fields dropped, expiries set, keys deleted, activities converted to layout 3,
-- activities removed, plain hours packed, fields left where they are (a half-day's sum of
-- plain hours past ±2^53, a twin's field whose sum would pass its limit), twins moved,
-- users' roots restored}
local WRITES = true
-- #include keys.lua
local KEYS = call_keys(KEYS, ARGV)
local jobs = cmsgpack.unpack(ARGV[1])
local now = ARGV[2] + 0
local drop_zeros = ARGV[3] == '1'
local HOUR_BASE = 100
local dropped, expiries, deleted, converted, removed = 0, 0, 0, 0, 0
local packed, left, moved, restored = 0, 0, 0, 0

local changes_keep = 0  -- the minute retention of the state job at hand (daystate.lua)
-- #include limits.lua
-- #include record.lua
-- #include changes.lua
-- #include oldlayout.lua
-- #include daystate.lua
-- #include convert.lua
-- #include hours.lua

-- Unix time of the first second of year y + 1 (H. Hinnant's days_from_civil)
local function year_end(y)
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + 306
  return (days - 719468) * 86400
end

-- the child a counter field counts; for a month's packed half-day of hours (hours.lua), its
-- first hour's; nil for its open day's field
local function child_of(field)
  local packed, slot = field:match('^(h?)(%d+)')
  if slot == nil then return nil end
  if packed == 'h' then return HOUR_BASE + 12 * math.floor(slot / 10) end
  return math.floor(slot / 10)
end

-- make the key's expiry `expire_at` (0 = none); a past one deletes the key
local function set_expiry(key, expire_at)
  local current = redis.call('EXPIRETIME', key)
  if expire_at == 0 then
    if current > 0 then redis.call('PERSIST', key); expiries = expiries + 1 end
  elseif current ~= expire_at then
    redis.call('EXPIREAT', key, expire_at); expiries = expiries + 1
    if expire_at <= now then deleted = deleted + 1 end
  end
end

-- HDEL in slices: unpack() of more than ~8,000 values fails
local function hdel_all(key, fields)
  local gone = 0
  for i = 1, #fields, 1000 do
    gone = gone + redis.call('HDEL', key, unpack(fields, i, math.min(i + 999, #fields)))
  end
  return gone
end

-- drop zero fields (compaction) and hours below `first_kept` (retention); true if emptied.
-- A month's "o" of no open day ("0", or a negative latest day: hours.lua; first:
-- counters.lua's order_month) goes only with the rest: a read finds it at once, where its
-- absence costs a scan of every field
local function prune(key, first_kept)
  if not drop_zeros and first_kept == 0 then return false end
  local flat = redis.call('HGETALL', key)
  local gone, closed = {}, false
  for i = 1, #flat, 2 do
    local f, child = flat[i], child_of(flat[i]) or 0
    if f == 'o' and (flat[i + 1] == '0' or string.byte(flat[i + 1], 1) == 45) then  -- '-'
      closed = true
    elseif (drop_zeros and flat[i + 1] == '0') or (child >= HOUR_BASE and child < first_kept) then
      gone[#gone + 1] = f
    end
  end
  dropped = dropped + #gone
  if closed and #gone > 0 and (#gone + 1) * 2 == #flat then gone[#gone + 1] = 'o' end
  hdel_all(key, gone)
  if #gone > 0 and #gone * 2 == #flat then deleted = deleted + 1; return true end
  return false
end

-- pack a month hash's plain hour fields into its half-days, each sum checked to stay within
-- ±HOUR_LIMIT (a half-day that would pass it keeps its plain fields: a read adds them)
local function pack_plain_hours(key)
  local flat, packs, fields = redis.call('HGETALL', key), {}, {}
  for i = 1, #flat, 2 do
    local f = flat[i]
    local slot = f:match('^(%d+)')
    local child = slot and math.floor(slot / 10) or 0
    if child >= HOUR_BASE then
      local thing, hour = slot % 10, (child - HOUR_BASE) % 24
      local name = packed_name((child - HOUR_BASE - hour) / 24 + 1, hour, thing, f:sub(#slot + 1))
      local adds = packs[name] or {}
      packs[name] = adds
      adds[hour_number(hour)] = (adds[hour_number(hour)] or 0) + flat[i + 1]
      fields[name] = fields[name] or {}
      table.insert(fields[name], f)
    end
  end
  for name, adds in pairs(packs) do
    local hours = packed_sum(key, name, adds)
    if hours then
      put_packed(key, name, hours)
      packed = packed + hdel_all(key, fields[name])
    else
      left = left + #fields[name]
    end
  end
end

-- a user's year or month hash whose root is gone gets it back, at 0 (the root's next job
-- gives it its expiry): reads take a user with neither root nor activity state for one who
-- keeps nothing (root below says why). An earlier psd lost it so: its compaction deleted a
-- root whose fields had all gone to 0, and a write whose points netted to 0 made none; the
-- root's sums were then 0, as a root read without the hash answered. A write to such a user
-- whose state had lapsed marked their records whole ("0:c": record.lua), which they are not
-- beside the counters it did not see: the mark goes too, and reads ask the counters again
local function root_back(key)
  local user, year = string.match(key, '^({%d+}:)[ym](%d%d%d%d)')
  if user and redis.call('EXISTS', user .. 'r') == 0 then
    redis.call('HSET', user .. 'r', tostring(year * 10 + 1), '0')
    local mark = redis.call('HGET', user .. 'acts', WHOLE.field)
    if mark then  -- its drops still marked, as records that are not whole mark them
      redis.call('HDEL', user .. 'acts', WHOLE.field)
      redis.call('HSET', user .. 'acts', WHOLE.drops, mark)
    end
    restored = restored + 1
  end
end

local function counter(key, expire_at, first_kept, pack)
  if redis.call('EXISTS', key) == 0 then return end
  if prune(key, first_kept) then return end
  if drop_zeros then root_back(key) end  -- the compaction's, as it lost them
  if pack == 1 then pack_plain_hours(key) end
  if expire_at >= 0 then set_expiry(key, expire_at) end
end

-- add a twin's field to its hash: false (nothing written) when the sum would pass the
-- field's limit (±2^62, an hour's ±2^53: limits.lua, hours.lua)
local function move_field(main, field, value)
  if string.byte(field, 1) == 104 then  -- 'h': a packed half-day
    local adds, raw = {}, unpack_hours(value)
    for h = 1, 12 do adds[h] = raw[h] end  -- a fixed one's 13th is struct's next position
    local hours = packed_sum(main, field, adds)
    if hours == nil then return false end
    put_packed(main, field, hours)
    return true
  end
  local child = child_of(field) or 0
  local limit = child >= HOUR_BASE and HOUR_LIMIT or COUNTER_LIMIT
  local n = redis.call('HINCRBY', main, field, value)
  if n >= limit or n <= -limit then
    redis.call('HINCRBY', main, field, -value)
    return false
  end
  return true
end

-- move a twin hash's fields into `main` (see the header's "t" job): renamed when `main` has
-- none yet (its expiry goes with it); a field that cannot be added stays in the twin
local function merge_twin(twin, main, pack)
  local open = redis.call('HGET', twin, 'o')
  if open then
    if open + 0 > 0 then close_day(twin, open + 0) end
    redis.call('HDEL', twin, 'o')
  end
  if redis.call('EXISTS', twin) == 0 then return end
  if redis.call('EXISTS', main) == 0 then
    redis.call('RENAME', twin, main)
    moved = moved + 1
  else
    local flat, done = redis.call('HGETALL', twin), {}
    for i = 1, #flat, 2 do
      if move_field(main, flat[i], flat[i + 1]) then done[#done + 1] = flat[i] end
    end
    hdel_all(twin, done)
    if #done * 2 == #flat then moved = moved + 1 else left = left + #flat / 2 - #done end
  end
  if pack == 1 then pack_plain_hours(main) end
end

-- a root's zero fields stay (the compaction drops none): with the activity state, the root
-- says whether a user keeps anything at all (activities.lua's nothing_kept, recording.lua's
-- mark of whole records take a user with neither for one with nothing but a log), which
-- holds only while it outlives every other counter hash; a user whose years net to 0 would
-- lose it to the compaction while their months still hold days
-- While its user's log holds points ({uid}:p: pend.lua), a root's expiry is only raised: a
-- point of a newer year waiting there raised it already, and its year is not in the root yet.
local function root(key, retention)
  if redis.call('EXISTS', key) == 0 or retention < 0 then return end
  if retention == 0 then set_expiry(key, 0); return end
  local newest = 0
  for _, field in ipairs(redis.call('HKEYS', key)) do
    newest = math.max(newest, child_of(field) or 0)
  end
  local expire_at = year_end(newest) + retention
  if redis.call('EXISTS', string.sub(key, 1, -2) .. 'p') == 1 then
    if redis.call('EXPIRETIME', key) >= expire_at then return end
  end
  set_expiry(key, expire_at)
end

-- a user's mark of the activities dropped from their records (record.lua's "0:c"): raised
-- to the last change of the newest dropped (gone: nil if none); records an earlier psd
-- said were whole ("_c") are marked at the cut, no earlier than any of its drops, while
-- they list an activity (listed: an index without one would be kept by its mark alone)
local function mark_dropped(acts, idx, gone, record_cut, listed)
  local marks = redis.call('HMGET', acts, WHOLE.field, WHOLE.legacy, WHOLE.drops)
  if marks[1] then
    if gone and gone > marks[1] + 0 then redis.call('HSET', acts, WHOLE.field, gone) end
  elseif marks[2] == '1' and listed then
    redis.call('HSET', acts, WHOLE.field, record_cut)
    redis.call('HDEL', acts, WHOLE.legacy)
    redis.call('ZADD', idx, WHOLE.score, WHOLE.member)
  elseif gone and gone > (marks[3] or -1) + 0 and redis.call('EXISTS', acts) == 1 then
    redis.call('HSET', acts, WHOLE.drops, gone)  -- records not whole: "_d"
  end
end

-- an activity state and its index: a user whose records an earlier psd wrote is brought to
-- layout 3 first (convert.lua); activities whose last change is a day or more before
-- record_cut go (their changes in {uid}:cYYYYMMDD have expired), marked (mark_dropped); a
-- state without expiry gets one, record_cut seconds after its newest change; not while the
-- user's increments wait
local function state(acts, idx, record_cut, keep)
  local layout = redis.call('HGET', acts, LAYOUT_FIELD)
  if layout ~= LAYOUT and redis.call('EXISTS', acts) == 1 then
    changes_keep = keep
    converted = converted + convert_user(acts)
  end
  if record_cut < 0 then return end
  -- increments waiting in the user's log (pending.lua) may be of an activity that looks
  -- old: the state waits until they are applied (the compaction applies the logs it finds)
  local waiting = redis.pcall('STRLEN', string.sub(acts, 1, -5) .. 'p')
  if type(waiting) == 'number' and waiting > 0 then return end
  -- the mark's member (score -1) is no activity; a record goes a day after its cut, once
  -- the changes its days keep are gone (the minute retention after their day ends, which
  -- the lifetime passes by an hour): a later change of its activity in one of those days
  -- would else find them beside its new record's, and answer its updates stale
  local old = redis.call('ZRANGEBYSCORE', idx, '(' .. WHOLE.score, record_cut - 86400,
                         'WITHSCORES')
  for i = 1, #old, 2 do
    local member = old[i]
    local thing, aid = member:match('^(%d+):[^:]+:([^:]+):')
    redis.call('HDEL', acts, thing .. ':' .. aid)
    redis.call('ZREM', idx, member)
    removed = removed + 1
  end
  local newest = redis.call('ZREVRANGEBYSCORE', idx, '+inf', '(' .. WHOLE.score,
                            'WITHSCORES', 'LIMIT', 0, 1)
  mark_dropped(acts, idx, old[#old] and old[#old] + 0, record_cut, newest[2] ~= nil)
  for _, key in ipairs({acts, idx}) do
    if newest[2] and redis.call('EXPIRETIME', key) == -1 then
      set_expiry(key, newest[2] + now - record_cut)
    end
  end
end

local k = 1
for _, job in ipairs(jobs) do
  local what = job[1]
  if what == 'h' then
    counter(KEYS[k], job[2], job[3], job[4]); k = k + 1
  elseif what == 'r' then
    root(KEYS[k], job[2]); k = k + 1
  elseif what == 't' then
    merge_twin(KEYS[k], KEYS[k + 1], job[2]); k = k + 2
  else
    state(KEYS[k], KEYS[k + 1], job[2], job[3]); k = k + 2
  end
end
return {dropped, expiries, deleted, converted, removed, packed, left, moved, restored}
