-- oldreads.lua: included by sum.lua before activities.lua (it uses that script's things,
-- thing_of, filter, carry and match): reading the activity records of a user an earlier psd
-- wrote (oldlayout.lua), until a write or the compaction task brings them to layout 3
-- (convert.lua).

-- add to his/los the changes in some windows of one hour (pairs {w1, w2} of ws from first to
-- last, ascending) of the activities in items, index members of activities whose last change
-- is at or after the first window's start, for a user whose records an earlier psd wrote
-- (oldlayout.lua): window i (from 0) of thing ti adds to entry i * #things + ti
local function old_add_windows(items, acts, ws, first, last, hour, his, los)
  local h, latest, width = hour_of(ws[first]), ws[last], #things
  for j = 1, #items do
    local thing, aid, first_change = match(items[j], '^(%d+):[^:]+:([^:]+):(%d+)$')
    local ti = thing_of[thing]
    if ti and first_change + 0 <= latest then
      local id = thing .. ':' .. aid
      local vals = redis.call('HMGET', acts, id, id .. ':' .. hour)
      -- an index entry whose state expired first is skipped, not trusted
      if vals[1] then
        local changes = old_changes_of(cmsgpack.unpack(vals[1]), h, vals[2])
        for c = 1, #changes, OLD_SIZE do
          local ts = changes[c]
          if filter == nil or changes[c + OLD_ATID] == filter then
            for w = first, last, 2 do
              if ts >= ws[w] and ts <= ws[w + 1] then
                local at = (w - first) / 2 * width + ti
                his[at], los[at] = carry(his[at], los[at] + changes[c + OLD_AMOUNT])
              end
            end
          end
        end
      end
    end
  end
end

-- the type of an activity's latest change in [t1, t2] (after the filter): hours backwards
-- (oldlayout.lua)
local function old_latest_change(acts, id, summary, t1, t2)
  for i = #summary - 1, OLD_HOUR, -2 do
    local h = summary[i]
    if h * 3600 <= t2 and h * 3600 + 3599 >= t1 then
      local chunk = summary[R_CHANGES] > 1 and redis.call('HGET', acts, id .. ':' .. h) or nil
      local changes = old_changes_of(summary, h, chunk)
      local best, best_typ
      for c = 1, #changes, OLD_SIZE do
        local ts, t = changes[c], changes[c + OLD_ATID]
        if ts >= t1 and ts <= t2 and (filter == nil or t == filter)
            and later_change(ts, t, best, best_typ) then
          best, best_typ = ts, t
        end
      end
      if best then return best, best_typ end
    end
  end
  return nil
end

