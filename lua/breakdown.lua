-- breakdown.lua: included by sum.lua where it says "-- #include breakdown.lua", after its
-- series are summed (it uses sum.lua's things, result, add and carry): the buckets of a
-- series of one user as edges and spans (psd/breakdown.py), from one HMGET per hash.
-- a breakdown's terms' values: v[(term - 1) * #things + ti] (nil: nothing stored), below
-- 10^15 in size, and big (nil if none) the multiples of 10^15 of larger ones; one HMGET per
-- hash, in chunks that unpack can pass
local CHUNK = 1000
local function term_values(b, k)
  local v, big, n, width = {}, nil, 0, #things
  for _, fields in ipairs(b[1]) do
    for c = 1, #fields, CHUNK do
      local vals = redis.call('HMGET', KEYS[k], unpack(fields, c, math.min(c + CHUNK - 1, #fields)))
      for j = 1, #vals do
        local x = vals[j]
        if x then
          if #x < 16 then v[n + j] = x + 0
          else
            big = big or {}
            big[n + j], v[n + j] = add(0, 0, x)
          end
        end
      end
      n = n + #vals
    end
    k = k + 1
  end
  for _, r in ipairs(b[2]) do
    local sums = result[r][1]
    for ti = 1, width do
      v[n + ti] = sums[2 * ti]
      if sums[2 * ti - 1] ~= 0 then
        big = big or {}
        big[n + ti] = sums[2 * ti - 1]
      end
    end
    n = n + width
  end
  return v, big, k
end

-- per bucket j and thing: E(b[j + 1]) - E(b[j]) + span j (psd/breakdown.py), {hi, lo, ...}
local function bucket_sums(b, v, big)
  local width, edges, spans = #things, b[3], b[4]
  -- one thing's sum of signed runs of terms {first, last, ...}
  local function runs_sum(runs, ti)
    local hi, lo = 0, 0
    for r = 1, #runs, 2 do
      local first, sign = runs[r], 1
      if first < 0 then first, sign = -first, -1 end
      for at = (first - 1) * width + ti, runs[r + 1] * width, width do
        local x = v[at]
        if x then
          lo = lo + sign * x
          if big and big[at] then hi = hi + sign * big[at] end
          if lo >= E15 or lo <= -E15 then hi, lo = carry(hi, lo) end
        end
      end
    end
    return hi, lo
  end
  local out = {}
  for ti = 1, width do
    local before_hi, before_lo = runs_sum(edges[1], ti)
    for j = 1, #spans do
      local edge_hi, edge_lo = runs_sum(edges[j + 1], ti)
      local span_hi, span_lo = runs_sum(spans[j], ti)
      local at = 2 * ((j - 1) * width + ti)
      out[at - 1], out[at] = carry(edge_hi - before_hi + span_hi, edge_lo - before_lo + span_lo)
      before_hi, before_lo = edge_hi, edge_lo
    end
  end
  return out
end
