-- hilo.lua: included by sum.lua where it says "-- #include hilo.lua" (after its string
-- locals): an exact sum kept as two numbers, hi * 10^15 + lo, since Lua's numbers are
-- doubles, exact below 2^53 only.
local E15 = 1e15

local function carry(hi, lo)
  if lo >= E15 or lo <= -E15 then
    local q = math.floor(lo / E15)
    return hi + q, lo - q * E15
  end
  return hi, lo
end

-- add a number (an integer within ±2^53) to hi/lo: split first, so no sum passes 2^53
local function add_number(hi, lo, x)
  if x >= E15 or x <= -E15 then
    local q = math.floor(x / E15)
    hi, x = hi + q, x - q * E15
  end
  return carry(hi, lo + x)
end

-- add a decimal string to hi/lo; more than 15 digits are split so no digit is lost
local function add(hi, lo, v)
  if #v < 16 then return carry(hi, lo + v) end
  local sign, digits = 1, v
  if sub(v, 1, 1) == '-' then sign, digits = -1, sub(v, 2) end
  if #digits < 16 then return carry(hi, lo + v) end  -- 15 digits and a sign
  hi = hi + sign * sub(digits, 1, -16)
  return carry(hi, lo + sign * sub(digits, -15))
end

-- add the first n values of a reply (decimal strings, false for none) to hi/lo: add's
-- common case, a value of up to 15 characters, inline (a Lua function call costs more than
-- the addition)
local function add_values(vals, n, hi, lo)
  for j = 1, n do
    local v = vals[j]
    if v then
      if #v < 16 then
        lo = lo + v  -- exact: |lo| < 10^15, |v| < 10^15
        if lo >= E15 or lo <= -E15 then hi, lo = carry(hi, lo) end
      else
        hi, lo = add(hi, lo, v)
      end
    end
  end
  return hi, lo
end

-- subtract a decimal string from hi/lo (a month's other days: psd.keys.by_month_totals)
local function subtract(hi, lo, v)
  local h, l = add(0, 0, v)
  return carry(hi - h, lo - l)
end
