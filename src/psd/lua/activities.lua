-- activities.lua: included by sum.lua where it says "-- #include activities.lua" (it uses
-- that script's things, thing_of, filter, carry and match, and record.lua): what a read
-- takes from the users' activity records — the changes inside the partial hours at a
-- range's edges (its "windows"); atids.lua lists the activities that changed in a range.
-- breakdown.lua uses add_hour_windows. A user whose records an earlier psd wrote is read
-- as oldreads.lua says.

-- the longest activity of a user (0: none stored), how long after a window an activity with
-- a change in it can have gone on, and whether their records are on layout 3 (record.lua);
-- kept for the next series (consecutive ones are often one user's)
local span_key, span_value, span_current
forget_spans = function() span_key = nil end
local function span_of(acts)
  if acts ~= span_key then
    local vals = redis.call('HMGET', acts, SPAN_FIELD, LAYOUT_FIELD)
    span_key, span_value = acts, vals[1] and vals[1] + 0 or 0
    span_current = vals[2] == LAYOUT or redis.call('EXISTS', acts) == 0
  end
  return span_value, span_current
end

-- whether a user has neither records nor counters (no activity state, no root hash, which
-- outlives every other): all they have waits in their log (pending.lua), as a user's first
-- points do until it is applied; their counters would cost a read ~8 commands for nothing.
-- prefix: acts less 'acts', where the caller has it (a string less to make)
local function nothing_kept(acts, prefix)
  return redis.call('EXISTS', acts, (prefix or sub(acts, 1, -5)) .. 'r') == 0
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
