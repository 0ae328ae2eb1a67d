#!lua flags=allow-cross-slot-keys
-- write_count.lua: add to global counters (no user, no type), each point atomically.
--
-- KEYS    5 per (counter, hour) of the points: the counter hashes root, year, month, hour of
--         its ts (c:{<thing>}:...), then the counter's record of applied deliveries
--         (c:{<thing>}:once, once.lua)
-- ARGV[1] msgpack list of points {value, children, expires, delivery, k}
--         (psd.scriptargs.CountPointArg; psd.writes builds it): children = its year (in root),
--         month (in year), day and hour (in month), minute and second (in hour), each in the
--         field child * 10 (see psd/keys.py); expires = Unix time each hash expires at
--         (psd/retention.py), 0 = never: set when a field is added, and a hash already past
--         it is not written; delivery = the key of the delivery it came in, "" = none; k =
--         how many KEYS come before the point's five
-- ARGV[2..4] now, window, cutoff of once.lua
-- ARGV[5] "1": all or nothing (one point refused, nothing of the call is written), else "0"
-- Returns per point 1 if applied, 0 if its delivery was applied before, -1 if refused: a
-- counter would leave ±2^62 (limits.lua; nothing of it written, its delivery not recorded;
-- in an all-or-nothing call, nothing at all, and the other points say 0).
local WRITES = true
-- #include keys.lua
local KEYS = call_keys(KEYS, ARGV)
local points = cmsgpack.unpack(ARGV[1])
local once = {ARGV[2], ARGV[3], ARGV[4]}
local now = ARGV[2] + 0
local whole = ARGV[5] == '1'
local HASH_OF_CHILD = {1, 2, 3, 3, 4, 4}

-- #include once.lua
-- #include limits.lua

local added = {}  -- key, field, value of each addition of this call: for an undo

-- take back the additions made since added[mark]
local function take_back_since(mark)
  for i = #added - 2, mark, -3 do
    take_back(added[i], added[i + 1], added[i + 2])
    added[i], added[i + 1], added[i + 2] = nil, nil, nil
  end
end

-- add the point's value to its six fields: 1, or -1 (nothing added) if one would cross
local function add_point(value, children, expires, k)
  local mark, fresh = #added + 1, {}  -- hash number -> a field of it was added
  for c = 1, 6 do
    local j = HASH_OF_CHILD[c]
    local expire_at = expires[j]
    if expire_at == 0 or expire_at > now or j == 1 then  -- the root: its newest year rules
      local key, field = KEYS[k + j], children[c] * 10
      local n, made = add(key, field, value)
      if not n then
        if made then take_back(key, field, value) end
        take_back_since(mark)
        return -1
      end
      added[#added + 1] = key; added[#added + 1] = field; added[#added + 1] = value
      if n == value and expire_at > 0 then fresh[j] = true end
    end
  end
  for j, _ in pairs(fresh) do
    redis.call('EXPIREAT', KEYS[k + j], expires[j], 'NX')
    if j == 1 then redis.call('EXPIREAT', KEYS[k + j], expires[j], 'GT') end
  end
  return 1
end

local out, refused = {}, false
for n = 1, #points do
  local value, children, expires, delivery = points[n][1], points[n][2], points[n][3], points[n][4]
  local k = points[n][5]
  if delivery ~= '' and applied_before(KEYS[k + 5], delivery, once) then
    out[n] = 0
  else
    out[n] = add_point(value, children, expires, k)
    if out[n] < 0 then
      refused = true
      if whole then take_back_since(1) end
    end
  end
  if refused and whole then  -- nothing of the call is written: the rest is not even tried
    for m = n + 1, #points do out[m] = 0 end
    break
  end
end
if refused then  -- a delivery none of whose points was applied is not remembered
  local kept = {}
  for n = 1, #points do
    if points[n][4] ~= '' and not whole and out[n] == 1 then
      kept[KEYS[points[n][5] + 5] .. '\n' .. points[n][4]] = true
    end
  end
  once_forget(kept)
end
return out
