-- breakdown.lua: included by sum.lua where it says "-- #include breakdown.lua", after its
-- series are summed (it uses sum.lua's things, SMALL, E15, add, add_number, carry,
-- length_of, whole_of, lookup_of, merged_of, packed_in, add_hour_windows and read_packed,
-- hours.lua's day_key and pending.lua): the buckets of a series of one user as edges and
-- spans (psd/breakdown.py), reading each hash and each hour of its windows once. A plan is shared
-- by every user whose calendar it is.

-- put a stored decimal string into v and big (see term_values)
local function put(v, big, at, x)
  if #x < 16 then v[at] = x + 0
  else
    big = big or {}
    big[at], v[at] = add(0, 0, x)
  end
  return big
end

-- the values of the g-th hash's fields, from position n + 1 on: read whole when that costs
-- less than asking for each field, else one HMGET in chunks that unpack can pass. Asking for
-- a field of a small (listpack) hash costs about what reading one costs plus looking it up
-- in the plan's table of names; that table is built once for a shared plan, for one user
-- otherwise (hence three times as many names as fields there). Returns big, then, as
-- sum_hash does, its packed hours' values when they came along (and where they start),
-- false when the hash is empty, nil when hash_hours must ask for them
local CHUNK = 1000
local function hash_values(key, b, g, n, v, big)
  local fields = b[1][g]
  local count = b[6][g]  -- the fields to ask for, the first of them (hours.lua: the rest packed)
  local part = b[5][g]
  if count == 0 then return big end
  if count > SMALL then
    local len = length_of(key)
    if len == 0 then return big, false end
    if (b.shared and len <= count) or 3 * len <= count then
      local lookup, flat = lookup_of(b.lookups, g, fields, 1), whole_of(key)
      for j = 1, #flat, 2 do
        local at, x = lookup[flat[j]], flat[j + 1]
        if at then
          if #x < 16 then v[n + at] = x + 0 else big = put(v, big, n + at, x) end
        end
      end
      return big, part and packed_in(b, g, flat, part[1]), 0
    end
  end
  local asked, with_hours = nil, part and count <= CHUNK
  for c = 1, count, CHUNK do
    local vals
    if with_hours then
      vals = redis.call('HMGET', key, unpack(merged_of(b, g, fields, count, part[1])))
      asked = vals
    else
      vals = redis.call('HMGET', key, unpack(fields, c, math.min(c + CHUNK - 1, count)))
    end
    for j = 1, math.min(CHUNK, count - c + 1) do  -- put() inline for the short values
      local x = vals[j]
      if x then
        if #x < 16 then v[n + j] = x + 0 else big = put(v, big, n + j, x) end
      end
    end
    n = n + CHUNK
  end
  return big, asked, count
end

-- add x (an integer within ±2^53) to the value at position `at` (see term_values)
local function add_at(v, big, at, x)
  local hi, lo = add_number(big and big[at] or 0, v[at] or 0, x)
  v[at] = lo
  if hi ~= 0 then
    big = big or {}
    big[at] = hi
  end
  return big
end

-- add to the g-th hash's values (positions n + 1 on) the hours its month holds packed, then
-- those of its open day, in that day's hash (hours.lua; read_packed: sum.lua)
local function hash_hours(key, b, g, n, v, big, vals, off)
  local part = b[5][g]
  local tables, open = read_packed(key, part, vals, off)
  local picks, step = part[2], part[3]
  for i = 1, #picks, 4 do
    local hours = tables[picks[i]]
    if hours then
      local at = n + picks[i + 1]
      for h = picks[i + 2], picks[i + 3] do
        local x = hours[h]
        if x then
          local y = (v[at] or 0) + x
          if y < E15 and y > -E15 then v[at] = y else big = add_at(v, big, at, x) end
        end
        at = at + step
      end
    end
  end
  if not open then return big end
  local fields, day = b[1][g], day_key(key, open)
  for c = 1, #fields, CHUNK do
    local vals = redis.call('HMGET', day, unpack(fields, c, math.min(c + CHUNK - 1, #fields)))
    for j = 1, #vals do
      local x, at = vals[j], n + c - 1 + j
      if x and #x < 16 then
        big = add_at(v, big, at, x + 0)
      elseif x then
        local hi, lo = add(0, 0, x)
        big = add_at(v, big, at, lo) or {}
        big[at] = (big[at] or 0) + hi
      end
    end
  end
  return big
end

-- the windows' values (positions n + 1 on), hour by hour: each hour {first start, last end
-- (strings), last end, hour, day (YYYYMMDD) and hour in the day (strings), start, end, ...}
local function window_values(b, idx, acts, n, v, big)
  local width = #things
  for _, hour in ipairs(b[2]) do
    local count = (#hour - 6) / 2 * width
    local his, los = {}, {}
    for at = 1, count do his[at], los[at] = 0, 0 end
    add_hour_windows(idx, acts, hour, 7, #hour, hour[1], hour[2], hour[3], hour[4], hour[5],
                     hour[6], his, los)
    for at = 1, count do
      v[n + at] = los[at]
      if his[at] ~= 0 then
        big = big or {}
        big[n + at] = his[at]
      end
    end
    n = n + count
  end
  return big
end

-- the values of breakdown b's terms for the user whose keys start at KEYS[k]: v[(term - 1) *
-- #things + ti] (nil: nothing stored), below 10^15 in size, and big (nil if none) the
-- multiples of 10^15 of larger ones; and the next user's first key
local function term_values(b, k)
  local v, big, n = {}, nil, 0
  for g, fields in ipairs(b[1]) do
    local vals, off
    big, vals, off = hash_values(KEYS[k], b, g, n, v, big)
    if b[5][g] and vals ~= false then big = hash_hours(KEYS[k], b, g, n, v, big, vals, off) end
    n, k = n + #fields, k + 1
  end
  if #b[2] > 0 then
    big = window_values(b, KEYS[k], KEYS[k + 1], n, v, big)
    k = k + 2
  end
  return v, big, k
end

-- where each edge (span) starts in b's flat list of them: its count of numbers, then its runs
local function starts_of(list)
  local starts, i = {}, 1
  while i <= #list do
    starts[#starts + 1] = i
    i = i + list[i] + 1
  end
  return starts
end

-- per bucket j and thing: E(b[j + 1]) - E(b[j]) + span j (psd/breakdown.py), {hi, lo, ...}
local function bucket_sums(b, v, big)
  local width, edges, spans = #things, b[3], b[4]
  b.edge_starts = b.edge_starts or starts_of(edges)
  b.span_starts = b.span_starts or starts_of(spans)
  -- one thing's sum of the signed runs of terms {first, last, ...} at list[at + 1] on
  local function runs_sum(list, at, ti)
    local hi, lo = 0, 0
    for r = at + 1, at + list[at], 2 do
      local first, sign = list[r], 1
      if first < 0 then first, sign = -first, -1 end
      for term = (first - 1) * width + ti, list[r + 1] * width, width do
        local x = v[term]
        if x then
          lo = lo + sign * x
          if big and big[term] then hi = hi + sign * big[term] end
          if lo >= E15 or lo <= -E15 then hi, lo = carry(hi, lo) end
        end
      end
    end
    return hi, lo
  end
  local out, edge_at, span_at = {}, b.edge_starts, b.span_starts
  for ti = 1, width do
    local before_hi, before_lo = runs_sum(edges, edge_at[1], ti)
    for j = 1, #span_at do
      local edge_hi, edge_lo = runs_sum(edges, edge_at[j + 1], ti)
      local span_hi, span_lo = runs_sum(spans, span_at[j], ti)
      local at = 2 * ((j - 1) * width + ti)
      out[at - 1], out[at] = carry(edge_hi - before_hi + span_hi, edge_lo - before_lo + span_lo)
      before_hi, before_lo = edge_hi, edge_lo
    end
  end
  return out
end

-- add the pending points of a user's log (pending.lua; raw: as MGET answered) to the
-- buckets they fall in, out as bucket_sums made it: bucket j is [bounds[j], bounds[j + 1]),
-- bounds = b[7]
local function add_pending_buckets(raw, b, out)
  local p = pending_points(raw)
  if p == nil then return end
  local bounds, width = b[7], #things
  for i = 1, #p, PENDING_STRIDE do
    local ts, code, atid = p[i + 4], p[i], p[i + 2]
    local ti = thing_index[code]
    if code < LOG_NUMBERS then atid = log_id(atid) end  -- an entry of strings (pending.lua)
    if ti and ts >= bounds[1] and ts < bounds[#bounds]
        and (log_filter == nil or atid == log_filter) then
      local lo, hi = 1, #bounds - 1  -- the last bound at or before ts: its bucket
      while lo < hi do
        local mid = math.floor((lo + hi + 1) / 2)
        if bounds[mid] <= ts then lo = mid else hi = mid - 1 end
      end
      local at = 2 * ((lo - 1) * width + ti)
      out[at - 1], out[at] = add_number(out[at - 1], out[at], p[i + 3])
    end
  end
end
