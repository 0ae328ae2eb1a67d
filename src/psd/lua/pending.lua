-- pending.lua: included by sum.lua where it says "-- #include pending.lua": a user's
-- pending increments, {uid}:p.
--
-- A user who writes a point or a few at a time (a stream) pays for their whole state on
-- every write: the activity's record read and written back, its day's changes, the counters
-- of every level. Their increments may wait in a log instead, to be applied many at once:
-- a string of msgpack values, five a point: thing (a number), aid and atid (decimal
-- strings, as a write's rows carry them), value and ts2 (numbers). A point is in the log or
-- in the counters and records, never both and never neither: what applies a log's points
-- takes them off it (the log's start it read; what came after stays) in the same script
-- call.
--
-- Every read adds the log's points in its range (after its type filter) to what the counters
-- and records hold; it never applies them (a read may run on a replica). A key of another
-- type there (a user near the limits, limits.lua) holds no points.
local PENDING_STRIDE = 5
local PE_THING, PE_AID, PE_ATID, PE_VALUE, PE_TS = 0, 1, 2, 3, 4

-- the log at key: false for none, or for a key of another type (GET fails on it: pcall)
local function pending_log(key)
  local raw = redis.pcall('GET', key)
  return type(raw) == 'string' and raw or false
end

-- the logs at keys (a list), as pending_log says: one MGET (which answers nil for a key of
-- another type), so many users' logs cost one command; one at a time for one key, or on a
-- cluster (keys.lua's clustered), where a command naming keys of several slots fails the
-- whole script
local function pending_logs(keys)
  if not clustered and #keys > 1 then return redis.call('MGET', unpack(keys)) end
  local logs = {}
  for i, key in ipairs(keys) do logs[i] = pending_log(key) end
  return logs
end

-- the points of a log as one flat list (five values a point), or nil for none
local function pending_points(raw)
  if not raw then return nil end
  return {cmsgpack.unpack(raw)}
end
