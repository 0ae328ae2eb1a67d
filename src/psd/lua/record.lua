-- record.lua: included where a script says "-- #include record.lua": the layout of an
-- activity's record in {uid}:acts (psd/lua/write_metric.lua writes it, sum.lua and
-- maintain.lua read it), named once here.
--   "<thing>:<aid>"         its summary, msgpack {first, last, type, changes, hour, total,
--                           hour, total, ...}: first and last change (Unix s), its type ("*"
--                           once it has had several), its number of changes, then each hour
--                           (ts // 3600) with changes and that hour's total, ascending. With a
--                           single change the summary is the whole record: first is its
--                           time, type its atid, and its hour's total its amount.
--   "<thing>:<aid>:<hour>"  that hour's changes, msgpack {ts, amount, atid, ts, ...}; absent
--                           while the activity has a single change
-- Positions are named by constants, not read through functions: the scripts read records in
-- their hottest loops, where a function call per field would cost more than the read.
local R_FIRST, R_LAST, R_TYPE, R_CHANGES = 1, 2, 3, 4
-- the first hour and its total; later (hour, total) pairs follow two by two
local R_HOUR, R_TOTAL = 5, 6
-- a change at position c of an hour's changes: its ts at c, amount at c + C_AMOUNT, atid at
-- c + C_ATID; the next change at c + C_SIZE
local C_AMOUNT, C_ATID, C_SIZE = 1, 2, 3

-- the hour (ts // 3600) of a Unix time: a record's hours and counter fields are counted in it
local function hour_of(ts) return math.floor(ts / 3600) end
