-- recording.lua: included by write_metric.lua where it says "-- #include recording.lua"
-- (after record.lua, changes.lua, limits.lua, daystate.lua and convert.lua; it uses that
-- script's KEYS and state_ttl): an activity's record as a call reads, changes and writes it
-- back (record.lua's layout). What a call changes is gathered first and written once at the
-- end: a batch often holds many points of one activity (a day of minutes) or one day, and
-- each would otherwise read, unpack, pack and write the same state again. The call is
-- atomic either way.
-- acts key -> thing -> aid -> an activity's state (nested: a key made of the three costs
-- more than the lookups); those states in order. A user's drop mark where their records
-- are not whole (record.lua's "_d") is read with the first summary into WHOLE.lapses (a
-- refused point's retry forgets the states, not the users), or set there: for a user psd
-- finds with counters and no state (theirs lapsed), and for records without any mark (an
-- earlier psd rebuilt them after a lapse), the state's lifetime before now, written with
-- the user's records (WHOLE.unmarked)
local activities, touched
-- acts key -> true once its layout is known current (its records' drop mark, a number,
-- where it has one: record.lua's "0:c"), "new" for a user psd has no record of
-- yet (its layout field is written with its first record), "whole" for a new one without
-- counters either (its records will hold all it has: "0:c" is written too, and its index's
-- member of it: record.lua's WHOLE)
local users
local spans  -- acts key -> its "_span" as read with the first summary (nil: unknown)
local marks  -- acts key -> its "_x" as read with the first summary (nil: unknown)

-- A user's state lives state_ttl past their last change. Its two keys are given
-- state_ttl + REFRESH seconds past now, or past the latest change the call wrote when it
-- is later (its "_x" then), when their mark ("_x") is REFRESH older or more, not at every
-- call: most of a user's writes then carry no EXPIRE. REFRESH is a day, or a sixteenth of
-- a short state_ttl.
local REFRESH

-- Where the last change recorded went, when it was appended to its day's changes: {its
-- activity, its summary, its day's entry there (at), its day's state, its hour's state and
-- its context's number there, its day, its hour, its type}, positions 1 to 9 (one table: a
-- script's chunk has at most 200 locals); none: nil at 1. The next point of a run (a
-- user's day, a log: one activity, hour and type point after point) is appended there at
-- once (record_next).
local last_change = {}

-- a call's start, once state_ttl is known
local function recording_begin()
  last_change[1] = nil
  singles.on, singles.unhinted = true, {}
  activities, touched, users, spans, marks = {}, {}, {}, {}, {}
  WHOLE.lapses, WHOLE.unmarked = {}, {}
  REFRESH = math.min(86400, math.floor(state_ttl / 16))
end

-- the activity's index member: "<thing>:<type>:<aid>:<first>"
local function member_of(act, typ, first)
  return act.thing_s .. ':' .. typ .. ':' .. act.aid .. ':' .. digits_of(first)
end

-- the summary of activity `id` in `acts`, the user's records brought to this layout first
-- (convert.lua) if an earlier psd wrote them; root: the user's root counter hash (none:
-- the user has no counters, as their root outlives every other)
local function summary_of(acts, idx, id, root)
  if users[acts] then return redis.call('HGET', acts, id) end
  local vals = redis.call('HMGET', acts, id, LAYOUT_FIELD, SPAN_FIELD, EXPIRED_FIELD,
                          WHOLE.field, WHOLE.drops)
  if vals[2] == LAYOUT then
    -- the user's drop mark (record.lua's "0:c", -1: none) where they have one, else true
    users[acts] = vals[5] and vals[5] + 0 or true
    spans[acts], marks[acts] = (vals[3] or 0) + 0, (vals[4] or 0) + 0
    WHOLE.lapses[acts] = vals[6] and vals[6] + 0
    if not (vals[5] or vals[6]) and state_ttl > 0 then  -- no mark: it may have lapsed
      WHOLE.lapses[acts], WHOLE.unmarked[acts] = now - state_ttl, true
    end
    return vals[1]
  end
  if redis.call('EXISTS', acts) == 0 then
    users[acts] = redis.call('EXISTS', root) == 0 and 'whole' or 'new'
    spans[acts], marks[acts] = 0, 0
    -- counters and no state: it lapsed, its activities last changed a lifetime ago or more
    if users[acts] == 'new' and state_ttl > 0 then WHOLE.lapses[acts] = now - state_ttl end
    return nil
  end
  convert_user(acts)
  users[acts] = true
  return redis.call('HGET', acts, id)
end

-- the activity's state as this call found it (loaded once); t: its point's target
local function activity(k, t, aid)
  local acts, thing = KEYS[k + 1], t[T_THING]
  local of_user = activities[acts]
  if of_user == nil then
    of_user = {}
    activities[acts] = of_user
  end
  local of_thing = of_user[thing]
  if of_thing == nil then
    of_thing = {}
    of_user[thing] = of_thing
  end
  local act = of_thing[aid]
  if act == nil then
    local thing_s = t[T_THING_S]
    local id = thing_s .. ':' .. aid
    local packed = summary_of(acts, KEYS[k + 2], id, KEYS[k + 3])
    act = {acts = acts, idx = KEYS[k + 2], id = id, thing = thing, thing_s = thing_s, aid = aid,
           changed = false, names = {}}
    if packed then
      act.summary = cmsgpack.unpack(packed)
      act.old_type, act.old_first = act.summary[R_TYPE], act.summary[R_FIRST]
    end
    of_thing[aid] = act; touched[#touched + 1] = act
  end
  return act
end

-- what the activity recorded inside [ts1, ts2]: whole days from its summary, the days at
-- the edges from their changes. nil and why when it cannot say: "stale" (a day's changes
-- are gone, the retention), "past_record" (a sum would leave ±2^53)
local function window_sum(act, ts1, ts2)
  local s = act.summary
  if s[R_CHANGES] == 1 then
    return (s[R_FIRST] >= ts1 and s[R_FIRST] <= ts2) and s[R_TOTAL] or 0
  end
  if not exact(s[R_TOTAL]) then return nil, 'past_record' end  -- see convert.lua
  if ts1 <= s[R_FIRST] and ts2 >= s[R_LAST] then return s[R_TOTAL] end
  local sum, d1, d2 = 0, day_of(ts1), day_of(ts2)
  for i = R_DAYS, #s, D_SIZE do
    local day = s[i]
    if (day > d1 or ts1 <= day * 86400) and (day < d2 or ts2 >= s[R_LAST]) then
      sum = sum + s[i + D_TOTAL]  -- the whole day is inside
    elseif day >= d1 and day <= d2 then
      local part = day_window(day_state(act.acts, day), act.thing, act.aid, ts1, ts2,
                              s[i + D_CHANGES])
      if part == nil then return nil, 'stale' end
      if part == false then return nil, 'past_record' end
      sum = sum + part
    end
    if not exact(sum) then return nil, 'past_record' end
  end
  return sum
end

-- the position of a day in a summary's day list, or nil and where it would go
local function day_slot(s, day)
  for i = R_DAYS, #s, D_SIZE do
    if s[i] == day then return i end
    if s[i] > day then return nil, i end
  end
  return nil, #s + 1
end

-- count a change in its day's entry of the summary (made if new) and keep it in the day's
-- changes; a day whose changes are past the retention counts -1 (not all kept). False when
-- it was added to a change kept at the same second (not a change more). day: ts's.
local function keep_change(act, ts, amount, atid, day)
  last_change[1] = nil  -- whatever it does (a day inserted, one past the retention)
  local s = act.summary
  local at, insert = day_slot(s, day)
  if at == nil then
    table.insert(s, insert, 0); table.insert(s, insert, 0); table.insert(s, insert, day)
    at = insert
  end
  s[at + D_TOTAL] = s[at + D_TOTAL] + amount
  -- kept_day(day), inlined (this runs for every point)
  if changes_keep ~= 0 and (day + 1) * 86400 + changes_keep <= now then
    s[at + D_CHANGES] = -1
    return true
  end
  local name = act.names[atid]  -- its context's name in its days (daystate.lua)
  if name == nil then
    name = act.thing_s .. ':' .. act.aid .. ':' .. atid
    act.names[atid] = name
  end
  local st = day_state(act.acts, day)
  local added, hour, ctx = add_change(st, act.thing, act.aid, atid, ts, amount, name)
  if added and s[at + D_CHANGES] >= 0 then s[at + D_CHANGES] = s[at + D_CHANGES] + 1 end
  if added then
    local c, in_day = last_change, ts % 86400
    c[1], c[2], c[3], c[4], c[5], c[6] = act, s, at, st, hour, ctx
    c[7], c[8], c[9] = day, (in_day - in_day % 3600) / 3600, atid
  end
  return added
end

-- record() for a change of the activity the last change appended went to, in the same
-- hour, context and type and after every change kept there (a run's next point): appended
-- where that one was, without looking anything up. False (nothing done) for any other
-- change, which record() then takes, as it does one that would pass a limit.
local function record_next(act, ts, delta, atid)
  local c = last_change
  local s = c[2]
  if act ~= c[1] or atid ~= c[9] or act.summary ~= s then return false end
  local in_day = ts % 86400
  if (ts - in_day) / 86400 ~= c[7] or (in_day - in_day % 3600) / 3600 ~= c[8] then
    return false
  end
  local sec, st, hour, ctx = ts % 3600, c[4], c[5], c[6]
  if sec <= hour.max[ctx] or days[st.key] ~= st then return false end
  local at = c[3]
  local total, day_total = s[R_TOTAL] + delta, s[at + D_TOTAL] + delta
  if not (exact(total) and exact(day_total)) then return false end
  local recs = hour.groups[ctx]
  recs[#recs + 1], recs[#recs + 2] = sec, delta
  hour.max[ctx] = sec
  s[at + D_TOTAL] = day_total
  if s[at + D_CHANGES] >= 0 then s[at + D_CHANGES] = s[at + D_CHANGES] + 1 end
  s[R_CHANGES], s[R_TOTAL] = s[R_CHANGES] + 1, total
  if ts > s[R_LAST] then s[R_LAST] = ts end  -- after a change of its: not before the first
  if s[R_TYPE] ~= atid then s[R_TYPE] = '*' end
  return true
end

-- add a change to the activity's record; nil (nothing changed) if its total or its day's
-- would leave ±2^53 (exact(), inlined: this runs for every point)
local function record(act, ts, delta, atid)
  local s, day = act.summary, (ts - ts % 86400) / 86400  -- day_of(ts), exactly
  local total = s[R_TOTAL] + delta
  if total >= RECORD_LIMIT or total <= -RECORD_LIMIT then return nil end
  if s[R_CHANGES] == 1 then
    if s[R_FIRST] == ts and s[R_TYPE] == atid then  -- the same change again: still one
      s[R_TOTAL] = total
      return true
    end
    -- a second change: the first joins its day's changes (its day total is the total)
    local first, typ = s[R_FIRST], s[R_TYPE]
    act.summary = {first, first, typ, 1, s[R_TOTAL]}
    s = act.summary
    keep_change(act, first, s[R_TOTAL], typ, day_of(first))
  else
    local at = day_slot(s, day)
    if at and not exact(s[at + D_TOTAL] + delta) then return nil end
  end
  if keep_change(act, ts, delta, atid, day) then s[R_CHANGES] = s[R_CHANGES] + 1 end
  s[R_TOTAL] = s[R_TOTAL] + delta
  if ts < s[R_FIRST] then s[R_FIRST] = ts end
  if ts > s[R_LAST] then s[R_LAST] = ts end
  if s[R_TYPE] ~= atid then s[R_TYPE] = '*' end
  return true
end

local function save_states()
  -- acts key -> longest span written; -> its idx; -> its latest change written
  local longest, changed, latest = {}, {}, {}
  for _, act in ipairs(touched) do
    if act.changed then
      local acts = act.acts
      local new = users[acts]
      if new == 'whole' then
        redis.call('HSET', acts, act.id, cmsgpack.pack(act.summary), LAYOUT_FIELD, LAYOUT,
                   WHOLE.field, WHOLE.score)
        redis.call('ZADD', act.idx, WHOLE.score, WHOLE.member)
        users[acts] = true
      elseif new == 'new' then
        redis.call('HSET', acts, act.id, cmsgpack.pack(act.summary), LAYOUT_FIELD, LAYOUT)
        if WHOLE.lapses[acts] then redis.call('HSET', acts, WHOLE.drops, WHOLE.lapses[acts]) end
        users[acts] = true
      else
        redis.call('HSET', acts, act.id, cmsgpack.pack(act.summary))
        if WHOLE.unmarked[acts] then
          redis.call('HSET', acts, WHOLE.drops, WHOLE.lapses[acts])
          WHOLE.unmarked[acts] = nil
        end
      end
      -- its member names its type and first change: the one before goes if they changed
      local s = act.summary
      if s[R_CHANGES] == 1 then singles.mark(acts, day_of(s[R_FIRST])) end
      if act.old_type and (act.old_type ~= s[R_TYPE] or act.old_first ~= s[R_FIRST]) then
        redis.call('ZREM', act.idx, member_of(act, act.old_type, act.old_first))
      end
      redis.call('ZADD', act.idx, digits_of(s[R_LAST]), member_of(act, s[R_TYPE], s[R_FIRST]))
      local span = act.summary[R_LAST] - act.summary[R_FIRST]
      if span > (longest[acts] or 0) then longest[acts] = span end
      if s[R_LAST] > (latest[acts] or 0) then latest[acts] = s[R_LAST] end
      changed[acts] = act.idx
    end
  end
  for acts, span in pairs(longest) do
    local known = spans[acts] or (redis.call('HGET', acts, SPAN_FIELD) or 0) + 0
    if span > known then
      redis.call('HSET', acts, SPAN_FIELD, span)
      spans[acts] = span
    end
  end
  if state_ttl > 0 then
    for acts, idx in pairs(changed) do
      local mark = marks[acts] or (redis.call('HGET', acts, EXPIRED_FIELD) or 0) + 0
      -- a change dated after now (a device's clock ahead) is lived past as any other
      local at = math.max(now, latest[acts])
      if at - mark >= REFRESH then
        redis.call('HSET', acts, EXPIRED_FIELD, at)
        redis.call('EXPIRE', acts, at - now + state_ttl + REFRESH)
        redis.call('EXPIRE', idx, at - now + state_ttl + REFRESH)
        marks[acts] = at
      end
    end
  end
  save_days()
end

-- forget what this call loaded of activities and days
local function forget_states()
  last_change[1] = nil
  activities, touched, spans, marks = {}, {}, {}, {}
  forget_days()
end
