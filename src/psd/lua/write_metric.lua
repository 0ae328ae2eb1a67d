#!lua flags=allow-cross-slot-keys
-- write_metric.lua: apply a batch of metric points, each atomically, in diffadd or increment
-- mode. One call per batch saves a round trip and the script start-up per point, and lets
-- the points of one activity or one hash share their reads and writes (see the end).
--
-- KEYS    11 per (user, day) of the points, each point saying where its eleven start:
--           {uid}:acts  the user's activity state, a hash: per activity "<thing>:<aid>" its
--             record (summary and changes by hour, laid out in record.lua), and "_span", the
--             longest first-to-last distance of any activity
--           {uid}:idx   zset "<thing>:<type>:<aid>:<first>" scored by the last change
--           counter hashes {uid}:r, {uid}:yYYYY, {uid}:mYYYYMM, {uid}:dYYYYMMDD of the
--           point's ts2 (every type), then {uid}:tr, {uid}:tyYYYY, {uid}:tmYYYYMM,
--           {uid}:tdYYYYMMDD (per type); where its hour goes: hours.lua
--           {uid}:once  the user's record of applied deliveries (once.lua)
-- ARGV[1] msgpack list of points (psd.scriptargs.MetricPointArg; psd.writes builds it), each
--           {mode, aid, atid, value, ts1, ts2, children, expires, thing, delivery, k}:
--           mode "d" diffadd (value = running total since ts1) or "i" increment;
--           aid, atid decimal strings; children = its year (in root), month (in year), day
--           and hour (in month), each counted in the slot child * 10 + thing, field
--           "<slot>" (every type) and "<slot>:<atid>" (per type); expires = Unix time each
--           counter hash (root, year, month, day) expires at (psd/retention.py), 0 = never:
--           set when a field is added, and a hash already past it is not written (the
--           day's: its hour is not written); thing = the thing's number; delivery = the key
--           of the delivery the point came in, "" = none (applied whatever came before);
--           k = how many KEYS come before the point's eleven
-- ARGV[2] seconds a user's activity state lives after their last change, 0 = forever
-- ARGV[3..5] now, window, cutoff of once.lua
-- ARGV[6] "1": all or nothing (one point refused, nothing of the call is written), else "0"
-- Returns {status, delta, status, delta, ...} per point: "ok", "same" (nothing to add),
-- "stale" (ts2 older than a change already recorded for this activity: a late update; or
-- the update needs detail that compaction dropped, psd/maintenance.py), "duplicate" (its
-- delivery was applied before), or refused, nothing of it written (limits.lua):
-- "past_counter" (a counter would leave ±2^62, an hour's ±2^53), "past_record" (its activity's record
-- would leave ±2^53) or "past_change" (a diffadd change past ±2^42; delta says which).
-- An all-or-nothing call that refuses a point writes nothing; its other statuses mean nothing.
local WRITES = true
-- #include keys.lua
local points = cmsgpack.unpack(ARGV[1])
local state_ttl = tonumber(ARGV[2])
local once = {ARGV[3], ARGV[4], ARGV[5]}
local now = ARGV[3] + 0
local whole = ARGV[6] == '1'
local HASH_OF_CHILD = {1, 2, 3, 3}

-- #include once.lua
-- #include limits.lua
-- #include hours.lua
-- #include record.lua

local function hour_slot(summary, h)
  for i = R_HOUR, #summary, 2 do
    if summary[i] == h then return i end
  end
  return nil
end

-- make sure act.chunks holds the changes of the given hours, hour -> {ts, amount, atid, ...}
-- (a single change is read from the summary); false if compaction dropped one of them
local function load_hours(act, hours)
  local summary, chunks = act.summary, act.chunks
  if summary[R_CHANGES] == 1 then
    chunks[summary[R_HOUR]] = {summary[R_FIRST], summary[R_TOTAL], summary[R_TYPE]}
    return true
  end
  local fields, wanted = {}, {}
  for _, h in ipairs(hours) do
    if chunks[h] == nil and hour_slot(summary, h) then
      chunks[h] = {}
      fields[#fields + 1] = act.id .. ':' .. h; wanted[#wanted + 1] = h
    end
  end
  if #fields > 0 then
    local vals = redis.call('HMGET', act.acts, unpack(fields))
    for i = 1, #fields do
      if not vals[i] then  -- dropped: no later point of this call may take it for empty
        for _, h in ipairs(wanted) do chunks[h] = nil end
        return false
      end
      chunks[wanted[i]] = cmsgpack.unpack(vals[i])
    end
  end
  return true
end

-- what the activity recorded inside [ts1, ts2]: whole hours from their totals, the two
-- partial ones from their changes; nil if a partial sum leaves ±2^53 (it could be inexact)
local function window_sum(summary, chunks, ts1, ts2)
  local sum = 0
  for i = R_HOUR, #summary, 2 do
    local start = summary[i] * 3600
    if start >= ts1 and start + 3599 <= ts2 then
      sum = sum + summary[i + 1]
      if sum >= RECORD_LIMIT or sum <= -RECORD_LIMIT then return nil end
    elseif start + 3599 >= ts1 and start <= ts2 then
      local changes = chunks[summary[i]]
      for j = 1, #changes, C_SIZE do
        if changes[j] >= ts1 and changes[j] <= ts2 then
          sum = sum + changes[j + C_AMOUNT]
          if sum >= RECORD_LIMIT or sum <= -RECORD_LIMIT then return nil end
        end
      end
    end
  end
  return sum
end

-- add the change to the summary and its hour; returns hour -> changes to store, or nil
-- (nothing changed) if the change or its hour's total would leave ±2^53
local function record(summary, chunks, ts, delta, atid)
  local h = hour_of(ts)
  local stored = {}
  if summary[R_CHANGES] == 1 then
    if summary[R_FIRST] == ts and summary[R_TYPE] == atid then
      if not exact(summary[R_TOTAL] + delta) then return nil end
      summary[R_TOTAL] = summary[R_TOTAL] + delta
      return stored
    end
    stored[summary[R_HOUR]] = chunks[summary[R_HOUR]]  -- a second change: the first gets its hour
  end
  local changes, slot, at = chunks[h] or {}, hour_slot(summary, h), nil
  for j = 1, #changes, C_SIZE do
    if changes[j] == ts and changes[j + C_ATID] == atid then at = j + C_AMOUNT; break end
  end
  if (at and not exact(changes[at] + delta)) or (slot and not exact(summary[slot + 1] + delta))
  then return nil end
  chunks[h] = changes
  if at then
    changes[at] = changes[at] + delta
  else
    changes[#changes + 1] = ts; changes[#changes + 1] = delta; changes[#changes + 1] = atid
    summary[R_CHANGES] = summary[R_CHANGES] + 1
  end
  stored[h] = changes
  if slot then
    summary[slot + 1] = summary[slot + 1] + delta
  else
    local at = #summary + 1
    while at > R_HOUR and summary[at - 2] > h do at = at - 2 end
    table.insert(summary, at, delta)
    table.insert(summary, at, h)
  end
  if ts < summary[R_FIRST] then summary[R_FIRST] = ts end
  if ts > summary[R_LAST] then summary[R_LAST] = ts end
  if summary[R_TYPE] ~= atid then summary[R_TYPE] = '*' end
  return stored
end

-- What this call changes is gathered first and written once at the end: a batch often
-- holds many points of one activity (a day of minutes) or of one hash, and each would
-- otherwise read, unpack, pack and write the same state, and add to the same fields, again.
-- The call is atomic either way.
local activities, touched = {}, {}  -- "<acts>\n<thing>:<aid>" -> its state; in order
-- #include counters.lua

-- the activity's index member: "<thing>:<type>:<aid>:<first>"
local function member_of(act)
  return act.thing .. ':' .. act.summary[R_TYPE] .. ':' .. act.aid .. ':' .. act.summary[R_FIRST]
end

-- the activity's state as this call found it (loaded once)
local function activity(k, thing, aid)
  local acts, id = KEYS[k + 1], thing .. ':' .. aid
  local at = acts .. '\n' .. id
  local act = activities[at]
  if act == nil then
    local packed = redis.call('HGET', acts, id)
    act = {acts = acts, idx = KEYS[k + 2], id = id, thing = thing, aid = aid, chunks = {},
           dirty = {}, changed = false}
    if packed then
      act.summary = cmsgpack.unpack(packed)
      act.old_member = member_of(act)
    end
    activities[at] = act; touched[#touched + 1] = at
  end
  return act
end

local function save_states()
  local spans, changed = {}, {}  -- acts key -> longest span written; -> its idx
  for _, at in ipairs(touched) do
    local act = activities[at]
    if act.changed then
      local hset = {'HSET', act.acts, act.id, cmsgpack.pack(act.summary)}
      for h, _ in pairs(act.dirty) do
        hset[#hset + 1] = act.id .. ':' .. h
        hset[#hset + 1] = cmsgpack.pack(act.chunks[h])
      end
      redis.call(unpack(hset))
      local member = member_of(act)
      if act.old_member and act.old_member ~= member then
        redis.call('ZREM', act.idx, act.old_member)
      end
      redis.call('ZADD', act.idx, act.summary[R_LAST], member)
      local span = act.summary[R_LAST] - act.summary[R_FIRST]
      if span > (spans[act.acts] or 0) then spans[act.acts] = span end
      changed[act.acts] = act.idx
    end
  end
  for acts, span in pairs(spans) do
    if span > (redis.call('HGET', acts, '_span') or 0) + 0 then
      redis.call('HSET', acts, '_span', span)
    end
  end
  if state_ttl > 0 then  -- a user's state lives state_ttl past their last change
    for acts, idx in pairs(changed) do
      redis.call('EXPIRE', acts, state_ttl)
      redis.call('EXPIRE', idx, state_ttl)
    end
  end
end

local function apply(k, p)
  local mode, aid, atid, value, ts1, ts2 = p[1], p[2], p[3], p[4], p[5], p[6]
  local thing, delivery = p[9], p[10]
  if delivery ~= '' and applied_before(KEYS[k + 11], delivery, once) then
    return 'duplicate', 0
  end
  local act = activity(k, thing, aid)
  local summary, delta = act.summary, value
  if summary then
    if mode == 'd' and ts2 < summary[R_LAST] then return 'stale', 0 end
    local hours = {hour_of(ts2)}
    if mode == 'd' and ts1 % 3600 ~= 0 then hours[2] = hour_of(ts1) end  -- else read whole
    if not load_hours(act, hours) then return 'stale', 0 end
    if mode == 'd' then
      local sum = window_sum(summary, act.chunks, ts1, ts2)
      if sum == nil then return 'past_record', 0 end
      delta = value - sum
      if delta > MAX_CHANGE or delta < -MAX_CHANGE then return 'past_change', delta end
    end
  end
  if delta == 0 then return 'same', 0 end
  if summary then
    local stored = record(summary, act.chunks, ts2, delta, atid)
    if stored == nil then return 'past_record', 0 end
    for h, _ in pairs(stored) do act.dirty[h] = true end
  else
    act.summary = {ts2, ts2, atid, 1, hour_of(ts2), delta}  -- record.lua's order
  end
  act.changed = true
  add_to_counters(k, p, delta)
  return 'ok', delta
end

local REFUSALS = {past_counter = true, past_record = true, past_change = true}
local out, refused = {}, false
local function run(n)
  local status, delta = apply(points[n][11], points[n])
  out[2 * n - 1] = status; out[2 * n] = delta
  if REFUSALS[status] then refused = true end
end

-- the call's state in memory, forgotten: the next point reads what is stored
local function forget()
  activities, touched, owed, owed_keys, expiry, roots = {}, {}, {}, {}, {}, {}
  owed_hours, owed_hours_keys = {}, {}
end

-- what is owed, paid: owed afresh
local function paid_up()
  owed, owed_keys, owed_hours, owed_hours_keys = {}, {}, {}, {}
end

-- every point applied and paid for, at least every PAY_EVERY points (an all-or-nothing
-- call may hold more); false when one is refused in an all-or-nothing call or a counter
-- would cross ±2^62 (what was paid then stays paid)
local function apply_all()
  for n = 1, #points do
    run(n)
    if refused and whole then return false end
    if n % PAY_EVERY == 0 or n == #points then
      if not pay_counters() then return false end
      paid_up()
    end
  end
  return true
end

-- a point at a time, refusing those that would take a counter past ±2^62
local function apply_each()
  for n = 1, #points do
    run(n)
    if refused and whole then return end
    if not pay_counters() then
      out[2 * n - 1] = 'past_counter'; out[2 * n] = 0; refused = true
      if whole then return end
      forget()
    elseif whole then
      paid_up()
    else
      save_states(); forget()
    end
  end
end

if apply_all() then
  save_states()
else
  unpay_all()
  if not (whole and refused) then  -- a counter would cross: nothing of the call is written
    forget()
    apply_each()
    if whole and refused then unpay_all() elseif whole then save_states() end
  end
  for n = #out / 2 + 1, #points do out[2 * n - 1] = 'same'; out[2 * n] = 0 end
end
if #paid > 0 then move_open_days() end
if refused then  -- a delivery none of whose points was applied is not remembered
  local kept = {}
  for n = 1, #points do
    local delivery = points[n][10]
    if delivery ~= '' and not whole and not REFUSALS[out[2 * n - 1]] then
      kept[KEYS[points[n][11] + 11] .. '\n' .. delivery] = true
    end
  end
  once_forget(kept)
end
return out
