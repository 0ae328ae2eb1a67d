-- atids.lua: included by sum.lua where it says "-- #include atids.lua" (after
-- activities.lua, whose span_of, listed and series_windows it uses, and oldreads.lua; it
-- uses that script's types_only): the activities that changed in a range (the "_atids"),
-- each with the type of its latest change there, noted in a found table as they turn up
-- (fromrecords.lua and fromlog.lua note theirs too), and a series' activity part of a
-- read: its windows, then its activities.

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

-- the activities found, as one string "aid type aid type ..." (types_only: "type type
-- ..."): a reply element costs more than the join
local function atids_of(found)
  local words, n = {}, 0
  if types_only then
    for _, typ in pairs(found.typ) do words[n + 1], n = typ, n + 1 end
  else
    for aid, typ in pairs(found.typ) do words[n + 1], words[n + 2], n = aid, typ, n + 2 end
  end
  return table.concat(words, ' ')
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
