#!lua flags=allow-cross-slot-keys
-- write_count.lua: add to global counters (no user, no type), each point atomically.
--
-- KEYS    4 per point: the counter hashes root, year, month, hour of its ts (c:{<thing>}:...)
-- ARGV[1] msgpack list of points {value, children, expires}: children = its year (in root),
--         month (in year), day and hour (in month), minute and second (in hour), each in
--         the field child * 10 (see psd/keys.py); expires = Unix time each hash expires at,
--         0 = never
-- Returns the number of points applied.
local points = cmsgpack.unpack(ARGV[1])
local HASH_OF_CHILD = {1, 2, 3, 3, 4, 4}
for n = 1, #points do
  local value, children, expires = points[n][1], points[n][2], points[n][3]
  for c = 1, 6 do
    local j = HASH_OF_CHILD[c]
    local key, expire_at = KEYS[(n - 1) * 4 + j], expires[j]
    if redis.call('HINCRBY', key, children[c] * 10, value) == value and expire_at > 0 then
      redis.call('EXPIREAT', key, expire_at, 'NX')
      if j == 1 then redis.call('EXPIREAT', key, expire_at, 'GT') end
    end
  end
end
return #points
