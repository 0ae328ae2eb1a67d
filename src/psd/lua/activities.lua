-- activities.lua: included by sum.lua where it says "-- #include activities.lua" (it uses
-- that script's things, thing_of, filter, carry and match, and record.lua): what a read
-- takes from the users' activity records — the changes inside the partial hours at a
-- range's edges (its "windows"), and the activities that changed in a range (the
-- "_atids"). breakdown.lua uses add_hour_windows. A user whose records an earlier psd
-- wrote is read as oldreads.lua says.

-- the longest activity of a user (0: none stored), how long after a window an activity with
-- a change in it can have gone on, whether their records are on layout 3 (record.lua) and
-- whether they hold every change their counters do; kept for the next series (consecutive
-- ones are often one user's)
local span_key, span_value, span_current, span_complete
forget_spans = function() span_key = nil end
local function span_of(acts)
  if acts ~= span_key then
    local vals = redis.call('HMGET', acts, SPAN_FIELD, LAYOUT_FIELD, COMPLETE_FIELD)
    span_key, span_value = acts, vals[1] and vals[1] + 0 or 0
    span_current = vals[2] == LAYOUT or redis.call('EXISTS', acts) == 0
    span_complete = vals[2] == LAYOUT and vals[3] == '1'
  end
  return span_value, span_current, span_complete
end

-- whether a user has neither records nor counters (no activity state, no root hash, which
-- outlives every other): all they have waits in their log (pending.lua), as a user's first
-- points do until it is applied; their counters would cost a read ~8 commands for nothing
local function nothing_kept(acts)
  return redis.call('EXISTS', acts, sub(acts, 1, -5) .. 'r') == 0
end

-- one context's {ti} by the call's thing_index and the context's thing: a day of one
-- activity is most days, and their lists the same for every such day of a call
local one_context = setmetatable({}, {__mode = 'k'})

-- per context of a day's changes (changes.lua), the thing index (ti) its changes add to, or
-- nil when the read does not sum it (another thing, or type); read, never changed
local function context_things(raw)
  -- one context (a fixarray of 3) whose thing is a fixint, read without unpacking
  if raw and filter == nil and byte(raw, 1) == 0x93 then
    local thing = byte(raw, 2)
    if thing < 0x80 then
      local of = one_context[thing_index]
      if of == nil then
        of = {}
        one_context[thing_index] = of
      end
      local tis = of[thing]
      if tis == nil then
        tis = {thing_index[thing]}
        of[thing] = tis
      end
      return tis
    end
  end
  local ctxs, tis = raw and cmsgpack.unpack(raw) or {}, {}
  for n = 1, #ctxs / 3 do
    if filter == nil or ctxs[3 * n] == filter then tis[n] = thing_index[ctxs[3 * n - 2]] end
  end
  return tis
end

-- add to his/los the changes of one hour (raw: its field of the day's changes; tis: the
-- day's context_things) inside some windows of it (pairs of ws from first to last): window i
-- (from 0) of thing ti adds to entry i * width + ti. It decodes as decode_hour does, in
-- place: the list of every change that builds costs more than adding them up.
local function add_changes(raw, tis, ws, first, last, width, his, los)
  local items, i = list_of(raw)
  local base = ws[first] - ws[first] % 3600
  local ctx, sec, d, count = 1, 0, 0, #items
  while i <= count do
    local v = items[i]
    if v <= CTX_MARK then
      ctx, sec, d, i = CTX_MARK - v, 0, 0, i + 1
    else
      d = d + v
      sec = sec + d
      local ti = tis[ctx]
      if ti then
        local ts = base + sec
        for w = first, last, 2 do
          if ts >= ws[w] and ts <= ws[w + 1] then
            local at = (w - first) / 2 * width + ti
            his[at], los[at] = carry(his[at], los[at] + items[i + 1])
          end
        end
      end
      i = i + 2
    end
  end
end

-- the user's changes key of a day (day_s: YYYYMMDD), named from their acts key
local function day_changes_key(acts, day_s)
  return sub(acts, 1, -5) .. 'c' .. day_s
end

-- add to his/los the changes of activities with two or more changes (the day's changes)
-- inside some windows of one hour (pairs of ws from first to last): window i (from 0) of
-- thing ti adds to entry i * #things + ti
local function changes_in_windows(acts, ws, first, last, day_s, hod_s, his, los)
  local vals = redis.call('HMGET', day_changes_key(acts, day_s), hod_s, CONTEXTS)
  if not vals[1] then return end
  add_changes(vals[1], context_things(vals[2]), ws, first, last, #things, his, los)
end

-- an index member's parts: thing, type, activity id, first change (recording.lua member_of)
local MEMBER = '^(%d+):([^:]+):([^:]+):(%d+)$'

-- an index member of a thing and type this read sums: the thing's position, the member's
-- first change (a number), its thing and activity id; nil for another's
local function listed(member)
  local thing, typ, aid, first = match(member, MEMBER)
  local ti = thing_of[thing]
  if ti and typ ~= '*' and (filter == nil or typ == filter) then
    return ti, first + 0, thing, aid
  end
end

-- the time and amount of an activity's change when it has one only (its summary is its
-- change), else nil
local function single(acts, thing, aid)
  local raw = redis.call('HGET', acts, thing .. ':' .. aid)
  local s = raw and cmsgpack.unpack(raw)
  if s and s[R_CHANGES] == 1 then return s[R_FIRST], s[R_TOTAL] end
end

-- the same for activities of a single change: those whose first change is inside [lo, hi],
-- the windows' span
local function singles_in_windows(idx, acts, ws, first, last, lo_s, hi_s, his, los)
  -- from the index's end, where a recent window's members are: a listpack finds a range by
  -- a scan, and ZREVRANGEBYSCORE scans from its last member (the members' order adds
  -- nothing; a window in the index's older half scans further, as every one did before)
  local items, lo, width = redis.call('ZREVRANGEBYSCORE', idx, hi_s, lo_s), ws[first], #things
  for j = 1, #items do
    local ti, first_change, thing, aid = listed(items[j])
    if ti and first_change >= lo then
      local ts, total = single(acts, thing, aid)
      if ts then
        for w = first, last, 2 do
          if ts >= ws[w] and ts <= ws[w + 1] then
            local at = (w - first) / 2 * width + ti
            his[at], los[at] = carry(his[at], los[at] + total)
          end
        end
      end
    end
  end
end

-- singles_in_windows for a series' two windows (at w1[o1 + 1] and w2[o2 + 1]) from the
-- index's members whose last change is between the first's start and the second's end
-- (items): a single change's time is its activity's first change, which its member names
local function singles_listed(items, acts, w1, o1, w2, o2, his, los)
  local a1, b1, a2, b2 = w1[o1 + 1], w1[o1 + 2], w2[o2 + 1], w2[o2 + 2]
  for j = 1, #items do
    local ti, first, thing, aid = listed(items[j])
    if ti and ((first >= a1 and first <= b1) or (first >= a2 and first <= b2)) then
      local ts, total = single(acts, thing, aid)
      if ts and ((ts >= a1 and ts <= b1) or (ts >= a2 and ts <= b2)) then
        his[ti], los[ti] = carry(his[ti], los[ti] + total)
      end
    end
  end
end

-- Two windows at most this far apart (a range of a day or less) are one range of the index:
-- a listpack's range is found by a scan from an end (its last, for ZREVRANGEBYSCORE), and a
-- day's members are few
local NEAR = 86400

-- windows of a user whose records an earlier psd wrote (oldreads.lua)
local function old_windows(idx, acts, ws, first, last, lo_s, hi_s, hi, hour_s, his, los)
  local span = span_of(acts)
  local items = redis.call('ZRANGEBYSCORE', idx, lo_s, span == 0 and hi_s or hi + span)
  old_add_windows(items, acts, ws, first, last, hour_s, his, los)
end

-- add to his/los what a user's activities changed inside some windows of one hour (pairs of
-- ws from first to last, ascending; lo_s, hi_s: the first start and last end as strings, hi
-- the last end; hour_s its hour (ts // 3600), day_s its day (YYYYMMDD), hod_s its hour in
-- the day, as strings): window i (from 0) of thing ti adds to entry i * #things + ti
local function add_hour_windows(idx, acts, ws, first, last, lo_s, hi_s, hi, hour_s, day_s,
                                hod_s, his, los)
  if select(2, span_of(acts)) then
    changes_in_windows(acts, ws, first, last, day_s, hod_s, his, los)
    singles_in_windows(idx, acts, ws, first, last, lo_s, hi_s, his, los)
  else
    old_windows(idx, acts, ws, first, last, lo_s, hi_s, hi, hour_s, his, los)
  end
end

-- add to his/los (entry ti: thing ti) the changes of one hour (raw; tis: its day's
-- context_things) in [t1, t2], the one window a series' edge has there: add_changes with
-- fewer steps a change (each step of the Lua VM counts), a context's sum kept in locals
local function window_changes(raw, tis, t1, t2, his, los)
  local items, i = list_of(raw)
  local base = t1 - t1 % 3600
  t1, t2 = t1 - base, t2 - base  -- seconds in the hour, as the changes are coded
  local sec, d, count, ti = 0, 0, #items, tis[1]
  local hi, lo = his[ti], los[ti]
  while i <= count do
    local v = items[i]
    if v <= CTX_MARK then
      if ti then his[ti], los[ti] = hi, lo end
      sec, d, i, ti = 0, 0, i + 1, tis[CTX_MARK - v]
      if ti then hi, lo = his[ti], los[ti] end
    else
      d = d + v
      sec = sec + d
      if ti and sec >= t1 and sec <= t2 then
        lo = lo + items[i + 1]  -- exact: |lo| < 10^15, a change within 2^42
        if lo >= E15 or lo <= -E15 then hi, lo = carry(hi, lo) end
      end
      i = i + 2
    end
  end
  if ti then his[ti], los[ti] = hi, lo end
end

-- add to his/los (entry ti: thing ti) what a user's activities changed inside a series'
-- windows (psd.scriptargs.WindowArg: at most one at each end of its range; n of them, their
-- seven values from w1[o1 + 1] and w2[o2 + 1], read where they are). The changes of two
-- windows of one day come in one HMGET, and a day with changes says the records are on
-- layout 3 (only that layout has them: record.lua); two windows NEAR each other (a range of a
-- day or less) are one range of the index (singles_listed). With logged (the user has a
-- log), days without changes ask whether the user has anything kept (nothing_kept): true,
-- having added nothing, when they have not, and their log answers alone
local function series_windows(idx, acts, n, w1, o1, w2, o2, his, los, logged)
  if n == 0 then return end
  local raw1, raw2, ctx1, ctx2, none1, none2
  if n == 2 and w1[o1 + 6] == w2[o2 + 6] then
    local vals = redis.call('HMGET', day_changes_key(acts, w1[o1 + 6]), w1[o1 + 7], w2[o2 + 7],
                            CONTEXTS, 's')
    raw1, raw2, ctx1, ctx2 = vals[1], vals[2], vals[3], vals[3]
    none1, none2 = vals[4] == '0', vals[4] == '0'
  else
    local vals = redis.call('HMGET', day_changes_key(acts, w1[o1 + 6]), w1[o1 + 7], CONTEXTS,
                            's')
    raw1, ctx1, none1, none2 = vals[1], vals[2], vals[3] == '0', true
    if n == 2 then
      vals = redis.call('HMGET', day_changes_key(acts, w2[o2 + 6]), w2[o2 + 7], CONTEXTS,
                        's')
      raw2, ctx2, none2 = vals[1], vals[2], vals[3] == '0'
    end
  end
  if logged and not (ctx1 or ctx2) and nothing_kept(acts) then return true end
  if not (ctx1 or ctx2 or select(2, span_of(acts))) then
    old_windows(idx, acts, w1, o1 + 1, o1 + 2, w1[o1 + 3], w1[o1 + 4], w1[o1 + 2], w1[o1 + 5],
                his, los)
    if n == 2 then
      old_windows(idx, acts, w2, o2 + 1, o2 + 2, w2[o2 + 3], w2[o2 + 4], w2[o2 + 2], w2[o2 + 5],
                  his, los)
    end
    return
  end
  local tis = raw1 and context_things(ctx1)
  if raw1 then window_changes(raw1, tis, w1[o1 + 1], w1[o1 + 2], his, los) end
  if raw2 then
    tis = ctx2 == ctx1 and tis or context_things(ctx2)
    window_changes(raw2, tis, w2[o2 + 1], w2[o2 + 2], his, los)
  end
  if none1 and none2 then return end  -- their days hold no single change (daystate.lua)
  if n == 2 and w2[o2 + 1] - w1[o1 + 2] <= NEAR then
    local listed = redis.call('ZREVRANGEBYSCORE', idx, w2[o2 + 4], w1[o1 + 3])
    singles_listed(listed, acts, w1, o1, w2, o2, his, los)
  else
    singles_in_windows(idx, acts, w1, o1 + 1, o1 + 2, w1[o1 + 3], w1[o1 + 4], his, los)
    if n == 2 then
      singles_in_windows(idx, acts, w2, o2 + 1, o2 + 2, w2[o2 + 3], w2[o2 + 4], his, los)
    end
  end
end

-- the latest of an activity's changes in [t1, t2] (after the filter) and its type: its
-- days backwards, each read whole
local function latest_change(acts, thing, aid, s, t1, t2)
  if s[R_CHANGES] == 1 then
    local ts, typ = s[R_FIRST], s[R_TYPE]
    if ts >= t1 and ts <= t2 and (filter == nil or typ == filter) then return ts, typ end
    return nil
  end
  thing = thing + 0
  for i = #s - D_SIZE + 1, R_DAYS, -D_SIZE do
    local start = s[i] * 86400
    if start <= t2 and start + 86399 >= t1 then
      local flat = redis.call('HGETALL', changes_key(acts, s[i]))
      local hours, ctxs, types = {}, {}, {}
      for j = 1, #flat, 2 do
        if flat[j] == CONTEXTS then ctxs = cmsgpack.unpack(flat[j + 1])
        elseif flat[j] ~= 's' then  -- its singles' hint: changes.lua
          hours[#hours + 1], hours[#hours + 2] = flat[j] + 0, flat[j + 1]
        end
      end
      for n = 1, #ctxs / 3 do
        local typ = ctxs[3 * n]
        if ctxs[3 * n - 2] == thing and ctxs[3 * n - 1] == aid
            and (filter == nil or typ == filter) then types[n] = typ end
      end
      local best, best_typ
      for j = 1, #hours, 2 do
        local changes, base = decode_hour(hours[j + 1]), start + hours[j] * 3600
        for c = 1, #changes, 3 do
          local typ, ts = types[changes[c]], base + changes[c + 1]
          if typ and ts >= t1 and ts <= t2 and later_change(ts, typ, best, best_typ) then
            best, best_typ = ts, typ
          end
        end
      end
      if best then return best, best_typ end
    end
  end
  return nil
end

-- The activities found in a range, found = {typ = {}, when = {}, ti = {}, more = {}, idx = key}:
-- per aid the type of its latest change over the things, a tie going to the later thing (in
-- one thing, to the greater type). A sighting's time is a number, or the index member whose
-- score it is: read (ZSCORE) only when two sightings of an aid disagree on the type.
local function time_of(found, when)
  if type(when) == 'number' then return when end
  return redis.call('ZSCORE', found.idx, when) + 0
end

-- the latest (time, thing) of aid's sightings so far (all of one type), kept as its only one
local function settle(found, aid)
  local ts, ti = time_of(found, found.when[aid]), found.ti[aid]
  local more = found.more[aid]
  if more then
    for i = 1, #more, 2 do
      local t = time_of(found, more[i])
      if t > ts or (t == ts and more[i + 1] > ti) then ts, ti = t, more[i + 1] end
    end
    found.more[aid] = nil
  end
  found.when[aid], found.ti[aid] = ts, ti
  return ts, ti
end

local function note(found, aid, when, ti, typ)
  local cur = found.typ[aid]
  if cur == nil then
    found.typ[aid], found.when[aid], found.ti[aid] = typ, when, ti
  elseif cur == typ then  -- the answer stands whichever is later: compare only if needed
    local more = found.more[aid] or {}
    more[#more + 1] = when; more[#more + 1] = ti
    found.more[aid] = more
  else
    local ts, cur_ti = settle(found, aid)
    local t = time_of(found, when)
    -- at one second the later thing, and in one thing (a pending point and a record's, or
    -- two pending points) the greater type, as record.lua's later_change
    if t > ts or (t == ts and (ti > cur_ti or ti == cur_ti and later_change(t, typ, t, cur))) then
      found.typ[aid], found.when[aid], found.ti[aid] = typ, t, ti
    end
  end
end

-- note the type of an activity's latest change in [t1, t2], read from its records
local function look(found, acts, thing, aid, ti, t1, t2)
  local id = thing .. ':' .. aid
  local raw = redis.call('HGET', acts, id)
  if raw then
    local summary = cmsgpack.unpack(raw)
    local ts, typ
    if select(2, span_of(acts)) then
      ts, typ = latest_change(acts, thing, aid, summary, t1, t2)
    else
      ts, typ = old_latest_change(acts, id, summary, t1, t2)
    end
    if ts then note(found, aid, ts, ti, typ) end
  end
end

-- every activity with a change in [t1, t2] after the type filter: those whose last change
-- is in range have one type (unless mixed, "*") and that change is their latest in range;
-- those that went on past t2 (up to span later) are looked at
local function list_activities(idx, acts, plan, span, found)
  local t1, t2 = plan.t1, plan.t2
  local items = redis.call('ZRANGEBYSCORE', idx, plan.s1, plan.s2)
  for j = 1, #items do
    local member = items[j]
    local thing, typ, aid = match(member, '^(%d+):([^:]+):([^:]+):')
    local ti = thing_of[thing]
    if ti then
      if typ == '*' then
        look(found, acts, thing, aid, ti, t1, t2)
      elseif filter == nil or typ == filter then
        note(found, aid, member, ti, typ)
      end
    end
  end
  if span == 0 then return end
  items = redis.call('ZRANGEBYSCORE', idx, '(' .. plan.s2, t2 + span)
  for j = 1, #items do
    local thing, aid, first = match(items[j], '^(%d+):[^:]+:([^:]+):(%d+)$')
    local ti = thing_of[thing]
    if ti and first + 0 <= t2 then look(found, acts, thing, aid, ti, t1, t2) end
  end
end

-- the windows' changes from the activities' records (only what changed near each window,
-- at most two: a long range needs nothing between), and (found) the activities
local function from_activities(idx, acts, plan, his, los, found)
  local ws = plan.windows
  series_windows(idx, acts, #ws, ws[1], 0, ws[#ws], 0, his, los)
  if found then list_activities(idx, acts, plan, span_of(acts), found) end
end
