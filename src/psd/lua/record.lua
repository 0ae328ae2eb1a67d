-- record.lua: included where a script says "-- #include record.lua": the layout of a
-- user's activity records (psd/keys.py names it), named once here. The scripts read records
-- in their hottest loops, so positions are constants, not functions.
--
-- {uid}:acts, a hash: per activity its summary, field "<thing>:<aid>", msgpack
--   {first, last, type, changes, total, day, total, changes, day, total, changes, ...}:
--   first and last change (Unix s), its type ("*" once it has had several), its number of
--   changes and their total; then, once it has two changes or more, each UTC day
--   (ts // 86400) it changed in with that day's total and number of changes, ascending. A
--   single change is its summary alone (first = last is its time, type its atid, total its
--   amount); from the second on, every change is also in the user's changes of its day.
--   Field "_span": the longest first-to-last distance of any activity; "_v": "3", the
--   layout (a user whose records an earlier psd wrote has none: oldrecords.lua); "_x": when
--   the hash and its index were last given their expiry (recording.lua); "0:c" when the
--   records hold every change the user's counters do but those of the activities the
--   retention task dropped, whose last changes were at or before its value ("-1": none
--   yet; written with the first record, when the user had no counters: fromrecords.lua).
--   The index then lists "0:_:c:0" at score -1, before every activity: an earlier psd's
--   task, which drops each member up to its cut and the field its member names without
--   marking it, drops that field with it, and the records no longer claim to be whole.
--   "_c": "1", from an earlier psd, as "0:c" without a mark (its drops were never later
--   than the state's lifetime ago); the task turns it into "0:c". "_d" where the records
--   are not whole (no "0:c"): they may lack activities whose last changes were at or
--   before its value — those whose state lapsed (written with the first record of a user
--   with counters and no state: the state's lifetime before then) and those the retention
--   task dropped since (it raises it). A diffadd whose window starts at or before "0:c" or
--   "_d" may be of one of those, sent again (with no record, or one an increment of its
--   aid made since): it is stale.
-- {uid}:cYYYYMMDD, a hash a UTC day: the changes of the user's activities that have two
--   changes or more (changes.lua), kept for the minute retention after the day ends.
local R_FIRST, R_LAST, R_TYPE, R_CHANGES, R_TOTAL = 1, 2, 3, 4, 5
-- the first day of a summary's day list; its total and changes follow, then the next day
local R_DAYS, D_TOTAL, D_CHANGES, D_SIZE = 6, 1, 2, 3
local LAYOUT_FIELD, LAYOUT = '_v', '3'
local SPAN_FIELD, EXPIRED_FIELD = '_span', '_x'
-- the fields and member of completeness (a table: a script's chunk holds 200 locals at most)
-- (and, for a call of write_metric.lua, its users' "_d" as it found or set them, by acts
-- key, and those it sets when it writes the user's records: recording.lua)
local WHOLE = {field = '0:c', member = '0:_:c:0', score = '-1', legacy = '_c', drops = '_d',
               lapses = nil, unmarked = nil}

-- the hour and the UTC day (Unix time // 3600, // 86400) of a Unix time
local function hour_of(ts) return math.floor(ts / 3600) end
local function day_of(ts) return math.floor(ts / 86400) end

-- whether change (ts, typ) comes after (best, best_typ) as an activity's latest (best nil:
-- none yet): the later second, and at one second the greater type (ids are non-negative
-- decimal strings, compared as numbers by length, then by digit: past 2^53 a double is not
-- exact)
local function later_change(ts, typ, best, best_typ)
  if best == nil or ts > best then return true end
  if ts < best then return false end
  return #typ > #best_typ or (#typ == #best_typ and typ > best_typ)
end
