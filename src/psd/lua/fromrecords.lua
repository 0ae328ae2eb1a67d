-- fromrecords.lua: included by sum.lua where it says "-- #include fromrecords.lua" (after
-- activities.lua, whose span_of's memory it fills, and atids.lua, whose note it uses; it
-- uses that script's thing_of,
-- filter and hilo.lua): a user's sums and "_atids" over a range read from their activity
-- records alone, when those hold the answer whole.
--
-- A sparse user's activities in a range are a few index members and their summaries: one
-- index range and one HMGET, where their counters and the windows at the range's edges
-- cost ~9 commands (a /v1/mumt_query of 100 ids and 3 things is ~900). The records answer
-- exactly when
--   * they hold every change the user's counters do: "0:c" (record.lua), written with the
--     user's first record when they had no counters, so no change was ever counted without
--     being recorded; and every activity that changed in the range is still recorded: the
--     range starts after the last change of the newest activity the retention task dropped
--     (the field's value). Records an earlier psd wrote ("_c", no mark) answer only a range
--     that starts after the task's cut of old records (psd.sumcall: series flag 2; flag 3,
--     a range older than the cut, is answered only by a mark);
--   * each activity of a summed thing that changed in the range lies wholly inside it and
--     has one type ("*": several), so its total is what it adds there, and its last change
--     its latest there (for "_atids").
-- A user with neither records nor counters answers nothing from them (what they have waits
-- in their log, which the caller adds). For a user with a log, that is asked as soon as
-- the index lists nothing: one EXISTS, where the HMGET would find nothing either.
-- A user with more than RECORDS_MAX activities listed, or any activity across an edge of the
-- range or of several types, is read from the counters as any other (from_records answers
-- false, having added nothing); so is a user whose longest activity lasts more than
-- RECORDS_SPAN (the listing reaches that far past the range only). A dense user's (a day's
-- activity of a change every few minutes) first member listed began before the range:
-- they are sent to the counters having cost one index range.
local RECORDS_MAX, RECORDS_SPAN = 32, 3600
local LIMIT = tostring(RECORDS_MAX + 1)  -- a string: Redis prints a number with "%.17g"
-- an index member's thing, activity id and first change (its type is the summary's)
local LISTED = '^(%d+):[^:]+:([^:]+):(%d+)$'
local unpack_limit = cmsgpack.unpack_limit

-- A call's columns of the activities its last from_records answered with (their aid, type,
-- last change and thing index), and its scratch lists: made again by every call
-- (forget_records), filled again by every user, so a user costs no table of their own.
local rec_ids, rec_tis, rec_aids, rec_lasts, rec_types, rec_words
local function forget_records()
  rec_ids, rec_tis, rec_aids, rec_lasts, rec_types, rec_words = {}, {}, {}, {}, {}, {}
end

-- add to his/los (entry ti: thing ti) the totals of the user's activities in the plan's
-- range and answer how many there are (in the rec_ columns); false, with nothing added,
-- when the records cannot answer alone; 0 and true for a user with a log (logged true)
-- and nothing kept, whose log answers alone (logged KEPT: they have a log, and something
-- kept, as sum_one asked). Two commands: the index lists what changed from
-- t1 to an hour past t2 (the longest activity the records answer for: any listed past t2
-- that began by t2 crosses the edge), and one HMGET asks for their summaries with the
-- records' span, layout and completeness (activities.lua's span_of, which it remembers).
-- marked: the range starts before the task's cut, so only a mark says the records are whole.
-- A summary's first five values are read in place (lists.lua's list_start): a table of
-- them costs more.
local KEPT = 'kept'
local function from_records(idx, acts, plan, his, los, logged, marked)
  local t1, t2 = plan.t1, plan.t2
  local upto = plan.upto
  if upto == nil then
    upto = tostring(t2 + RECORDS_SPAN)
    plan.upto = upto
  end
  local items = redis.call('ZRANGEBYSCORE', idx, plan.s1, upto, 'LIMIT', '0', LIMIT)
  if #items > RECORDS_MAX then return false end
  if #items == 0 and logged == true and nothing_kept(acts) then return 0, true end
  -- the fields to ask for, then per activity begun by t2 its thing index and aid
  local ids, tis, aids, n = rec_ids, rec_tis, rec_aids, 0
  ids[1], ids[2], ids[3], ids[4] = SPAN_FIELD, LAYOUT_FIELD, WHOLE.legacy, WHOLE.field
  for j = 1, #items do
    local thing, aid, first = match(items[j], LISTED)
    local ti = thing_of[thing]
    if ti then
      first = first + 0
      if first <= t2 then
        -- begun before t1: across the edge (a dense user's day, found without their span)
        if first < t1 then return false end
        n = n + 1
        ids[n + 4], tis[n], aids[n] = thing .. ':' .. aid, ti, aid
      end
    end
  end
  local vals = redis.call('HMGET', acts, unpack(ids, 1, n + 4))
  if vals[2] ~= LAYOUT then return #items == 0 and not logged and nothing_kept(acts) and 0 end
  local span, mark = vals[1] and vals[1] + 0 or 0, vals[4]
  span_key, span_value, span_current = acts, span, true
  if mark then
    if t1 <= mark + 0 then return false end
  elseif marked or vals[3] ~= '1' then
    return false
  end
  if span > RECORDS_SPAN then return false end
  -- each summary's total, last change and type (those of another type dropped)
  local lasts, types, m = rec_lasts, rec_types, 0
  for j = 1, n do
    local raw = vals[j + 4]
    if not raw then return false end  -- listed, not recorded: not psd's records
    local _, _, last, typ, _, total = unpack_limit(raw, 5, list_start(raw))
    if typ == '*' or last > t2 then return false end
    if filter == nil or typ == filter then
      m = m + 1
      vals[m], lasts[m], types[m], tis[m], aids[m] = total, last, typ, tis[j], aids[j]
    end
  end
  for j = 1, m do
    local ti = tis[j]
    his[ti], los[ti] = add_number(his[ti], los[ti], vals[j])
  end
  return m
end

-- note the m activities of the last from_records in found
local function note_records(found, m)
  for j = 1, m do note(found, rec_aids[j], rec_lasts[j], rec_tis[j], rec_types[j]) end
end

-- the m activities of the last from_records as "aid type aid type ..." (types_only: "type
-- type ..."), each aid once with the type note would give it: its latest change's, at one
-- second the later thing's (one activity of several things has a summary a thing); few
-- enough to compare pairwise
local function records_atids(m)
  local aids, lasts, tis, words, w = rec_aids, rec_lasts, rec_tis, rec_words, 0
  for j = 1, m do
    local aid, seen = aids[j], false
    for i = 1, j - 1 do
      if aids[i] == aid then
        seen = true
        break
      end
    end
    if not seen then
      local best = j
      for i = j + 1, m do
        if aids[i] == aid and (lasts[i] > lasts[best]
            or lasts[i] == lasts[best] and tis[i] > tis[best]) then
          best = i
        end
      end
      if types_only then
        words[w + 1], w = rec_types[best], w + 1
      else
        words[w + 1], words[w + 2], w = aid, rec_types[best], w + 2
      end
    end
  end
  return table.concat(words, ' ', 1, w)
end
