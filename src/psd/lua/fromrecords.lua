-- fromrecords.lua: included by sum.lua where it says "-- #include fromrecords.lua" (after
-- activities.lua: it uses span_of, note and MEMBER, and that script's things, thing_of,
-- filter and hilo.lua): a user's sums and "_atids" over a range read from their activity
-- records alone, when those hold the answer whole.
--
-- A sparse user's activities in a range are a few index members and their summaries: one
-- index range and one HMGET, where their counters and the windows at the range's edges
-- cost ~9 commands (a /v1/mumt_query of 100 ids and 3 things is ~900). The records answer
-- exactly when
--   * they hold every change the user's counters do: "_c" (record.lua), written with the
--     user's first record when they had no counters, so no change was ever counted without
--     being recorded; and every activity that changed in the range is still recorded (the
--     caller asks only for a range that starts after the retention task's cut of old
--     records, psd.sumcall: series flag 2);
--   * each activity of a summed thing that changed in the range lies wholly inside it and
--     has one type ("*": several), so its total is what it adds there, and its last change
--     its latest there (for "_atids").
-- A user with more than RECORDS_MAX activities listed, or any activity across an edge of the
-- range or of several types, is read from the counters as any other (from_records answers
-- false, having added nothing); so is a user whose longest activity lasts more than
-- RECORDS_SPAN, without listing theirs: a dense user's (a day's activity of a change every
-- few minutes) would cross the edges, and the listing cost their read ~4% more.
local RECORDS_MAX, RECORDS_SPAN = 32, 3600
local LIMIT = tostring(RECORDS_MAX + 1)  -- a string: Redis prints a number with "%.17g"

-- add to his/los (entry ti: thing ti) the totals of the user's activities in the plan's
-- range, and note them in found (nil: no "_atids"); false, with nothing added, when the
-- records cannot answer alone
local function from_records(idx, acts, plan, his, los, found)
  local span, _, complete = span_of(acts)
  if not complete or span > RECORDS_SPAN then return false end
  local t1, t2 = plan.t1, plan.t2
  local items = redis.call('ZRANGEBYSCORE', idx, plan.s1, span == 0 and plan.s2 or t2 + span,
                           'LIMIT', '0', LIMIT)
  if #items > RECORDS_MAX then return false end
  -- per activity summed: its field, thing, aid and type, in columns (a table each costs more)
  local ids, tis, aids, types, n = {}, {}, {}, {}, 0
  for j = 1, #items do
    local thing, typ, aid, first = match(items[j], MEMBER)
    local ti = thing_of[thing]
    if ti then
      first = first + 0
      if first <= t2 then
        if typ == '*' or first < t1 then return false end
        if filter == nil or typ == filter then
          n = n + 1
          ids[n], tis[n], aids[n], types[n] = thing .. ':' .. aid, ti, aid, typ
        end
      end
    end
  end
  if n == 0 then return true end
  -- a summary's last change: an activity listed may go on past the range
  local vals, lasts = redis.call('HMGET', acts, unpack(ids)), {}
  for j = 1, n do
    if not vals[j] then return false end  -- listed, not recorded: not psd's records
    local s = cmsgpack.unpack(vals[j])
    if s[R_LAST] > t2 then return false end
    vals[j], lasts[j] = s[R_TOTAL], s[R_LAST]
  end
  for j = 1, n do
    local ti = tis[j]
    his[ti], los[ti] = add_number(his[ti], los[ti], vals[j])
    if found then note(found, aids[j], lasts[j], ti, types[j]) end
  end
  return true
end
