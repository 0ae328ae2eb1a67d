-- lone.lua: included by sum.lua where it says "-- #include lone.lua" (it uses that script's
-- helpers and activities.lua's series_windows): a call reading one series of one thing
-- without its "_atids" (psd.sumcall.lone_call: the reads most made, with windows or of whole
-- hours). Its argument is a flat run of msgpack values (sum.lua's header), read in place:
-- cmsgpack builds a nested list's tables element by element, growing each, and that, with
-- the tables a general call builds, cost more than the reads themselves. Its sum is a hi, lo
-- pair, answered as one integer when hi is 0 (sum.lua).

-- whether child is in the flat ranges {lo, hi, ...} at a[r + 1] to a[r + a[r]]
local function lone_wanted(a, r, child)
  for i = r + 1, r + a[r], 2 do
    if child >= a[i] and child <= a[i + 1] then return true end
  end
  return false
end

-- add a hash read whole: its counter fields of the thing in range (see add_parsed)
local function lone_parsed(flat, a, r, thing, hi, lo)
  for j = 1, #flat, 2 do
    local f, slot = flat[j], nil
    if byte(f, 1) > 57 then  -- past '9': a month's packed hours or open day
    elseif filter == nil then
      if not find(f, ':', 1, true) then slot = f + 0 end  -- not a per-type field
    else
      local s = find(f, ':', 1, true)
      if s and sub(f, s + 1) == filter then slot = sub(f, 1, s - 1) + 0 end
    end
    if slot and slot % 10 == thing and lone_wanted(a, r, (slot - thing) / 10) then
      hi, lo = add(hi, lo, flat[j + 1])
    end
  end
  return hi, lo
end

-- add hours first to last (1-12) of a packed half-day's value; a fixed one's (within ±2^31
-- each) summed first
local function lone_packed(raw, first, last, hi, lo)
  if byte(raw, 1) == FIXED_BYTE then return add_number(hi, lo, fixed_sum(raw, first, last)) end
  local hours = unpack_hours(raw)
  for h = first, last do
    local x = hours[h]
    if x then hi, lo = add_number(hi, lo, x) end
  end
  return hi, lo
end

-- add the hours of a month's open day `open` (an earlier psd's: hours.lua) its picks ask
-- for (by three after a[p]: name number, first and last hour; the slot of each packed
-- name's first hour after a[b]), as a general call does (sumhours.lua's sum_open_day, given
-- the picks and bases as a group's): such a day is rare now, and its names are made here,
-- not sent with every read
local function lone_open_day(key, a, p, b, open, hi, lo)
  local picks, bases = {}, {}
  for i = p + 1, p + a[p], 3 do
    local n, number = #picks, a[i]
    picks[n + 1], picks[n + 2], picks[n + 3], picks[n + 4] = number, 1, a[i + 1], a[i + 2]
    if number < 0 then number = -number end
    bases[number] = a[b + number]
  end
  local his, los = {hi}, {lo}
  sum_open_day(key, {nil, picks, nil, nil, bases}, open, his, los)
  return his[1], los[1]
end

-- add a month's hours (its part after a[h]: `count` names, then picks, days, bases) packed
-- in its hash, then those of an earlier psd's open day when it is one of the days: their
-- values from vals[off + 1] on when they came with the group's fields, else (vals nil)
-- asked for here
local function lone_hours(key, a, h, count, vals, off, hi, lo)
  if vals == nil then vals, off = redis.call('HMGET', key, unpack(a, h + 1, h + count)), 0 end
  local p = h + count + 1
  local d = p + a[p] + 1
  for i = p + 1, p + a[p], 3 do
    local number = a[i]
    if number > 0 then
      local raw = vals[off + number]
      if raw then hi, lo = lone_packed(raw, a[i + 1], a[i + 2], hi, lo) end
    else  -- a day's other hours, taken off its field (psd.hourparts.day_for_hours)
      local raw = vals[off - number]
      if raw then
        local h2, l2 = lone_packed(raw, a[i + 1], a[i + 2], 0, 0)
        hi, lo = carry(hi - h2, lo - l2)
      end
    end
  end
  local open = vals[off + count]
  if open then
    open = open + 0
    for i = d + 1, d + a[d] do
      if a[i] == open then return lone_open_day(key, a, p, d + a[d], open, hi, lo) end
    end
  end
  return hi, lo
end

-- where a group's month's hours (`count` names after a[h], "o" the last; 0: none) end:
-- their last base (one a packed name)
local function hours_end(a, h, count)
  if count == 0 then return h end
  local d = h + count + 1
  d = d + a[d] + 1
  return d + a[d] + count - 1
end

-- add a counter hash's fields (the child ranges at a[r], how many names at a[f] and how many
-- of its month's hours' names after it, then the names, the hours' right after them;
-- negative ranges subtract them: sum_hash) and its month's hours (after a[h]), in one HMGET
-- of the names as they come (sum_hash says when a hash is read whole instead)
local function lone_group(key, a, r, f, h, thing, hi, lo)
  local count, held = a[f], a[f + 1]
  if a[r] == 0 then  -- a month's packed hours only
    if held == 0 then return hi, lo end
    return lone_hours(key, a, h, held, nil, 0, hi, lo)
  end
  local minus = a[r + 1] < 0
  if not minus and (count > SMALL or count == 0) then
    local n = length_of(key)
    if n == 0 then return hi, lo end  -- nor its hours
    if 3 * n <= count or count == 0 then
      hi, lo = lone_parsed(whole_of(key), a, r, thing, hi, lo)
      if held == 0 then return hi, lo end
      return lone_hours(key, a, h, held, nil, 0, hi, lo)
    end
  end
  local vals = redis.call('HMGET', key, unpack(a, f + 2, h + held))
  if minus then
    local h2, l2 = add_values(vals, count, 0, 0)
    hi, lo = carry(hi - h2, lo - l2)
  else
    hi, lo = add_values(vals, count, hi, lo)
  end
  if held == 0 then return hi, lo end
  return lone_hours(key, a, h, held, vals, count, hi, lo)
end

-- things, thing_index and thing_of of a call of one thing (the same for every such call)
local lone_things = {}
-- a lone call's sum as windows and pending points add to it (series_windows, add_pending:
-- a table each of one element), the same two tables for every call
local lone_his, lone_los = {0}, {0}

-- one call: KEYS one counter hash per group, then {uid}:idx, {uid}:acts and {uid}:p; a its
-- head unpacked (read, never changed: sum.lua keeps it), args[2] its windows
local function lone_sum(keys, args, a)
  KEYS, filter = call_keys(keys, args), a[1] ~= '' and a[1] or nil
  log_filter = filter and log_id(filter)
  local thing = a[2]
  local set = lone_things[thing]
  if set == nil then  -- the thing's number, and its code in a log (pending.lua)
    set = {{thing}, {[thing] = 1, [thing + LOG_NUMBERS] = 1}, {[a[3]] = 1}}
    lone_things[thing] = set
  end
  things, thing_index, thing_of = set[1], set[2], set[3]
  last_key, last_len, last_flat = nil, nil, nil
  forget_spans()
  -- the windows first: a user with a log and no changes on their days may have nothing
  -- kept but the log, which then answers alone (the counters would cost ~4 commands)
  local w = {cmsgpack.unpack(args[2])}  -- the windows, then the range's first and last second
  local n, his, los, k = w[1], lone_his, lone_los, a[4] + 1
  local t, log = 1 + 7 * n, pending_log(KEYS[k + 2])
  his[1], los[1] = 0, 0
  if not series_windows(KEYS[k], KEYS[k + 1], n, w, 1, w, 1 + 7 * (n - 1), his, los, log) then
    local hi, lo, i = his[1], los[1], 5
    for g = 1, a[4] do
      local r = i
      local f = r + a[r] + 1
      local h = f + a[f] + 1  -- its last name: the hours' names follow
      hi, lo = lone_group(KEYS[g], a, r, f, h, thing, hi, lo)
      i = hours_end(a, h, a[f + 1]) + 1
    end
    his[1], los[1] = hi, lo
  end
  add_pending(log, w[t + 1], w[t + 2], his, los, nil)
  if his[1] == 0 then return los[1] end  -- one integer: a reply's tables cost more than the sum
  return {his[1], los[1]}
end
