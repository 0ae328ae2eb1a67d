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
--           counter hashes {uid}:r, {uid}:yYYYY, {uid}:mYYYYMM of the point's ts2, each
--           holding a child's sum of every type and of each type (its twin field); where its
--           hour goes: hours.lua; then {uid}:dYYYYMMDD, where an earlier psd kept an open
--           day's hours (hours.lua names the one it closes)
--           {uid}:once  the user's record of applied deliveries (once.lua)
-- ARGV[1] msgpack {targets, deliveries, runs} (psd.scriptargs.MetricCallArg; psd.writes
--         builds it):
--         targets: what the points of an hour and a thing share, each a flat {day, hour,
--           four expires, thing, thing_s, three slots, packed} (psd.scriptargs.
--           MetricTargetArg): day and hour = its children in its month; its year (in root),
--           month (in year) and day (in month) are each counted in the slot child * 10 +
--           thing, field "<slot>" (every type) and "<slot>:<atid>" (per type), its hour in
--           its packed field; expires = Unix time each counter hash (root, year, month, day)
--           expires at (psd/retention.py), 0 = never: set when a field is added, and a hash
--           already past it is not written (the day's: its hour is not written); thing =
--           the thing's number, thing_s the same as a string; slots = the three slots'
--           fields as strings; packed = the month's packed field of its hour (hours.lua),
--           every type's
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
-- Returns {statuses, delta, delta, ...}: statuses a string of a letter a point (apply.lua's
-- CODES), in order: "o" ok (an increment: it added its value), "d" ok (a diffadd: it added
-- the next delta given), "s" same (nothing to add), "t" stale (ts2 older than a change
-- already recorded for this activity: a late update; or the update needs changes of a day
-- the minute retention no longer keeps), "u" duplicate (its delivery was applied before), or
-- refused, nothing of it written (limits.lua): "c" past_counter (a counter would leave
-- ±2^62), "h" past_hour (an hour's sum would leave ±2^53), "r" past_record (its activity's
-- record would leave ±2^53) or "x" past_change (a diffadd change past ±2^42; the next delta
-- given says which). A letter a point and a delta only where its value does not tell it: a list of two values a point
-- cost the server and the client more than the rest of a bulk point's answer.
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
-- a target's parts (psd.scriptargs.MetricTargetArg): its day and hour children, then the
-- expiries of its four hashes (root, year, month, day) from T_EXPIRES, the thing, then the
-- three slots' fields from T_SLOTS, then its packed field
local T_DAY, T_HOUR, T_EXPIRES, T_THING, T_THING_S, T_SLOTS, T_PACKED = 1, 2, 3, 7, 8, 9, 12

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

-- #include apply.lua

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
    local diffadd = rows[h + H_MODE] == 'd'
    local size = POINT_SIZE[rows[h + H_MODE]]
    for v = h + HEAD, h + HEAD + size * (rows[h + H_N] - 1), size do
      put(n, diffadd, apply_point(h, v))
      if refused and whole then return end
      local ok, past = pay_counters()  -- past: the refusal's letter where it is not "c"
      if not ok then
        out[n] = past or 'c'; refused = true
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
  out, given, refused = {}, {}, false
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
    for n = #out + 1, npoints do out[n] = 's' end
  end
  if #paid > 0 then move_open_days() end
  if refused then  -- a delivery none of whose points was applied is not remembered
    local kept, n = {}, 1
    for _, h in ipairs(heads) do
      local delivery, count = rows[h + H_DELIVERY], rows[h + H_N]
      for j = n, n + count - 1 do
        if delivery ~= 0 and not whole and not REFUSED[out[j]] then
          kept[KEYS[rows[h + H_K] + 7] .. '\n' .. deliveries[delivery]] = true
        end
      end
      n = n + count
    end
    once_forget(kept)
    -- the refused points of the parts this call applied in part (kept: record .. '\n' ..
    -- part), remembered beside each record of deliveries: a hash "<uid>:refused", per part
    -- "<ordinal>,<letter>,<delta>,<value>,<ts2>,<aid>;" a point (its ordinal among the
    -- part's points in the call), kept the idempotency window. Its redelivery is a
    -- duplicate, and the store then answers those points refused again, so that their dead
    -- letters are not lost with a worker that died before it kept them
    -- (psd/levels.py refused_again)
    if not whole then
      local seen, memo, n = {}, {}, 1
      for _, h in ipairs(heads) do
        local delivery, count = rows[h + H_DELIVERY], rows[h + H_N]
        local size = POINT_SIZE[rows[h + H_MODE]]
        local part = delivery ~= 0 and KEYS[rows[h + H_K] + 7] .. '\n' .. deliveries[delivery]
        for j = 0, count - 1 do
          if part then
            local ord = (seen[part] or 0) + 1
            seen[part] = ord
            if kept[part] and REFUSED[out[n + j]] then
              local v = h + HEAD + size * j
              memo[part] = (memo[part] or '') .. string.format('%d,%s,%d,%d,%d,%s;', ord,
                out[n + j], given[n + j] or 0, rows[v + 1], rows[v + size], rows[h + H_AID])
            end
          end
        end
        n = n + count
      end
      for part, text in pairs(memo) do
        local at = string.find(part, '\n', 1, true)
        local key = string.sub(part, 1, at - 5) .. 'refused'  -- "{uid}:once" -> "{uid}:refused"
        redis.call('HSET', key, string.sub(part, at + 1), text)
        redis.call('EXPIRE', key, once[2])
      end
    end
  end
  return answer()
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
