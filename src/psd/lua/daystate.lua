-- daystate.lua: included by the scripts that write changes (write_metric.lua through
-- recording.lua, maintain.lua), after changes.lua and limits.lua, where `now` is the call's
-- time and `changes_keep` the minute retention (seconds, 0 = forever): a day's changes as a
-- call reads, adds to and writes back ({uid}:cYYYYMMDD, changes.lua). A call loads what it
-- needs once — a day's contexts and the hours it appends to, or the whole day when it sums
-- an activity's changes there — and writes each changed day once, at the end.
local days, days_touched = {}, {}  -- changes key -> its state; keys in order

-- A day's field "s" says whether an activity of a single change (its summary alone, with no
-- entry in the day's changes: record.lua) may have that change in the day: "0" none, "1"
-- maybe. A read of a window skips asking the user's index for singles when every day it
-- reads says "0" (activities.lua); a day without the field (written by an earlier psd, or
-- by a conversion, or a day of singles only, which has no key) is read as "maybe". Only
-- write_metric.lua's calls write it (singles.on): "1" when they record a single in a day
-- with changes, "0" when they make the day's changes and the index lists no possible single
-- in it (singles.hint). One table, as a script's chunk has at most 200 locals: on, whether
-- the hint is written (write_metric.lua), and unhinted, acts key -> true for a user
-- converted in this call (no "0" written).
local singles = {on = false, unhinted = {}}
-- the field of each hour (0..23), a string: a number passed to Redis is printed with "%.17g"
local HOUR_FIELDS = {}
for h = 0, 23 do HOUR_FIELDS[h] = tostring(h) end

-- when a day's changes key expires (0: never); at or before now its changes are not kept
local function changes_expiry(day)
  if changes_keep == 0 then return 0 end
  return (day + 1) * 86400 + changes_keep
end

local function kept_day(day)
  local at = changes_expiry(day)
  return at == 0 or at > now
end

-- the state of a day of the user whose activity state is `acts`: {key, day, ctxs (flat
-- contexts, loaded with the first hour), ctx_of ("thing:aid:atid" -> number), hours (hour
-- -> its changes, hour_from), dirty hours}
-- acts key -> day -> its state: found without making its key (a point's work; convert.lua
-- may set other days aside, so a state found here is checked against them)
local day_memo = {}
local function day_state(acts, day)
  local of_acts = day_memo[acts]
  local st = of_acts and of_acts[day]
  if st and days[st.key] == st then return st end
  local key = changes_key(acts, day)
  st = days[key]
  if st == nil then
    st = {key = key, day = day, hours = {}, dirty = {}, ctx_of = {}, acts = acts}
    days[key] = st
    days_touched[#days_touched + 1] = key
  end
  if of_acts == nil then
    of_acts = {}
    day_memo[acts] = of_acts
  end
  of_acts[day] = st
  return st
end

-- a thing's number as a string (a number concatenated is printed by a slow printf)
local thing_names = {}

local function load_contexts(st, raw)
  local ctxs = raw and cmsgpack.unpack(raw) or {}
  st.ctxs, st.created = ctxs, not raw  -- HMGET answers false for a field it has not
  for n = 1, #ctxs / 3 do
    local thing = ctxs[3 * n - 2]
    local name = thing_names[thing]
    if name == nil then
      name = tostring(thing)
      thing_names[thing] = name
    end
    st.ctx_of[name .. ':' .. ctxs[3 * n - 1] .. ':' .. ctxs[3 * n]] = n
  end
end

-- an hour's changes by context: {groups = {context -> {second, amount, ...}}, max =
-- {context -> its latest second}}. It decodes as changes.lua's decode_hour does, into
-- its groups at once (this runs for every user a call writes). Its tables are made with
-- room for a first context ({nil}) and a context's list for six changes (a stream's hour of
-- one activity), as add_change's: a table grown an entry at a time is made again at every
-- power of two, most of what writing a dense user's changes cost the server.
local function hour_from(raw)
  local groups, max = {nil}, {nil}
  if raw then
    local items = cmsgpack.unpack(raw)
    local ctx, sec, d, i, count, recs, top = 1, 0, 0, 1, #items, nil, -1
    while i <= count do
      local v = items[i]
      if v <= CTX_MARK then
        if recs then max[ctx] = top end
        ctx, sec, d, i, recs = CTX_MARK - v, 0, 0, i + 1, nil
      else
        d = d + v
        sec = sec + d
        if recs == nil then
          recs = groups[ctx]
          if recs == nil then
            recs = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}  -- six changes
            groups[ctx] = recs
          end
          top = max[ctx] or -1
        end
        local n = #recs
        recs[n + 1], recs[n + 2] = sec, items[i + 1]
        if sec > top then top = sec end
        i = i + 2
      end
    end
    if recs then max[ctx] = top end
  end
  return {groups = groups, max = max}
end

local function hour_state(st, h)
  local hour = st.hours[h]
  if hour == nil then
    if st.ctxs == nil then
      local vals = redis.call('HMGET', st.key, CONTEXTS, HOUR_FIELDS[h])
      load_contexts(st, vals[1])
      hour = hour_from(vals[2])
    elseif st.created then  -- a day with no contexts has no changes: nothing to read
      hour = hour_from(nil)
    else
      hour = hour_from(redis.call('HGET', st.key, HOUR_FIELDS[h]))
    end
    st.hours[h] = hour
  end
  return hour
end

-- every hour of the day loaded (those this call changed stay as they are)
local function load_day(st)
  if st.whole then return end
  local flat, raw_ctxs = redis.call('HGETALL', st.key), nil
  for i = 1, #flat, 2 do
    local f = flat[i]
    if f == CONTEXTS then
      raw_ctxs = flat[i + 1]
    elseif f == 's' then  -- its singles' hint, not an hour
    elseif st.hours[f + 0] == nil then
      st.hours[f + 0] = hour_from(flat[i + 1])
    end
  end
  if st.ctxs == nil then load_contexts(st, raw_ctxs) end
  st.whole = true
end

-- add a change of activity (thing, aid) of type atid at ts to its day: to the amount of
-- its change at the same second, if it has one there, else appended. True if appended (a
-- change more for the day), with its hour's state and its context's number there. name:
-- its context's name, "<thing>:<aid>:<atid>", if the caller has it made.
local function add_change(st, thing, aid, atid, ts, amount, name)
  local in_day = ts % 86400
  local h = (in_day - in_day % 3600) / 3600  -- math.floor(in_day / 3600), exactly
  local hour = hour_state(st, h)
  name = name or thing .. ':' .. aid .. ':' .. atid
  local ctx = st.ctx_of[name]
  st.dirty[h] = true
  if ctx == nil then
    local ctxs = st.ctxs
    ctxs[#ctxs + 1], ctxs[#ctxs + 2], ctxs[#ctxs + 3] = thing, aid, atid
    ctx = #ctxs / 3
    st.ctx_of[name], st.ctx_dirty = ctx, true
  end
  local sec, recs = ts % 3600, hour.groups[ctx]
  if recs == nil then
    recs = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}  -- six changes
    hour.groups[ctx] = recs
  elseif sec <= hour.max[ctx] then  -- not after every change of its context: look for it
    for j = 1, #recs, 2 do
      if recs[j] == sec then
        recs[j + 1] = recs[j + 1] + amount
        return false
      end
    end
  end
  recs[#recs + 1], recs[#recs + 2] = sec, amount
  if sec > (hour.max[ctx] or -1) then hour.max[ctx] = sec end
  return true, hour, ctx
end

-- the sum of activity (thing, aid)'s changes of the day inside [ts1, ts2]; nil when the
-- day does not hold all `changes` of them (its detail is gone: the retention), false when
-- the sum would leave ±2^53
local function day_window(st, thing, aid, ts1, ts2, changes)
  load_day(st)
  local ctxs, mine = st.ctxs, {}
  for n = 1, #ctxs / 3 do
    if ctxs[3 * n - 2] == thing and ctxs[3 * n - 1] == aid then mine[n] = true end
  end
  local count, sum = 0, 0
  for h, hour in pairs(st.hours) do
    local base = st.day * 86400 + h * 3600
    for ctx, recs in pairs(hour.groups) do
      if mine[ctx] then
        count = count + #recs / 2
        for j = 1, #recs, 2 do
          if base + recs[j] >= ts1 and base + recs[j] <= ts2 then
            sum = sum + recs[j + 1]
            if not exact(sum) then return false end
          end
        end
      end
    end
  end
  if count ~= changes then return nil end
  return sum
end

-- HSET of many fields, in slices (unpack() of more than ~8,000 values fails)
local function hset_all(key, flat)
  for i = 1, #flat, 1000 do
    redis.call('HSET', key, unpack(flat, i, math.min(i + 999, #flat)))
  end
end

-- a single-change activity recorded in the day (recording.lua save_states): its "s" is "1"
function singles.mark(acts, day)
  if singles.on and kept_day(day) then day_state(acts, day).single = true end
end

-- the "s" a day whose changes this call made (none were stored) gets: "1" if the user's
-- index lists an activity that may have a single change in the day (its first change its
-- last, the member's score; or a member not of the layout's form), else "0"; nil: none
-- written (the hint is off, or the user was converted in this call)
function singles.hint(st)
  if not singles.on or singles.unhinted[st.acts] then return nil end
  local idx = string.sub(st.acts, 1, -5) .. 'idx'
  local start = st.day * 86400
  local listed = redis.call('ZRANGEBYSCORE', idx, start, start + 86399, 'WITHSCORES')
  for i = 1, #listed, 2 do
    local first = string.match(listed[i], '^%d+:[^:]+:[^:]+:(%d+)$')
    if first == nil or first + 0 == listed[i + 1] + 0 then return '1' end
  end
  return '0'
end

-- write every changed day back, a new one with its expiry, and its singles' hint
local function save_days()
  for _, key in ipairs(days_touched) do
    local st, flat = days[key], {}
    if st.ctx_dirty then
      flat[1], flat[2] = CONTEXTS, cmsgpack.pack(st.ctxs)
    end
    for h, _ in pairs(st.dirty) do
      local n = #flat
      flat[n + 1], flat[n + 2] = HOUR_FIELDS[h], encode_hour(st.hours[h].groups)
    end
    local hint = st.single and '1' or (#flat > 0 and st.created and singles.hint(st)) or nil
    -- a single's "1" goes only to a day that has changes: a sparse user's day of singles
    -- keeps no key (none reads as maybe), and its first changes ask the index (singles.hint)
    if hint and st.created and #flat > 0 then
      -- a new day (no key: its contexts are its first field): its hint right after them, as
      -- a listpack finds a field by a scan from its first and every read of the day asks it
      local at = flat[1] == CONTEXTS and 3 or 1
      table.insert(flat, at, hint)
      table.insert(flat, at, 's')
    elseif hint == '1' and (#flat > 0 or (st.ctxs == nil and redis.call('EXISTS', key) == 1)
                            or (st.ctxs ~= nil and not st.created)) then
      flat[#flat + 1], flat[#flat + 2] = 's', '1'
    end
    if #flat > 0 then
      hset_all(key, flat)
      local at = changes_expiry(st.day)
      if st.created and at > 0 then redis.call('EXPIREAT', key, at) end
    end
  end
  days, days_touched, day_memo = {}, {}, {}
end

-- forget what this call loaded (the next read goes to what is stored)
local function forget_days()
  days, days_touched, day_memo = {}, {}, {}
end
