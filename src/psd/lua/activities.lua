-- activities.lua: included by sum.lua where it says "-- #include activities.lua" (it uses
-- that script's things, thing_of, filter, carry and match, and record.lua): what a read
-- takes from the users' activity records — the changes inside the partial hours at a
-- range's edges (its "windows"), and the activities that changed in a range (the
-- "_atids"). breakdown.lua uses add_windows and span_of.

-- an activity's changes in one hour, {ts, amount, atid, ...}, given its summary (see
-- record.lua) and, when it has several changes, that hour's stored chunk
local function changes_of(summary, h, chunk)
  if summary[R_CHANGES] == 1 then
    return summary[R_HOUR] == h and {summary[R_FIRST], summary[R_TOTAL], summary[R_TYPE]} or {}
  end
  return chunk and cmsgpack.unpack(chunk) or {}
end

-- add to his/los the changes in some windows of one hour (pairs {w1, w2} of ws from first to
-- last, ascending) of the activities in items, index members of activities whose last change
-- is at or after the first window's start: window i (from 0) of thing ti adds to entry
-- i * #things + ti
local function add_windows(items, acts, ws, first, last, hour, his, los)
  local h, latest, width = hour_of(ws[first]), ws[last], #things
  for j = 1, #items do
    local thing, aid, first_change = match(items[j], '^(%d+):[^:]+:([^:]+):(%d+)$')
    local ti = thing_of[thing]
    if ti and first_change + 0 <= latest then
      local id = thing .. ':' .. aid
      local vals = redis.call('HMGET', acts, id, id .. ':' .. hour)
      -- an index entry whose state expired first is skipped, not trusted
      if vals[1] then
        local changes = changes_of(cmsgpack.unpack(vals[1]), h, vals[2])
        for c = 1, #changes, C_SIZE do
          local ts = changes[c]
          if filter == nil or changes[c + C_ATID] == filter then
            for w = first, last, 2 do
              if ts >= ws[w] and ts <= ws[w + 1] then
                local at = (w - first) / 2 * width + ti
                his[at], los[at] = carry(his[at], los[at] + changes[c + C_AMOUNT])
              end
            end
          end
        end
      end
    end
  end
end

-- the type of an activity's latest change in [t1, t2] (after the filter): hours backwards
local function latest_change(acts, id, summary, t1, t2)
  for i = #summary - 1, R_HOUR, -2 do
    local h = summary[i]
    if h * 3600 <= t2 and h * 3600 + 3599 >= t1 then
      local chunk = summary[R_CHANGES] > 1 and redis.call('HGET', acts, id .. ':' .. h) or nil
      local changes = changes_of(summary, h, chunk)
      local best, best_typ
      for c = 1, #changes, C_SIZE do
        local ts, t = changes[c], changes[c + C_ATID]
        if ts >= t1 and ts <= t2 and (filter == nil or t == filter)
            and (best == nil or ts >= best) then
          best, best_typ = ts, t
        end
      end
      if best then return best, best_typ end
    end
  end
  return nil
end

-- The activities found in a range, found = {typ = {}, when = {}, ti = {}, more = {}, idx = key}:
-- per aid the type of its latest change over the things, a tie going to the later thing. A
-- sighting's time is a number, or the index member whose score it is: read (ZSCORE) only
-- when two sightings of an aid disagree on the type.
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
    if t > ts or (t == ts and ti > cur_ti) then
      found.typ[aid], found.when[aid], found.ti[aid] = typ, t, ti
    end
  end
end

-- note the type of an activity's latest change in [t1, t2], read from its records
local function look(found, acts, thing, aid, ti, t1, t2)
  local id = thing .. ':' .. aid
  local raw = redis.call('HGET', acts, id)
  if raw then
    local ts, typ = latest_change(acts, id, cmsgpack.unpack(raw), t1, t2)
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

-- the longest activity of a user (0: none stored): how long after a window an activity with a
-- change in it can have gone on; kept for the next series (consecutive ones are often one user's)
local span_key, span_value
local function span_of(acts)
  if acts ~= span_key then
    local raw = redis.call('HGET', acts, '_span')
    span_key, span_value = acts, raw and raw + 0 or 0
  end
  return span_value
end

-- the windows' changes from the activities' records (only what changed near each window,
-- at most two: a long range needs nothing between), and (found) the activities
local function from_activities(idx, acts, plan, his, los, found)
  local span = span_of(acts)
  for _, w in ipairs(plan.windows) do  -- {start, end, start string, end string, hour string}
    local upto = span == 0 and w[4] or w[2] + span
    local items = redis.call('ZRANGEBYSCORE', idx, w[3], upto)
    add_windows(items, acts, w, 1, 2, w[5], his, los)
  end
  if found then list_activities(idx, acts, plan, span, found) end
end
