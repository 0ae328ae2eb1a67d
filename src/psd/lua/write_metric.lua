#!lua flags=allow-cross-slot-keys
-- write_metric.lua: apply a batch of metric points, each atomically, in diffadd or increment
-- mode. One call per batch saves a round trip and the script start-up per point, and lets
-- the points of one activity or one hash share their reads and writes (see the end).
--
-- KEYS    7 per (user, day) of the points, each point saying where its seven start:
--           {uid}:acts  the user's activity state, a hash: per activity "<thing>:<aid>" its
--             summary, "_span" and "_v" (record.lua); its changes go to {uid}:cYYYYMMDD
--             (changes.lua), named from this key
--           {uid}:idx   zset "<thing>:<type>:<aid>:<first>" scored by the last change
--           counter hashes {uid}:r, {uid}:yYYYY, {uid}:mYYYYMM, {uid}:dYYYYMMDD of the
--           point's ts2, each holding a child's sum of every type and of each type (its
--           twin field); where its hour goes: hours.lua
--           {uid}:once  the user's record of applied deliveries (once.lua)
-- ARGV[1] msgpack {targets, deliveries, runs} (psd.scriptargs.MetricCallArg; psd.writes
--         builds it):
--         targets: what the points of an hour and a thing share, each {children, expires,
--           thing, thing_s, slots, packed} (psd.scriptargs.MetricTargetArg): children = its
--           year (in root), month (in year), day and hour (in month), each counted in the
--           slot child * 10 + thing, field "<slot>" (every type) and "<slot>:<atid>" (per
--           type); expires = Unix time each counter hash (root, year, month, day) expires at
--           (psd/retention.py), 0 = never: set when a field is added, and a hash already past
--           it is not written (the day's: its hour is not written); thing = the thing's
--           number, thing_s the same as a string; slots = the four slots' fields as strings;
--           packed = the month's packed field of its hour (hours.lua), every type's
--         deliveries: the keys of the deliveries the points came in
--         runs: flat, the call's points in runs of points that share their activity,
--           type, target, delivery and mode (psd.scriptargs.MetricRunArg): a run's seven
--           values {mode, aid, atid, target, delivery, k, n}, then its n points' values:
--           {value, ts2} each in mode "i" (increment), {value, ts1, ts2} in mode "d"
--           (diffadd: value = running total since ts1); aid, atid decimal strings; target =
--           its target's number in targets (from 1); delivery = its delivery's number in
--           deliveries (from 1), 0 = none (applied whatever came before); k = how many KEYS
--           come before its points' seven. A point is numbered by its place among every
--           run's points. Flat: a table a point costs its unpacking more than the rest of
--           it, and a run of a user's increments (a day's hour) is looked up once.
-- ARGV[2] seconds a user's activity state lives after their last change, 0 = forever
-- ARGV[3] seconds a day's changes are kept after the day ends (the minute retention), 0 =
--           forever (daystate.lua)
-- ARGV[4..6] now, window, cutoff of once.lua
-- ARGV[7] "1": all or nothing (one point refused, nothing of the call is written), else "0"
-- ARGV[8] (optional; on a cluster, before the keys' groups of keys.lua) msgpack {key, log,
--         ...}: the call applies these users' logs, whose points it carries (apply_logs)
-- Returns {status, delta, status, delta, ...} per point: "ok", "same" (nothing to add),
-- "stale" (ts2 older than a change already recorded for this activity: a late update; or
-- the update needs changes of a day the minute retention no longer keeps), "duplicate" (its
-- delivery was applied before), or refused, nothing of it written (limits.lua):
-- "past_counter" (a counter would leave ±2^62, an hour's ±2^53), "past_record" (its activity's record
-- would leave ±2^53) or "past_change" (a diffadd change past ±2^42; delta says which).
-- An all-or-nothing call that refuses a point writes nothing; its other statuses mean nothing.
-- A diffadd's window and its stale test count its activity's pending points too (the
-- increments pend.lua appended to the user's log, {uid}:p).
local WRITES = true
-- #include keys.lua
-- What one call writes, set by begin(): the script runs as a Redis Function (psd/scripts.py),
-- its functions made once per server, so nothing of a call may outlive it.
local KEYS, rows, targets, deliveries, npoints, state_ttl, changes_keep, once, now, whole
-- a run's values in rows (ARGV[1]): from its base h (the position before its first), these;
-- its points' follow, from h + HEAD, POINT_SIZE[mode] values each
local H_MODE, H_AID, H_ATID, H_TARGET, H_DELIVERY, H_K, H_N = 1, 2, 3, 4, 5, 6, 7
local HEAD = 7
local POINT_SIZE = {i = 2, d = 3}
local heads  -- the base of each run, in order
-- a target's parts
local T_CHILDREN, T_EXPIRES, T_THING, T_THING_S, T_SLOTS, T_PACKED = 1, 2, 3, 4, 5, 6

-- #include once.lua
-- #include limits.lua
-- #include hours.lua
-- #include record.lua
-- #include changes.lua
-- #include oldlayout.lua
-- #include daystate.lua
-- #include convert.lua

-- #include counters.lua
-- #include recording.lua
-- #include pending.lua

-- per call: the logs read, by key (their points, or false: none)
local pending_read

local function pending_key(acts) return string.sub(acts, 1, -5) .. 'p' end

-- the user's log as this call last read it (flat, five values a point), or nil
local function pending_of(k)
  local key = pending_key(KEYS[k + 1])
  local p = pending_read[key]
  if p == nil then
    p = pending_points(pending_log(key)) or false
    pending_read[key] = p
  end
  return p or nil
end

-- what activity act's pending points add inside [ts1, ts2], and its latest one (nil: none)
local function pending_window(k, act, ts1, ts2)
  local p, sum, last = pending_of(k), 0, nil
  if p == nil then return 0, nil end
  for i = 1, #p, PENDING_STRIDE do
    if p[i + PE_THING] == act.thing and p[i + PE_AID] == act.aid then
      local ts = p[i + PE_TS]
      if ts >= ts1 and ts <= ts2 then sum = sum + p[i + PE_VALUE] end
      if last == nil or ts > last then last = ts end
    end
  end
  return sum, last
end

-- a point of the run at h whose values start after v in rows: its status and delta
local function apply_point(h, v)
  local k, delivery = rows[h + H_K], rows[h + H_DELIVERY]
  if delivery ~= 0 and applied_before(KEYS[k + 7], deliveries[delivery], once) then
    return 'duplicate', 0
  end
  local t, aid, atid = targets[rows[h + H_TARGET]], rows[h + H_AID], rows[h + H_ATID]
  local act = activity(k, t, aid)
  local summary, value, ts2 = act.summary, rows[v + 1], nil
  local delta = value
  if rows[h + H_MODE] == 'd' then
    local ts1 = rows[v + 2]
    ts2 = rows[v + 3]
    local pending, last = pending_window(k, act, ts1, ts2)
    if summary and ts2 < summary[R_LAST] or last and ts2 < last then return 'stale', 0 end
    if summary then
      local sum, why = window_sum(act, ts1, ts2)
      if sum == nil then return why, 0 end
      pending = pending + sum
    end
    delta = value - pending
    if delta > MAX_CHANGE or delta < -MAX_CHANGE then return 'past_change', delta end
  else
    ts2 = rows[v + 2]
  end
  if delta == 0 then return 'same', 0 end
  if summary then
    if not (record_next(act, ts2, delta, atid) or record(act, ts2, delta, atid)) then
      return 'past_record', 0
    end
  else
    act.summary = {ts2, ts2, atid, 1, delta}  -- record.lua's order
  end
  act.changed = true
  add_to_counters(k, t, atid, delta)
  return 'ok', delta
end

local REFUSALS = {past_counter = true, past_record = true, past_change = true}
local out, refused

-- the result of point n
local function put(n, status, delta)
  out[2 * n - 1] = status; out[2 * n] = delta
  if REFUSALS[status] then refused = true end
end

-- record_next() for the rest of a run at once: its points from v on (point n), while each
-- is later than the last in its hour and what they move stays inside the record's limit
-- (so no total or day total on the way can pass it), appended where the last change went
-- (the run's point before) with their summary updated once. Answers where it stopped (the
-- next v and n) and what it added; a point it stops at goes the usual way.
local function append_run(act, atid, v, vlast, n)
  local c = last_change
  local s = c[2]
  if act ~= c[1] or atid ~= c[9] or act.summary ~= s then return v, n, 0 end
  local st, hour, ctx, at = c[4], c[5], c[6], c[3]
  if days[st.key] ~= st then return v, n, 0 end
  local base = c[7] * 86400 + c[8] * 3600  -- its hour's first second
  local max, recs = hour.max[ctx], hour.groups[ctx]
  local total, day_total = s[R_TOTAL], s[at + D_TOTAL]
  if total < 0 then total = -total end
  if day_total < 0 then day_total = -day_total end
  local room = RECORD_LIMIT - (total > day_total and total or day_total)
  local sum, count, size, last, moved = 0, 0, #recs, 0, 0
  while v <= vlast do
    local delta, ts = rows[v + 1], rows[v + 2]
    local sec = ts - base
    if delta == 0 or sec <= max or sec >= 3600 then break end
    moved = moved + (delta < 0 and -delta or delta)
    if moved >= room then break end
    recs[size + 1], recs[size + 2] = sec, delta
    size, max, sum, count, last = size + 2, sec, sum + delta, count + 1, ts
    out[2 * n - 1] = 'ok'; out[2 * n] = delta
    v, n = v + 2, n + 1
  end
  if count > 0 then
    hour.max[ctx] = max
    s[at + D_TOTAL] = s[at + D_TOTAL] + sum
    if s[at + D_CHANGES] >= 0 then s[at + D_CHANGES] = s[at + D_CHANGES] + count end
    s[R_CHANGES], s[R_TOTAL] = s[R_CHANGES] + count, s[R_TOTAL] + sum
    if last > s[R_LAST] then s[R_LAST] = last end
    if s[R_TYPE] ~= atid then s[R_TYPE] = '*' end
  end
  return v, n, sum
end

-- the run at h, whose first point is point n: an increments' run shares its delivery's
-- answer, its activity and one due to its counters; a diffadd's points go one by one
local function apply_run(h, n)
  local count = rows[h + H_N]
  if rows[h + H_MODE] == 'd' then
    for j = 0, count - 1 do put(n + j, apply_point(h, h + HEAD + 3 * j)) end
    return
  end
  local k, delivery = rows[h + H_K], rows[h + H_DELIVERY]
  if delivery ~= 0 and applied_before(KEYS[k + 7], deliveries[delivery], once) then
    for j = n, n + count - 1 do out[2 * j - 1] = 'duplicate'; out[2 * j] = 0 end
    return
  end
  local t, aid, atid = targets[rows[h + H_TARGET]], rows[h + H_AID], rows[h + H_ATID]
  local act = activity(k, t, aid)
  local sum, added = 0, false
  local v, vlast = h + HEAD, h + HEAD + 2 * (count - 1)
  while v <= vlast do
    local delta, ts = rows[v + 1], rows[v + 2]
    if delta == 0 then
      out[2 * n - 1] = 'same'; out[2 * n] = 0
    elseif act.summary == nil then
      act.summary = {ts, ts, atid, 1, delta}  -- record.lua's order
      act.changed, added, sum = true, true, sum + delta
      out[2 * n - 1] = 'ok'; out[2 * n] = delta
    elseif record_next(act, ts, delta, atid) or record(act, ts, delta, atid) then
      act.changed, added, sum = true, true, sum + delta
      out[2 * n - 1] = 'ok'; out[2 * n] = delta
      if v < vlast then  -- the points after it, as many as may be, at once
        local more
        v, n, more = append_run(act, atid, v + 2, vlast, n + 1)
        sum, v, n = sum + more, v - 2, n - 1
      end
    else
      out[2 * n - 1] = 'past_record'; out[2 * n] = 0
      refused = true
    end
    n, v = n + 1, v + 2
  end
  if added then add_to_counters(k, t, atid, sum) end
end

-- the call's state in memory, forgotten: the next point reads what is stored
local function forget()
  forget_states()
  owed, owed_keys, expiry, roots, dues, due_list = {}, {}, {}, {}, {}, {}
  owed_hours, owed_hours_keys = {}, {}
end

-- what is owed, paid: owed afresh
local function paid_up()
  owed, owed_keys, owed_hours, owed_hours_keys = {}, {}, {}, {}
end

-- every point applied and paid for, at least every PAY_EVERY points (an all-or-nothing
-- call may hold more; a run holds at most PAY_EVERY); false when one is refused in an
-- all-or-nothing call or a counter would cross ±2^62 (what was paid then stays paid)
local function apply_all()
  local n, unpaid = 1, 0
  for _, h in ipairs(heads) do
    local count = rows[h + H_N]
    if unpaid > 0 and unpaid + count > PAY_EVERY then
      if not pay_counters() then return false end
      paid_up()  -- the payment's tables are read no more
      unpaid = 0
    end
    apply_run(h, n)
    if refused and whole then return false end
    n, unpaid = n + count, unpaid + count
  end
  return pay_counters()
end

-- a point at a time, refusing those that would take a counter past ±2^62
local function apply_each()
  local n = 1
  for _, h in ipairs(heads) do
    local size = POINT_SIZE[rows[h + H_MODE]]
    for v = h + HEAD, h + HEAD + size * (rows[h + H_N] - 1), size do
      put(n, apply_point(h, v))
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
      n = n + 1
    end
  end
end

-- the limits of a call (limits.lua): one applying logs (hard) may use the headroom kept for
-- their points; every other keeps it
local function use_limits(hard)
  local room = hard and 0 or HEADROOM
  COUNTER_LIMIT, RECORD_LIMIT, HOUR_LIMIT = 2^62 - room, 2^53 - room, 2^53 - room
  COUNTER_DIGITS = hard and '4611686018427387904' or '4611404543450677248'
end

local claims  -- a call applying logs: {key, the log it applies, ...}

local function begin(keys, args)
  KEYS = call_keys(keys, args)
  local call = cmsgpack.unpack(args[1])
  targets, deliveries, rows = call[1], call[2], call[3]
  heads, npoints = {}, 0
  local h = 0
  while h < #rows do
    heads[#heads + 1] = h
    local count = rows[h + H_N]
    npoints = npoints + count
    h = h + HEAD + POINT_SIZE[rows[h + H_MODE]] * count
  end
  state_ttl, changes_keep = tonumber(args[2]), args[3] + 0
  once, now, whole = {args[4], args[5], args[6]}, args[4] + 0, args[7] == '1'
  claims = #args - (clustered and 1 or 0) >= 8 and cmsgpack.unpack(args[8]) or nil
  out, refused = {}, false
  pending_read = {}
  use_limits(false)
  once_begin(); hours_begin(); forget_days(); recording_begin(); counters_begin()
end

-- one call: every point applied, or as many as may be (see apply_all and apply_each)
local function write_points()
  if apply_all() then
    save_states()
  else
    unpay_all()
    if not (whole and refused) then  -- a counter would cross: nothing of the call is written
      forget()
      apply_each()
      if whole and refused then unpay_all() elseif whole then save_states() end
    end
    for n = #out / 2 + 1, npoints do out[2 * n - 1] = 'same'; out[2 * n] = 0 end
  end
  if #paid > 0 then move_open_days() end
  if refused then  -- a delivery none of whose points was applied is not remembered
    local kept, n = {}, 1
    for _, h in ipairs(heads) do
      local delivery, count = rows[h + H_DELIVERY], rows[h + H_N]
      for j = n, n + count - 1 do
        if delivery ~= 0 and not whole and not REFUSALS[out[2 * j - 1]] then
          kept[KEYS[rows[h + H_K] + 7] .. '\n' .. deliveries[delivery]] = true
        end
      end
      n = n + count
    end
    once_forget(kept)
  end
  return out
end

-- whether each log claimed still starts with what the call applies (none applied it since;
-- points appended after it stay). Any start of a log made of whole points is points not
-- applied yet, whatever happened to the log before: the bytes are the points.
local function claims_hold()
  for i = 1, #claims, 2 do
    local claim = claims[i + 1]
    local head = redis.pcall('GETRANGE', claims[i], 0, #claim - 1)
    if head ~= claim then return false end  -- changed, or a key of another type
  end
  return true
end

-- take a claimed log's points off it: the log deleted, or what was appended since kept
local function unclaim(key, claim)
  if redis.call('STRLEN', key) == #claim then
    redis.call('DEL', key)
  else
    redis.call('SET', key, redis.call('GETRANGE', key, #claim, -1))
  end
end

-- a call applying logs (psd/pending.py; whole, its points increments of no delivery): none,
-- {"moved"}, if one no longer starts with what it claims; else they are applied and taken
-- off. Within the headroom first; logs that would take a field into it are applied with it
-- when each is whole (else {"moved"}: read again), and their users' increments are never
-- kept again (a hash at their log's key, pending.lua)
local function apply_logs(keys, args)
  if not claims_hold() then return {'moved'} end
  local result, near = write_points(), refused
  if near then  -- nothing written (whole): applied with the whole limits, the log whole
    for i = 1, #claims, 2 do
      -- points appended since it was read would stay in a log its user could go on
      -- appending to: read it again, whole, and apply it all
      if redis.call('STRLEN', claims[i]) ~= #claims[i + 1] then return {'moved'} end
    end
    begin(keys, args)
    use_limits(true)
    result = write_points()
    if refused then return result end  -- past the limits themselves: nothing applied, kept
  end
  for i = 1, #claims, 2 do
    unclaim(claims[i], claims[i + 1])
    if near then redis.call('HSET', claims[i], 'near', '1') end
  end
  return result
end

local function write_call(keys, args)
  begin(keys, args)
  if claims then return apply_logs(keys, args) end
  return write_points()
end

-- the entry point: psd/scripts.py makes it a Redis Function, or calls it with KEYS and ARGV
-- #entry write_call
