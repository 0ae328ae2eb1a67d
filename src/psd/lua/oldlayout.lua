-- oldlayout.lua: included where a script says "-- #include oldlayout.lua": how psd kept a
-- user's activity records before layout 3 (record.lua), for the scripts that read them
-- (activities.lua) or bring them to layout 3 (convert.lua). Such a user's {uid}:acts has
-- no field "_v"; per activity:
--   "<thing>:<aid>"         its summary, msgpack {first, last, type, changes, hour, total,
--                           hour, total, ...}: each hour (ts // 3600) with changes and its
--                           total, ascending; with a single change, the whole record
--   "<thing>:<aid>:<hour>"  that hour's changes, msgpack {ts, amount, atid, ts, ...};
--                           absent while the activity has a single change, or once the
--                           compaction dropped the hour's detail
local OLD_HOUR, OLD_TOTAL = 5, 6
local OLD_AMOUNT, OLD_ATID, OLD_SIZE = 1, 2, 3

-- an old-layout activity's changes in hour h, {ts, amount, atid, ...}, given its summary and,
-- when it has several changes, that hour's stored chunk
local function old_changes_of(summary, h, chunk)
  if summary[R_CHANGES] == 1 then
    return summary[OLD_HOUR] == h and {summary[R_FIRST], summary[OLD_TOTAL], summary[R_TYPE]}
      or {}
  end
  return chunk and cmsgpack.unpack(chunk) or {}
end
