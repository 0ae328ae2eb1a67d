-- convert.lua: included by write_metric.lua and maintain.lua (after record.lua, changes.lua,
-- oldlayout.lua and daystate.lua): bring a user's activity records from the layout an
-- earlier psd wrote (oldlayout.lua) to layout 3 (record.lua), atomically (one script call),
-- so that nothing reads a half-converted user: a write converts a user before it adds to
-- their records, the compaction task every user it finds (psd/maintenance.py). Sums are
-- unchanged: every change kept moves to its day's changes (those past the retention are
-- not kept, as the compaction would have dropped them), and a day some of whose changes were
-- already dropped counts -1 changes (an update that needs them is stale, as before).

-- the old summary of activity `id` as a layout-3 summary; its changes go to their days
local function convert_activity(acts, id, s, chunks)
  local thing, aid = string.match(id, '^(%d+):(.+)$')
  if s[R_CHANGES] == 1 then return {s[R_FIRST], s[R_LAST], s[R_TYPE], 1, s[OLD_TOTAL]} end
  local new, entries, total = {s[R_FIRST], s[R_LAST], s[R_TYPE], s[R_CHANGES], 0}, {}, 0
  for i = OLD_HOUR, #s, 2 do
    local h, sum = s[i], s[i + 1]
    local day = math.floor(h / 24)
    local e = entries[day]
    if e == nil then
      e = {day, 0, 0}
      entries[day] = e
    end
    e[2], total = e[2] + sum, total + sum
    local name = id .. ':' .. h
    local chunk = chunks[name]
    if chunk == nil or not kept_day(day) then
      e[3] = -1
    else
      local changes = cmsgpack.unpack(chunk)
      local st = day_state(acts, day)
      for c = 1, #changes, OLD_SIZE do
        add_change(st, thing + 0, aid, changes[c + OLD_ATID], changes[c],
                   changes[c + OLD_AMOUNT])
      end
      if e[3] >= 0 then e[3] = e[3] + #changes / OLD_SIZE end
    end
  end
  local order = {}
  for day, _ in pairs(entries) do order[#order + 1] = day end
  table.sort(order)
  for _, day in ipairs(order) do
    local e = entries[day]
    local n = #new
    new[n + 1], new[n + 2], new[n + 3] = e[1], exact(e[2]) and e[2] or RECORD_LIMIT, e[3]
  end
  -- psd kept each hour's total within ±2^53, not their sum: a total past it is kept as
  -- 2^53, which no window sum or change accepts (refused, never rounded)
  new[R_TOTAL] = exact(total) and total or RECORD_LIMIT
  return new
end

-- convert every activity of the user whose state is `acts`; returns how many. Old hour
-- fields whose activity is gone are dropped with the rest.
local function convert_user(acts)
  local flat = redis.call('HGETALL', acts)
  local summaries, chunks, gone = {}, {}, {}
  for i = 1, #flat, 2 do
    local f = flat[i]
    if string.byte(f, 1) ~= 95 then  -- not "_span"
      if string.find(f, ':[^:]*:') then  -- "<thing>:<aid>:<hour>"
        chunks[f] = flat[i + 1]
        gone[#gone + 1] = f
      else
        summaries[f] = flat[i + 1]
      end
    end
  end
  local outer, outer_touched = days, days_touched  -- this user's days are written now
  singles.unhinted[acts] = true
  days, days_touched = {}, {}
  local fields, count = {LAYOUT_FIELD, LAYOUT}, 0
  for id, raw in pairs(summaries) do
    local new = convert_activity(acts, id, cmsgpack.unpack(raw), chunks)
    fields[#fields + 1], fields[#fields + 2] = id, cmsgpack.pack(new)
    count = count + 1
  end
  save_days()
  days, days_touched = outer, outer_touched
  for i = 1, #gone, 1000 do
    redis.call('HDEL', acts, unpack(gone, i, math.min(i + 999, #gone)))
  end
  hset_all(acts, fields)
  return count
end
