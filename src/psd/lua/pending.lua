-- pending.lua: included by sum.lua where it says "-- #include pending.lua": a user's
-- pending increments, {uid}:p.
--
-- A user who writes a point or a few at a time (a stream) pays for their whole state on
-- every write: the activity's record read and written back, its day's changes, the counters
-- of every level. Their increments may wait in a log instead, to be applied many at once:
-- a string of msgpack values, five a point: its thing's code, aid, atid, value and ts2. A
-- point is in the log or in the counters and records, never both and never neither: what
-- applies a log's points takes them off it (the log's start it read; what came after stays)
-- in the same script call.
--
-- An entry's code is its thing plus LOG_NUMBERS, and its aid and atid are numbers where
-- they are below 10^14 (Lua's numbers print them exactly), else decimal strings: a string
-- costs a read that unpacks it ~100 ns more than a number (made and hashed into Lua's
-- strings, collected later), most of a point's time in a long log. A keyspace psd marked
-- before such entries (psd/layout.py) has entries whose code is the thing itself and
-- whose ids are always strings, and may keep them past the mark: a read brings an entry
-- of either kind to one form (log_id), so one activity is one aid whichever wrote it.
--
-- Every read adds the log's points in its range (after its type filter) to what the counters
-- and records hold; it never applies them (a read may run on a replica). A key of another
-- type there (a user near the limits, limits.lua) holds no points.
--
-- A log unpacked is one flat list, an entry's values at i (its code), i + 1 (aid), i + 2
-- (atid), i + 3 (value) and i + 4 (ts2) for i = 1, 6, ... (PENDING_STRIDE): numbers, not
-- names, as the scripts' chunks hold 200 locals at most.
local PENDING_STRIDE, LOG_NUMBERS = 5, 16

-- an id of an entry as an entry of numbers keeps it (a number below 10^14, else its
-- decimal string), from its decimal string
local function log_id(text)
  if #text < 15 then return text + 0 end
  return text
end

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
