#!lua flags=no-writes,allow-cross-slot-keys
-- sum.lua: sum many series over their ranges in one call — a series is a user (several of
-- their things at once) or a global counter — and optionally list the activities that
-- changed in each range (the "_atids").
--
-- A metric range is read from counters for its whole hours and more, and from the
-- activities' records for the partial hours at its edges (its "windows"); see psd/keys.py.
-- ARGV[1]  msgpack {want_atids (0|1|2: 2 answers the types alone), atid ("" = every type), things, thing_strings, plans,
--          series} (psd.scriptargs.SumArg names each part; psd.sumcall builds it): things are
--          numbers (0 for global counters), thing_strings the same as decimal strings (as in
--          index members); a plan is {t1, t2, s1, s2, readers, groups,
--          windows, suffixes}: its range as numbers and as strings (numbers go to redis.call as the
--          caller's strings: converting a Lua number costs more than most reads), how many
--          series read it, per group (one counter hash) {{lo, hi, ...} child ranges (negative,
--          {-lo, -hi, ...}: its fields are subtracted, psd.keys.by_month_totals), {field
--          names to ask for, thing by thing} (names built by the caller; none for a group too
--          wide to ask for by name), for a month of a user's metrics its hours packed and in
--          its open day's hash (psd.scriptargs.HoursArg; hours.lua: a pick's name number
--          negative subtracts its hours, psd.hourparts.day_for_hours)}, per window {start,
--          end, start string, end string, hour string, day string (YYYYMMDD), hour of the
--          day string}; series is {plan number, flag, ...} in KEYS order: flag 1 if its
--          activity keys follow, 2 if they do and its records may answer alone
--          (fromrecords.lua: a user's range starting after the cut of old records), 3 if
--          they may when they mark what was dropped (a range starting before that cut).
--          One unpack builds all of it at C speed (about half the cost of as many ARGV).
--          An optional 7th element {breakdown plans, plan number of each breakdown in KEYS
--          order} lists breakdowns (psd/breakdown.py: a series of buckets of one user); a
--          plan is {per counter hash its field names, child by child and thing by thing
--          within a child; its windows hour by hour, each hour {first start string, last end
--          string, last end, hour string, start, end, start, end, ...}; edges; spans; per
--          counter hash its month's hours or nil, as a group's, with field positions for
--          targets; per counter hash how many fields to ask for; the buckets' boundaries}: edges and spans are runs {first, last, ...} of term numbers, a negative
--          first subtracting the run (terms: the hashes' children, then the windows).
--          Or, for one series of one thing without its atids (psd.scriptargs.lone_packb),
--          two flat runs of msgpack values, not lists (lone.lua reads them), ARGV[1] its
--          head (kept unpacked: lone_heads, below) and ARGV[2] its windows: atid ("" = every
--          type), thing, thing string, group count, per group {count, child ranges...} (as
--          a group's, negative ones subtracted), how many field names, how many names of its
--          month's hours (0: none), the field names, the hours' packed names and "o" (one
--          HMGET asks for them as they come), then with hours {count, picks by three: name
--          number (negative: subtracted), first and last hour...}, {count, days...}, then
--          per packed name the slot of its first hour; ARGV[2]: the window count and seven
--          values a window, as above; then the range's first and last second (numbers: its
--          pending points).
-- KEYS     per series its pending log {uid}:p (pending.lua; a global counter's names no key):
--          its other keys are that less its last letter (its prefix) and a suffix: per
--          group of its plan the plan's suffix (a plan's 8th element lists them), then,
--          when flagged, idx and acts, each made when the series reads it (a user with a
--          log alone reads two of them; a key named costs the caller and the server more
--          than one made here); then per breakdown its counter hashes, then, when it has
--          windows, {uid}:idx and {uid}:acts, then {uid}:p (a flat run: its counter hashes,
--          then {uid}:idx, {uid}:acts and {uid}:p)
-- Returns per series {{hi, lo, hi, lo, ...}[, "aid atid aid atid ..."]} (want_atids 2:
-- "atid atid ...", one an activity, as /v1/mumt_query answers them): one hi, lo per
-- thing; the exact sum is hi * 10^15 + lo (Lua numbers are doubles, exact below 2^53 only);
-- then per breakdown {hi, lo, ...}: per bucket one hi, lo per thing. A call of series
-- without breakdowns answers one flat list, {"f", hi, lo, ...}: its series' hi, lo per
-- thing one after the other, or with "_atids", {"a", hi, lo, ..., "aid atid ...", ...}; a
-- flat run (lone.lua) answers its sum alone, an integer when hi is 0, else {hi, lo}: a
-- reply's tables cost more than the sum.
-- Numeric strings are converted by arithmetic ("17" + 0), not tonumber(), which parses
-- twice (Lua 5.1).
-- #include record.lua
-- #include changes.lua
-- #include oldlayout.lua
-- #include hours.lua
local WRITES = false
-- #include keys.lua
local find, sub, match, byte = string.find, string.sub, string.match, string.byte
-- #include hilo.lua
-- at most this many fields are asked for by name without looking at the hash's size first
local SMALL = 8

-- What one call reads, set by begin() (the script's functions are made once per server when
-- it runs as a Redis Function, so nothing of a call may outlive it): its keys, the request,
-- its type filter; things[ti] is a thing's number, thing_index maps it back to ti, thing_of
-- its decimal string; its plans.
local KEYS, request, want_atids, types_only, filter, things, thing_index, thing_of, plans

local function wanted(ranges, child)
  for i = 1, #ranges, 2 do
    if child >= ranges[i] and child <= ranges[i + 1] then return true end
  end
  return false
end

-- field name -> (its position - 1) // per + 1 among the g-th hash's wanted fields, built
-- once per plan and hash, kept in lookups (a multi-user read shares it): one table lookup
-- per field of a hash read whole. A plain series asks for a field's thing (its fields come
-- thing by thing, per = #fields / #things), a breakdown for its position (per = 1).
local function lookup_of(lookups, g, fields, per)
  local lookup = lookups[g]
  if lookup == nil then
    lookup = {}
    for j = 1, #fields do lookup[fields[j]] = math.floor((j - 1) / per) + 1 end
    lookups[g] = lookup
  end
  return lookup
end

-- a hash read whole with no field names to match (a group too wide to name): parse each
-- counter field (its name starts with a digit: not a month's packed hours or open day)
local function add_parsed(flat, ranges, his, los)
  for j = 1, #flat, 2 do
    local f, slot = flat[j], nil
    if byte(f, 1) > 57 then  -- past '9'
    elseif filter == nil then
      if not find(f, ':', 1, true) then slot = f + 0 end  -- not a per-type field
    else
      local s = find(f, ':', 1, true)
      if s and sub(f, s + 1) == filter then slot = sub(f, 1, s - 1) + 0 end
    end
    if slot then
      local thing = slot % 10
      local ti = thing_index[thing]
      if ti and wanted(ranges, (slot - thing) / 10) then
        his[ti], los[ti] = add(his[ti], los[ti], flat[j + 1])
      end
    end
  end
end

-- the last hash looked at, its length and (once read) its fields: consecutive series of one
-- user (a leaderboard's parts before and after compare_at) often read the same hash whole
local last_key, last_len, last_flat
local forget_spans  -- activities.lua's
local function length_of(key)
  if key ~= last_key then
    last_key, last_len, last_flat = key, redis.call('HLEN', key), nil
  end
  return last_len
end
local function whole_of(key)  -- after length_of(key)
  if last_flat == nil then last_flat = redis.call('HGETALL', key) end
  return last_flat
end

-- ask a hash for fields (the first count named thing by thing, as many a thing, then any
-- more) and add the first count to his/los (subtract them: minus); the reply
local function add_asked(key, fields, count, his, los, minus)
  local vals, width = redis.call('HMGET', key, unpack(fields)), count / #things
  if width == count then  -- one thing: every field adds to its sum
    if minus then
      local h2, l2 = add_values(vals, count, 0, 0)
      his[1], los[1] = carry(his[1] - h2, los[1] - l2)
    else
      his[1], los[1] = add_values(vals, count, his[1], los[1])
    end
    return vals
  end
  local op = minus and subtract or add
  for j = 1, count do
    if vals[j] then
      local ti = math.floor((j - 1) / width) + 1
      his[ti], los[ti] = op(his[ti], los[ti], vals[j])
    end
  end
  return vals
end

-- the first count field names of a group (or a breakdown's hash), then its hours' (one HMGET
-- for both), built once per plan and group
local function merged_of(plan, g, fields, count, names)
  local merged = plan.merged[g]
  if merged == nil then
    merged = {unpack(fields, 1, count)}
    for i = 1, #names do merged[count + i] = names[i] end
    plan.merged[g] = merged
  end
  return merged
end

-- the values of the hours' fields (names) in a hash read whole (flat), by their positions
local function packed_in(plan, g, flat, names)
  local at = plan.hour_at[g]
  if at == nil then
    at = {}
    for i = 1, #names do at[names[i]] = i end
    plan.hour_at[g] = at
  end
  local vals = {}
  for j = 1, #flat, 2 do
    local f = flat[j]
    if byte(f, 1) > 57 then  -- past '9': a packed half-day or the open day
      local i = at[f]
      if i then vals[i] = flat[j + 1] end
    end
  end
  return vals
end

-- add the g-th counter hash of a plan (its fields in range) to his/los (one entry per thing);
-- a group whose ranges are negative, {-lo, -hi, ...}, subtracts its fields (days of a month
-- whose total its year's hash gives: psd.keys.by_month_totals), always asked for by name.
-- When the group has hours (hours.lua) and they came along, their fields' values and where
-- they start (read whole: 0; asked for with the fields: after them); false: the hash is empty
-- (nor has it hours); nil: ask for them
local function sum_hash(key, plan, g, his, los)
  local ranges, fields, part = plan.groups[g][1], plan.groups[g][2], plan.groups[g][3]
  if #ranges == 0 then return nil end  -- a group of packed hours only (hours.lua)
  local count, minus = #fields, ranges[1] < 0
  if not minus and (count > SMALL or count == 0) then
    local n = length_of(key)
    if n == 0 then return false end
    -- read whole when that costs less than asking: per field read, about what asking for
    -- one costs when a shared plan's lookup table matches it, three times that when it must
    -- be parsed (counted with callgrind: a 1,000-user leaderboard -27%, a mumt -5%)
    if (plan.shared and n <= count) or 3 * n <= count or count == 0 then
      local flat = whole_of(key)
      if not plan.shared or count == 0 then
        add_parsed(flat, ranges, his, los)
      else
        local lookup = lookup_of(plan.lookups, g, fields, count / #things)
        for j = 1, #flat, 2 do
          local ti = lookup[flat[j]]
          if ti then his[ti], los[ti] = add(his[ti], los[ti], flat[j + 1]) end
        end
      end
      return part and packed_in(plan, g, flat, part[1]), 0
    end
  end
  if part == nil then
    add_asked(key, fields, count, his, los, minus)
    return nil
  end
  return add_asked(key, merged_of(plan, g, fields, count, part[1]), count, his, los, minus),
    count
end

-- #include sumhours.lua

-- #include oldreads.lua
-- #include lists.lua
-- #include activities.lua
-- #include atids.lua
-- #include fromrecords.lua
-- #include pending.lua
-- #include fromlog.lua
-- #include lone.lua
-- #include breakdown.lua

local function begin(keys, args, unpacked)
  KEYS, request = call_keys(keys, args), unpacked
  want_atids, types_only = request[1] > 0, request[1] == 2
  filter = request[2] ~= '' and request[2] or nil
  log_filter = filter and log_id(filter)
  things, thing_index, thing_of = request[3], {}, {}
  for ti = 1, #things do  -- a thing's number, and its code in a log (pending.lua)
    thing_index[things[ti]], thing_index[things[ti] + LOG_NUMBERS] = ti, ti
    thing_of[request[4][ti]] = ti
  end
  plans = {}
  for p, raw in ipairs(request[5]) do
    plans[p] = {t1 = raw[1], t2 = raw[2], s1 = raw[3], s2 = raw[4], shared = raw[5] > 1,
                groups = raw[6], windows = raw[7], suffixes = raw[8], lookups = {},
                merged = {}, hour_at = {}}
  end
  last_key, last_len, last_flat = nil, nil, nil
  forget_spans()
  forget_records()
  forget_alone()
end

-- the logs of a call's series (pending.lua), by series: its first keys
local function series_logs(series)
  return pending_logs({unpack(KEYS, 1, #series / 2)})
end

-- a series' reply: {{hi, lo, ...}[, atids]}
local function series_reply(his, los, atids)
  local sums = {}
  for ti = 1, #things do sums[2 * ti - 1], sums[2 * ti] = his[ti], los[ti] end
  if atids then return {sums, atids} end
  return {sums}
end

-- add to his/los one series' sums: from its keys (its log's key at KEYS[k]: its counters'
-- groups, then, flagged, its index and activity state) and its log; answer its activities'
-- string (with want_atids, flagged; else nil). Activities are listed from the records at
-- once where they answer (fromrecords.lua) and no point waits; with nothing kept, from the
-- log alone (pending_alone); else noted in a found table (atids.lua).
local function sum_one(plan, flag, log, k, his, los)
  local prefix = sub(KEYS[k], 1, -2)  -- the log's key less 'p'
  local want, listed, alone = want_atids and flag > 0, false, false
  local acts = flag > 0 and prefix .. 'acts'
  -- a log alone: its counters cost ~8 commands, its records' listing 1 (without "_atids",
  -- ~4: not worth an EXISTS to a streaming user, whose log waits beside their counters)
  local asked = want and log
  if asked and nothing_kept(acts, prefix) then
    return pending_alone(log, plan.t1, plan.t2, his, los, want)
  end
  local idx = flag > 0 and prefix .. 'idx'
  if flag >= 2 then
    local logged = asked and KEPT or flag == 2 and log and true
    listed, alone = from_records(idx, acts, plan, his, los, logged, flag == 3)
    if alone then return pending_alone(log, plan.t1, plan.t2, his, los, want) end
  end
  local found, atids = nil, nil
  if want then
    if listed and not log then
      atids = records_atids(listed)
    else
      found = {typ = {}, when = {}, ti = {}, more = {}, idx = idx}
      if listed then note_records(found, listed) end
    end
  end
  if not listed then
    local suffixes = plan.suffixes
    for g = 1, #plan.groups do
      local key = prefix .. suffixes[g]
      local vals, off = sum_hash(key, plan, g, his, los)
      if plan.groups[g][3] and vals ~= false then
        sum_hours(key, plan, g, his, los, vals, off)
      end
    end
    if flag > 0 then from_activities(idx, acts, plan, his, los, found) end
  end
  add_pending(log, plan.t1, plan.t2, his, los, found)
  if found then atids = atids_of(found) end
  return atids
end

-- the series of a call, from KEYS[1] on, added to result: each series' reply
-- (series_reply), or with flat, its hi, lo per thing (then, with want_atids, its
-- activities' string); the next key.
local function sum_series(result, flat)
  local series = request[6]
  local logs = #series > 0 and series_logs(series)
  local his, los = {}, {}  -- a series' sums, zeroed for each (a reply copies them)
  for i = 1, #series, 2 do
    local k = (i + 1) / 2
    local plan, flag, log = plans[series[i]], series[i + 1], logs[k]
    for ti = 1, #things do his[ti], los[ti] = 0, 0 end
    local atids = sum_one(plan, flag, log, k, his, los)
    if flat then
      local n = #result
      for ti = 1, #things do result[n + 2 * ti - 1], result[n + 2 * ti] = his[ti], los[ti] end
      if want_atids then result[n + 2 * #things + 1] = atids or '' end
    else
      result[#result + 1] = series_reply(his, los, atids)
    end
  end
  return #series / 2 + 1
end

-- the heads of lone calls (lone.lua) unpacked, by their bytes: a head is the same for every
-- range of the same whole hours (a sliding day or week, a dashboard's), and unpacking it
-- cost a one-user read a tenth of its time in the server. At most LONE_HEADS are kept, then
-- the lot is dropped; the values are read, never changed
local LONE_HEADS = 256
local lone_heads, lone_head_count = {}, 0

-- one call: its series, then its breakdowns
local function sum_call(keys, args)
  local a = lone_heads[args[1]]
  if a ~= nil then return lone_sum(keys, args, a) end
  a = {cmsgpack.unpack(args[1])}
  if a[2] ~= nil then  -- a lone call's head: many values, where a request is one list
    if lone_head_count >= LONE_HEADS then lone_heads, lone_head_count = {}, 0 end
    lone_heads[args[1]], lone_head_count = a, lone_head_count + 1
    return lone_sum(keys, args, a)
  end
  begin(keys, args, a[1])
  if request[7] == nil then  -- series only: one flat reply (a table a series costs more)
    local result = {want_atids and 'a' or 'f'}
    sum_series(result, true)
    return result
  end
  local result = {}
  local k = sum_series(result)
  local breakdowns = request[7] or {{}, {}}
  local bplans, readers = breakdowns[1], {}
  for _, p in ipairs(breakdowns[2]) do readers[p] = (readers[p] or 0) + 1 end
  for p, b in ipairs(bplans) do
    b.shared, b.lookups, b.merged, b.hour_at = (readers[p] or 0) > 1, {}, {}, {}
  end
  for _, p in ipairs(breakdowns[2]) do
    local b, v, big = bplans[p], nil, nil
    v, big, k = term_values(b, k)
    local out = bucket_sums(b, v, big)
    add_pending_buckets(pending_log(KEYS[k]), b, out)
    result[#result + 1], k = out, k + 1
  end
  return result
end

-- the entry point: psd/scripts.py makes it a Redis Function, or calls it with KEYS and ARGV
-- #entry sum_call
