-- counters.lua: included by write_metric.lua where it says "-- #include counters.lua" (it
-- uses that script's rows, heads, KEYS, now and the positions of a run's values and its target,
-- and limits.lua and hours.lua, included before it): what a call adds to a user's counter
-- hashes, summed per target, user and type as points come, owed to the fields when paid
-- (one HINCRBY a field however many points add to it), and taken back exactly when a point,
-- or an all-or-nothing call, is refused.
local owed, owed_keys  -- counter key -> {field -> delta, ...}; in order
local expiry  -- counter key -> Unix time it expires at (0 = never)
local roots  -- counter key -> true for the user's root hashes
-- what points owe before it is owed to fields (add_to_counters): target -> its one due,
-- or k -> a due: {k, target, atid, delta, the due of the same target and k of another
-- type made before it} (a table a level less, or two: a bulk load's every hour is a new
-- target); those, in order
local dues, due_list

-- Numbers a call passes to Redis as strings, each made once a call: Redis turns a Lua
-- number argument into its digits with a "%.17g" printf, and Lua's own conversion (a
-- concatenation) is as slow; the fields of a target's slots come as strings (ARGV[1]).
local digits  -- integer -> its decimal string
local function digits_of(x)
  local s = digits[x]
  if s == nil then
    s = string.format('%d', x)  -- exact: x is an integer within ±2^63
    digits[x] = s
  end
  return s
end

-- "<field>:<atid>", a field's twin of one type, kept from call to call (a concatenation makes
-- and hashes a new string every time; a field and a type make the same twin in every call):
-- the few fields and types a server's writes name, made again past 4,096
local twin_of
do
  local twins, made = {}, 0
  function twin_of(field, atid)
    local of_field = twins[field]
    local twin = of_field and of_field[atid]
    if twin == nil then
      if made >= 4096 then twins, made, of_field = {}, 0, nil end
      twin = field .. ':' .. atid
      if of_field == nil then twins[field] = {[atid] = twin} else of_field[atid] = twin end
      made = made + 1
    end
    return twin
  end
end

-- delta owed to a field of every type and to its twin of the type, in one hash
local function owe(key, field, twin, delta, expire_at, is_root)
  local fields = owed[key]
  if fields == nil then
    owed[key] = {[field] = delta, [twin] = delta}; owed_keys[#owed_keys + 1] = key
    expiry[key] = expire_at; roots[key] = is_root
    return
  elseif expire_at > expiry[key] then
    expiry[key] = expire_at  -- the root: a later year extends it
  end
  fields[field] = (fields[field] or 0) + delta
  fields[twin] = (fields[twin] or 0) + delta
end

-- the packed hours this call adds to (hours.lua): key -> {field -> {number -> delta}}, each
-- field's made with room for its twelve hours (as hours.lua's unpack_hours)
local owed_hours, owed_hours_keys
local function owe_hour(key, name, number, delta)
  local fields = owed_hours[key]
  if fields == nil then
    local adds = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
    adds[number] = delta
    owed_hours[key] = {[name] = adds}; owed_hours_keys[#owed_hours_keys + 1] = key
    return
  end
  local adds = fields[name]
  if adds == nil then
    adds = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
    adds[number], fields[name] = delta, adds
    return
  end
  adds[number] = (adds[number] or 0) + delta
end

-- each month's field "o" before this call and as it leaves it (hours.lua): the latest day a
-- stream has written, negative ("-5"), so that reads look for no day's hash; a positive day
-- is the open day of an earlier psd, whose hours are in its own hash. The latest day the
-- call writes hours of is marked once it is dense (more than one point of it in the call, or
-- a third hour of its half-day written) and if it is yesterday's or later: its month is then
-- ordered for reads (move_open_days), once a day for a stream. An earlier psd's open day is
-- closed by the first call that writes its month (its hours packed with the rest). Every
-- hour goes packed into its month; a day's own hash cost reads a command more than the
-- HINCRBYs saved its writes, and a stream's points are applied many at once (pending.lua).
-- The marks move only when the call has written (nothing does, for a call refused whole).
local open_before, open_after
local paid  -- what this call paid, {owed, owed_keys, packed hours}: for an undo

-- a call's start: nothing owed or paid, and each month's "o" read
local function counters_begin()
  owed, owed_keys, expiry, roots = {}, {}, {}, {}
  owed_hours, owed_hours_keys, paid = {}, {}, {}
  open_before, open_after, digits, dues, due_list = {}, {}, {}, {}, {}
  -- per month, of the call's points: the latest day, its points, its packed field of every
  -- type and of the first point's type (read with "o": most calls add to them)
  local latest, latest_count, latest_field, latest_typed = {}, {}, {}, {}
  for _, h in ipairs(heads) do
    local t = targets[rows[h + H_TARGET]]
    local expire_at = t[T_EXPIRES + 3]
    if expire_at == 0 or expire_at > now then
      local day, month = t[T_DAY], KEYS[rows[h + H_K] + 5]
      if (latest[month] or 0) < day then
        latest[month], latest_count[month] = day, 0
        latest_field[month] = t[T_PACKED]
        latest_typed[month] = twin_of(t[T_PACKED], rows[h + H_ATID])
      end
      if latest[month] == day then latest_count[month] = latest_count[month] + rows[h + H_N] end
    end
  end
  -- only a day from yesterday on is marked (a stream's): an import's older days would
  -- order their month again at every call
  local recent = day_name((now - now % 86400) / 86400 - 1)
  for month, day in pairs(latest) do
    local open, held = open_day_of(month, latest_field[month], latest_typed[month])
    local marked = open < 0 and -open or open
    open_before[month], open_after[month] = open, -marked
    if day > marked and (latest_count[month] > 1 or held >= 2)
       and string.sub(month, -6) .. string.format('%02d', day) >= recent then
      open_after[month] = -day
    end
  end
end

-- the hash of the month before a month's ({uid}:[t]mYYYYMM), by name
local function month_before(month)
  local y, m = string.sub(month, -6, -3) + 0, string.sub(month, -2) + 0
  if m == 1 then y, m = y - 1, 12 else m = m - 1 end
  return string.sub(month, 1, -7) .. string.format('%04d%02d', y, m)
end

-- the marks moved (an earlier psd's open day closed: its hours packed with the rest); a
-- month's first mark also leaves the month before at "0" (a stream has moved on: an open
-- day of an earlier psd there is closed). Then months are ordered for reads (order_month,
-- below).
local function move_open_days()
  -- A month's hash in the order reads find its fields soonest: a listpack finds a field by a
  -- scan from its first, and reads ask for a few fields each, mostly of recent days, and
  -- for "o" (a closed month: "0", not absent, which would cost a scan of every field). So
  -- "o" first, then every type's days from the latest, then their half-days from the
  -- latest, then the same of each type, then any other (plain hours of an earlier psd) as
  -- they were: the days a 30-day read subtracts from its first month's total are then
  -- within its first 31 fields, and a 7-day read's too. The hash is made again in that
  -- order, its expiry kept; one a hashtable, or larger than 1,024 fields, finds a field
  -- without a scan and is left as it is (its "o" set all the same). Done when a month's
  -- mark moves (once a day a stream), to the month before when a month has its first
  -- mark, and to a month a call writes with a later one of the same user, when it has never
  -- been (an import's, whose older days never open, once it has gone on to the next
  -- month); once a call. (A local of this function: write_metric.lua's main chunk is at
  -- Lua's 200 locals.)
  local ordered = {}
  local function order_month(month, open)
    if ordered[month] then return end
    ordered[month] = true
    local encoding = redis.call('OBJECT', 'ENCODING', month)
    if not encoding then return end  -- no hash
    if (encoding ~= 'listpack' and encoding ~= 'ziplist') or redis.call('HLEN', month) > 1024
    then  -- left as it is, but says its mark ("0": it is not looked at again)
      redis.call('HSET', month, 'o', open)
      return
    end
    local flat = redis.call('HGETALL', month)
    -- by bucket: a day's own fields at day, its half-days at 32 + day; those of a type + 64
    local buckets, rest = {}, {}
    for i = 1, #flat, 2 do
      local f = flat[i]
      local colon = string.find(f, ':', 1, true)
      local head = colon and string.sub(f, 1, colon - 1) or f
      local b
      if f == 'o' then
        b = false
      elseif string.byte(f, 1) == 104 then  -- 'h': a packed half-day
        b = 33 + math.floor(string.sub(head, 2) / 20)
      elseif tonumber(head) and head + 0 < 320 then  -- a day's own field (slot = day * 10 + thing)
        b = math.floor(head / 10)
      end
      if b then
        if colon then b = b + 64 end
        local list = buckets[b]
        if list == nil then buckets[b] = {f, flat[i + 1]} else
          list[#list + 1] = f; list[#list + 1] = flat[i + 1]
        end
      elseif b == nil then
        rest[#rest + 1] = f; rest[#rest + 1] = flat[i + 1]
      end
    end
    local args = {'o', open}
    for base = 0, 96, 32 do
      for day = 31, 1, -1 do
        local list = buckets[base + day]
        if list then for j = 1, #list do args[#args + 1] = list[j] end end
      end
    end
    for j = 1, #rest do args[#args + 1] = rest[j] end
    local expire_at = redis.call('PEXPIRETIME', month)
    redis.call('DEL', month)
    redis.call('HSET', month, unpack(args))
    if expire_at > 0 then redis.call('PEXPIREAT', month, expire_at) end
  end
  local first = {}  -- the months given their first mark
  for month, day in pairs(open_after) do
    local before = open_before[month]
    if day ~= before then
      move_open_day(month, before, day)
      order_month(month, digits_of(day))
      if before == 0 then first[#first + 1] = month end
    end
  end
  for _, month in ipairs(first) do  -- after every move: the month before may have moved too
    local last = month_before(month)
    local open = redis.call('HGET', last, 'o')
    if open ~= '0' then  -- not ordered since it closed
      if open and open + 0 > 0 then close_day(last, open + 0) end
      ordered[last] = nil  -- again if its mark moved in this call: it says "0" now
      order_month(last, '0')
    end
  end
  local written, latest = {}, {}  -- the months the call wrote; by user, their latest
  for _, h in ipairs(heads) do
    local month = KEYS[rows[h + H_K] + 5]
    local user = string.sub(month, 1, -7)
    written[month] = true
    if (latest[user] or '') < month then latest[user] = month end
  end
  for month in pairs(written) do  -- once: a month ordered before says "o" (a late point
    -- to it mostly adds to fields it has, where they are)
    if month < latest[string.sub(month, 1, -7)] and not ordered[month]
       and not redis.call('HGET', month, 'o') then
      order_month(month, '0')
    end
  end
end

-- what a day of a record (k), a thing and a type adds, owed to its fields of every type and
-- of the type in the root (its year), the year (its month) and the month (its day); t: a
-- target of that day (its hours share these)
local function owe_day(k, t, atid, delta)
  -- the root holds every year, kept until its newest year's retention ends: always added to
  local field = t[T_SLOTS]
  owe(KEYS[k + 3], field, twin_of(field, atid), delta, t[T_EXPIRES], true)
  for j = 1, 2 do
    local expire_at = t[T_EXPIRES + j]
    if expire_at == 0 or expire_at > now then
      field = t[T_SLOTS + j]
      owe(KEYS[k + 3 + j], field, twin_of(field, atid), delta, expire_at, false)
    end
  end
end

-- what an hour of a thing (target t) and a type adds, owed to its hour packed in its month
local function owe_hour_of(k, t, atid, delta)
  local expire_at = t[T_EXPIRES + 3]
  if expire_at ~= 0 and expire_at <= now then return end
  local month, name = KEYS[k + 5], t[T_PACKED]
  local number = hour_number((t[T_HOUR] - 100) % 24)
  owe_hour(month, name, number, delta)
  owe_hour(month, twin_of(name, atid), number, delta)
end

-- What points add is summed per target (an hour of a thing), record and type first, and
-- owed to the fields when paid: a user's day of points shares a few dozen of these, and
-- owing eight fields costs more than the rest of a point's Lua work (dues, due_list: above)

local function add_to_counters(k, t, atid, delta)
  local by_k = dues[t]
  if by_k == nil then
    local due = {k, t, atid, delta}
    dues[t] = due  -- the target's one due: a bulk load's every hour is a new target
    due_list[#due_list + 1] = due
    return
  end
  if by_k[2] == t then  -- its one due so far (a due names its target at 2, a k a due)
    if by_k[1] == k and by_k[3] == atid then
      by_k[4] = by_k[4] + delta
      return
    end
    by_k = {[by_k[1]] = by_k}
    dues[t] = by_k
  end
  local first = by_k[k]
  local due = first
  while due ~= nil and due[3] ~= atid do due = due[5] end  -- the (t, k)'s of other types
  if due == nil then
    due = {k, t, atid, 0, first}
    by_k[k] = due
    due_list[#due_list + 1] = due
  end
  due[4] = due[4] + delta
end

-- the dues owed to their fields: each its packed hour; consecutive dues of one record's day,
-- thing and type (a user's hours of a day, a bulk load's or a log's: k is a record's day)
-- share their root, year and month fields, owed once for them all
local function owe_dues()
  local n, count = 1, #due_list
  while n <= count do
    local due = due_list[n]
    local k, t, atid = due[1], due[2], due[3]
    local thing, sum = t[T_THING], 0
    repeat
      owe_hour_of(k, due[2], atid, due[4])
      sum, n = sum + due[4], n + 1
      due = due_list[n]
    until due == nil or due[1] ~= k or due[3] ~= atid or due[2][T_THING] ~= thing
    owe_day(k, t, atid, sum)
  end
  dues, due_list = {}, {}
end

-- take back a payment (or where it stopped: at `key` and `field`, added or not, before
-- the packed hours were written)
local function unpay(dues, stop_key, stop_field, added)
  for _, due in ipairs(dues[3] or {}) do  -- {key, field, its hours, its value before}
    packed_set(due[1], due[2], due[4])
  end
  for _, key in ipairs(dues[2]) do
    for field, delta in pairs(dues[1][key]) do
      -- the stop first: a root's field of 0 is paid too, and may be where it stopped
      if key == stop_key and field == stop_field then
        if added and delta ~= 0 then take_back(key, field, delta) end
        return
      end
      if delta ~= 0 then take_back(key, field, delta) end
    end
  end
end

-- take back every payment of the call, the last first: a packed half-day's value before a
-- payment is put back, and a field two payments added to ends as it was before the first
local function unpay_all()
  for i = #paid, 1, -1 do unpay(paid[i]) end
  paid = {}
end

-- the packed hours owed, their sums worked out before anything is paid: {key, field, its
-- hours, its value before}, or nil if one would leave ±HOUR_LIMIT
local function hours_due()
  local due = {}
  for _, key in ipairs(owed_hours_keys) do
    for name, adds in pairs(owed_hours[key]) do
      local hours, old = packed_sum(key, name, adds)
      if hours == nil then return nil end
      due[#due + 1] = {key, name, hours, old}
    end
  end
  return due
end

-- pay what is owed, or nothing (false) if a field would leave ±2^62 (a packed hour ±2^53:
-- false and "h", apply.lua's letter of that refusal, so that its reason names the hour's);
-- a new field may be a new hash: give it its expiry; the root only ever extends it. A root
-- is written even where its user's points net to 0 (a field of 0): it must be there while
-- any counter of theirs is (maintain.lua's root says why)
local function pay_counters()
  owe_dues()
  local due = hours_due()
  if due == nil then return false, 'h' end
  local fresh = {}
  for _, key in ipairs(owed_keys) do
    for field, delta in pairs(owed[key]) do  -- unpay goes in the same order
      if delta ~= 0 or roots[key] then
        local n = redis.pcall('HINCRBY', key, field, digits_of(delta))  -- add(), inlined
        if type_of(n) ~= 'number' or n >= COUNTER_LIMIT or n <= -COUNTER_LIMIT then
          local no, added = refused(key, field, n)
          if no then unpay({owed, owed_keys}, key, field, added); return false end
        end
        if n == delta then fresh[key] = true end
      end
    end
  end
  put_packed_due(due)
  paid[#paid + 1] = {owed, owed_keys, due}
  for key, _ in pairs(fresh) do
    local expire_at = expiry[key]
    if expire_at > 0 then
      redis.call('EXPIREAT', key, expire_at, 'NX')
      if roots[key] then redis.call('EXPIREAT', key, expire_at, 'GT') end
    end
  end
  return true
end
