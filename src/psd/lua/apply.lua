-- apply.lua: included by write_metric.lua where it says "-- #include apply.lua" (after
-- recording.lua, counters.lua and pending.lua; it uses that script's rows, targets, KEYS and
-- the positions of a run's values): how a call's runs of points are applied, the point and
-- its status at a time, or a run of increments at once (its delivery answered once, its
-- activity looked up once, its points after the first appended in one pass, one due owed
-- to its counters). What a point adds is recorded in memory; recording.lua and counters.lua
-- write it when the call pays and saves.

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

-- what activity act's pending points add inside [ts1, ts2], and its latest one (nil: none):
-- its entries of numbers, and of strings (pending.lua)
local function pending_window(k, act, ts1, ts2)
  local p, sum, last = pending_of(k), 0, nil
  if p == nil then return 0, nil end
  local thing, aid = act.thing, act.aid
  local code, id = thing + LOG_NUMBERS, log_id(aid)
  for i = 1, #p, PENDING_STRIDE do
    local c = p[i]
    if c == code and p[i + 1] == id or c == thing and p[i + 1] == aid then
      local ts = p[i + 4]
      if ts >= ts1 and ts <= ts2 then sum = sum + p[i + 3] end
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
    local lapse = WHOLE.lapses[act.acts]
    if lapse and ts1 <= lapse then
      -- its window starts where a lapsed state lost records (record.lua's "_d"): whatever
      -- the activity recorded since (an increment of its aid), changes of it before may be
      -- gone, as for a window past them
      return 'stale', 0
    end
    local mark = users[act.acts]
    if type(mark) == 'number' and ts1 <= mark then
      -- its window starts where the compaction dropped a record (record.lua's "0:c"): it
      -- may be that one, sent again, whose changes are no longer known, whatever the
      -- activity recorded since (an increment of its aid)
      return 'stale', 0
    end
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

-- a point's status as its letter in the call's answer (write_metric.lua); an ok of a diffadd
-- is "d", its delta given
local CODES = {ok = 'o', same = 's', stale = 't', duplicate = 'u', past_counter = 'c',
               past_hour = 'h', past_record = 'r', past_change = 'x'}
local REFUSED = {c = true, h = true, r = true, x = true}
-- per point its letter; point -> its delta, where its letter is "d" or "x"; whether one
-- was refused
local out, given, refused

-- the result of point n, of a diffadd or an increment
local function put(n, diffadd, status, delta)
  local code = CODES[status]
  if code == 'o' and diffadd then code = 'd' end
  out[n] = code
  if code == 'd' or code == 'x' then given[n] = delta end
  if REFUSED[code] then refused = true end
end

-- the call's answer: its letters, then the deltas of its points "d" and "x", in order
local function answer()
  local reply = {table.concat(out)}
  if next(given) == nil then return reply end
  for n = 1, #out do
    local code = out[n]
    if code == 'd' or code == 'x' then reply[#reply + 1] = given[n] end
  end
  return reply
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
    out[n] = 'o'
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
    for j = 0, count - 1 do put(n + j, true, apply_point(h, h + HEAD + 3 * j)) end
    return
  end
  local k, delivery = rows[h + H_K], rows[h + H_DELIVERY]
  if delivery ~= 0 and applied_before(KEYS[k + 7], deliveries[delivery], once) then
    for j = n, n + count - 1 do out[j] = 'u' end
    return
  end
  local t, aid, atid = targets[rows[h + H_TARGET]], rows[h + H_AID], rows[h + H_ATID]
  local act = activity(k, t, aid)
  local sum, added = 0, false
  local v, vlast = h + HEAD, h + HEAD + 2 * (count - 1)
  while v <= vlast do
    local delta, ts = rows[v + 1], rows[v + 2]
    if delta == 0 then
      out[n] = 's'
    elseif act.summary == nil then
      act.summary = {ts, ts, atid, 1, delta}  -- record.lua's order
      act.changed, added, sum = true, true, sum + delta
      out[n] = 'o'
    elseif record_next(act, ts, delta, atid) or record(act, ts, delta, atid) then
      act.changed, added, sum = true, true, sum + delta
      out[n] = 'o'
      if v < vlast then  -- the points after it, as many as may be, at once
        local more
        v, n, more = append_run(act, atid, v + 2, vlast, n + 1)
        sum, v, n = sum + more, v - 2, n - 1
      end
    else
      out[n] = 'r'
      refused = true
    end
    n, v = n + 1, v + 2
  end
  if added then add_to_counters(k, t, atid, sum) end
end
