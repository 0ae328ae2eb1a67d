-- once.lua: included by the write scripts where they say "-- #include once.lua" (Redis
-- scripts cannot share code any other way). Exactly-once effect for deliveries that may come
-- twice (a redelivered or retried task, a duplicate publish): a delivery's points carry its
-- key, and a record — a sorted set of the keys it applied, scored by when — says whether it
-- was applied already. A call applies every point of one delivery for one record together,
-- so the first of them decides for all (psd/store.py keeps them in one call).
--
-- ONCE_ARGV: {now, window, cutoff}: the time of this call and how long keys are kept, as
-- decimal strings, and "(<now - window>)" (numbers turned into strings in Lua cost more than
-- the rest of this); set by the including script before use.
--
-- A key starting with a NUL byte is one the store gave a write that came without one (psd/store.py
-- _names), only so that a call the client library sends again after losing its reply counts
-- once: it is kept ONCE_OWN_SECONDS, not the whole window, which would keep a key for every
-- HTTP increment of a day, and in a string key of its own beside the record ("own:" and the
-- rest of it in place of "once"), made by one SET NX EX: a streaming call of many users
-- would otherwise trim, ask, add to and extend the expiry of every user's record.
local ONCE_OWN_SECONDS = '300'  -- a string: Redis prints a number argument with "%.17g"
-- per call: what it decided, by record then delivery; the records it trimmed; and what it
-- remembered anew, flat: record, delivery, record, ... (a string made of both costs more)
local once_decided, once_trimmed, once_new

-- a call's start: nothing decided yet (a Function's state outlives its calls)
local function once_begin()
  once_decided, once_trimmed, once_new = {}, {}, {}
end
once_begin()

-- the string key that says a store's own delivery `ik` was applied to `record`
local function own_key(record, ik)
  return string.sub(record, 1, -5) .. 'own:' .. string.sub(ik, 2)
end

-- true if delivery `ik` was applied to `record` before this call (and, if not, remember it)
local function applied_before(record, ik, once)
  local of_record = once_decided[record]  -- nested: a key made of both costs more
  if of_record == nil then
    of_record = {}
    once_decided[record] = of_record
  end
  local decided = of_record[ik]
  if decided ~= nil then return decided end
  if ik:byte(1) == 0 then
    decided = not redis.call('SET', own_key(record, ik), '1', 'EX', ONCE_OWN_SECONDS, 'NX')
    if not decided then once_new[#once_new + 1] = record; once_new[#once_new + 1] = ik end
    of_record[ik] = decided
    return decided
  end
  local trimmed = once_trimmed[record]
  if not trimmed then
    redis.call('ZREMRANGEBYSCORE', record, '-inf', once[3])
    trimmed = 1
  end
  -- ZADD NX answers 0 for a key it holds: asks and adds in one command
  decided = redis.call('ZADD', record, 'NX', once[1], ik) == 0
  if not decided then
    if trimmed == 1 then  -- the window from now, once a record and call
      redis.call('EXPIRE', record, once[2])
      trimmed = 2
    end
    once_new[#once_new + 1] = record; once_new[#once_new + 1] = ik
  end
  once_trimmed[record] = trimmed
  of_record[ik] = decided
  return decided
end

-- forget the deliveries this call remembered but applied nothing of (every point of them
-- refused): `kept` holds record .. '\n' .. ik of those it applied
local function once_forget(kept)
  for i = 1, #once_new, 2 do
    local record, ik = once_new[i], once_new[i + 1]
    if not kept[record .. '\n' .. ik] then
      if ik:byte(1) == 0 then
        redis.call('DEL', own_key(record, ik))
      else
        redis.call('ZREM', record, ik)
      end
    end
  end
end
