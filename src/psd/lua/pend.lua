#!lua flags=allow-cross-slot-keys
-- pend.lua: append a stream's increments to their users' logs ({uid}:p, pending.lua), to be
-- applied many at once later (psd/pending.py). A call of write_metric.lua names seven keys
-- a user and unpacks a run's values before it writes anything; this one names two keys
-- a user and appends each user's points in one APPEND of bytes psd packed.
--
-- KEYS    two per user: {uid}:p, their log, and {uid}:once, their record of applied
--         deliveries (once.lua); {uid}:acts, their activity state, for a user with a
--         diffadd among the points; and {uid}:r, their root, for a user whose root ARGV[2]
--         pushes
-- ARGV[1] msgpack, flat, three values a unit (a user's points of one delivery part, in
--         order): k, how many KEYS come before the user's two; its delivery's number in
--         ARGV[2] (from 1; 0: none); its points' log entries, five msgpack values a point
--         (pending.lua), one after the other ("" when every point adds 0). Then, when some
--         units hold diffadds, a second msgpack list, flat: per such unit its number (from
--         1), where the user's {uid}:acts is in KEYS, how many diffadds it holds and the
--         earliest start of their windows, then
--         each one's activity field there and the first bytes of its entries in a log, as
--         entries of numbers and of strings write them (pending.lua; first_changes); a
--         stream's increments cost nothing of it
-- ARGV[2] msgpack list of the deliveries' keys; then, for the users some point of whom is
--         of a year that began less than the year retention ago, a msgpack list, flat,
--         three values a user: their k, where their root is in KEYS, and when it may expire
--         at the earliest (psd.pending.root_push): a root lives until its user's newest year
--         ends plus the year retention (counters.lua), and a point of a newer year waiting in
--         the log says so now, or the root could expire, with the years it holds, before
--         the log is applied
-- ARGV[3..5] now, window, cutoff of once.lua
-- ARGV[6] (one server: a cluster's call has its keys there, keys.lua) the call's own key,
--         or "": a call on one server runs whole or not at all, and psd sends it again only
--         as it was, so one key says for all its units of the store's own delivery (which a
--         write without a delivery key gets, once.lua) whether it ran, where each user's
--         own key would cost a SET and a key apiece. It holds the numbers of the units
--         answered "d" (direct; from 1, "," after each), which a resent call answers again.
-- A diffadd waits as an increment of its value when it is its activity's first change:
-- nothing recorded, so its window holds nothing.
-- Returns a string of a letter a unit (one string: a list of a thousand costs the server
-- and psd a reply each): "o" ok (in the log), "u" duplicate (its delivery was applied
-- before) or "d" direct (the log takes no more points: its user is near the limits, a hash
-- there, or the log is full; or a diffadd is not its activity's first change; nothing
-- written, the delivery not remembered: psd applies its points the direct way, and every
-- later unit of the user goes so too, after it); then, when logs grew past PENDING_FOLD
-- bytes, {key, log, ...} of those logs, for psd to apply.
local WRITES = true
-- #include keys.lua
-- #include once.lua
-- #include pending.lua

-- A log past PENDING_FOLD bytes is returned for psd to apply; one past PENDING_CAP (not
-- applied: its writer was lost) takes no more points, nor does one that a unit (up to
-- pending_points of its user's points) would take past PENDING_MOST bytes, so a log holds
-- at most 256 points (a point is 5 bytes or more), which limits.lua's HEADROOM allows for:
-- a log past that could take its user past the limits, and could then never be applied. A
-- log is applied at three quarters of its cap (~40-65 points): its application's cost per
-- user is shared by more points than at half (+13% of a stream's points a second,
-- bench/ingest.py), and the quarter left takes what its user appends while it is applied
-- (at seven eighths, more went the direct way and the stream was slower).
-- psd.pending.LOG_FOLD and LOG_CAP say the same.
local PENDING_FOLD, PENDING_CAP = 768, 1024
local PENDING_MOST = 1280
-- what a unit's append calls, as locals: a global costs a lookup of its name every unit
local pcall_command, kind_of = redis.pcall, type

-- append a unit's entries to its log: whether the log took them, and the log's key when
-- it just grew past PENDING_FOLD
local function append(key, entries)
  local n = pcall_command('APPEND', key, entries)
  if kind_of(n) ~= 'number' then return false end  -- a hash: its user is near the limits
  local before = n - #entries
  if before >= PENDING_CAP or n > PENDING_MOST then  -- taken back
    if before == 0 then
      redis.call('DEL', key)
    else
      redis.call('SET', key, redis.call('GETRANGE', key, 0, before - 1))
    end
    return false
  end
  if n >= PENDING_FOLD and before < PENDING_FOLD then return true, key end
  return true
end

-- whether a unit's n diffadds (their field and first bytes of both kinds from checks[at];
-- the earliest window start of them at checks[at - 1]) are each their activity's first
-- change: the activity has no state (its field in the user's acts) and no point in the log
-- (the start of its entries of either kind: a log may hold both, pending.lua; a point of
-- another activity could only hold it by chance: then it goes the direct way, answered the
-- same), and no window starts where the compaction dropped activities or a lapsed state
-- lost them (the user's "0:c" or "_d", record.lua: one of those sent again goes the direct
-- way, where it is stale; psd.pending sends a window older than the state's lifetime
-- there already, as a user whose state lapsed has no record to say so). A diffadd
-- sent again after its reply was lost finds its first sending here: it goes the direct way
-- and adds nothing.
local function first_changes(acts, log_key, checks, at, n)
  local fields = {}
  for j = 1, n do fields[j] = checks[at + 3 * j - 3] end
  fields[n + 1], fields[n + 2] = '0:c', '_d'
  local found = redis.call('HMGET', acts, unpack(fields))
  for j = 1, n do
    if found[j] then return false end
  end
  for m = n + 1, n + 2 do
    local mark = tonumber(found[m])
    if mark and checks[at - 1] <= mark then return false end
  end
  local log = redis.pcall('GET', log_key)
  if type(log) ~= 'string' then return true end  -- none; a hash: its APPEND refuses
  for j = 1, n do
    local c = at + 3 * j - 2
    if string.find(log, checks[c], 1, true) or string.find(log, checks[c + 1], 1, true) then
      return false
    end
  end
  return true
end

-- the numbers of the units some diffadd of which is not its activity's first change (checks
-- as ARGV[1] says), as a set; nil for none. Asked before any unit is appended: no two units
-- of a call hold one activity (psd.pending.must_go_direct), so none changes the answer of
-- another.
local function not_first(K, units, checks)
  if checks == nil then return nil end
  local bad, i = {}, 1
  while i < #checks do
    local unit, acts, n = checks[i], checks[i + 1], checks[i + 2]
    if not first_changes(K[acts], K[units[3 * unit - 2] + 1], checks, i + 4, n) then
      bad[unit] = true
    end
    i = i + 4 + 3 * n
  end
  return bad
end

-- which of the call's deliveries are the store's own (once.lua: a key starting with a NUL
-- byte), by number: asked once a delivery, not once a unit (a stream's thousand units share
-- one, and a string's method costs a lookup of its metatable)
local function owned(deliveries)
  local owns = {}
  for i, delivery in ipairs(deliveries) do owns[i] = delivery:byte(1) == 0 end
  return owns
end

-- a call's answer: its units' letters (out, a letter a unit) as one string, in the list
-- it filled when it has one unit; then the logs to apply ({key, log, ...}), if any
local function answer(out, logs)
  local reply = #out == 1 and out or {table.concat(out)}
  if #logs > 0 then reply[2] = logs end
  return reply
end

-- a call on one server that ran before (its own key is there, holding the units it answered
-- "direct"): those are answered so again, the others (every unit then appended, or a
-- duplicate already) are duplicates; and the logs past PENDING_FOLD bytes are returned
local function resent(units, done, K)
  local out, logs, seen = {}, {}, {}
  for n = 1, #units / 3 do
    out[n] = string.find(done, ',' .. n .. ',', 1, true) and 'd' or 'u'
    -- a log it grew past PENDING_FOLD went back in the reply that was lost: again
    local key = K[units[3 * n - 2] + 1]
    if not seen[key] then
      seen[key] = true
      local raw = redis.pcall('GET', key)
      if type(raw) == 'string' and #raw >= PENDING_FOLD then
        logs[#logs + 1] = key; logs[#logs + 1] = raw
      end
    end
  end
  return answer(out, logs)
end

local function pend_call(keys, args)
  local K = call_keys(keys, args)
  local units, checks = cmsgpack.unpack(args[1])
  local deliveries, roots = cmsgpack.unpack(args[2])
  local once = {args[3], args[4], args[5]}
  local call_key = not clustered and args[6] ~= '' and args[6]
  local owns = call_key and owned(deliveries)
  once_begin()
  if call_key then
    local done = redis.call('GET', call_key)
    if done then return resent(units, ',' .. done, K) end
  end
  local bad = not_first(K, units, checks)
  local out, grown, directs = {}, {}, ''
  local gone = {}  -- the logs of users a unit of whom went the direct way
  local waits = {}  -- the users whose log took points
  for u = 1, #units, 3 do
    local k, delivery, entries = units[u], units[u + 1], units[u + 2]
    local n, status = (u + 2) / 3, 'o'
    if directs ~= '' and gone[k] then  -- after a point of its user that goes the direct way
      status = 'd'
    elseif call_key and owns[delivery] then  -- the call's key says for it
    elseif delivery ~= 0 and applied_before(K[k + 2], deliveries[delivery], once) then
      status = 'u'
    end
    if status == 'o' and bad and bad[n] then status = 'd' end
    if status == 'o' and entries ~= '' then
      local took, fold = append(K[k + 1], entries)
      if not took then
        status = 'd'
      else
        waits[k] = true
        if fold then grown[#grown + 1] = fold end
      end
    end
    if status == 'd' then gone[k], directs = true, directs .. n .. ',' end
    out[n] = status
  end
  if roots then
    for i = 1, #roots, 3 do
      if waits[roots[i]] then redis.call('EXPIREAT', K[roots[i + 1]], roots[i + 2], 'GT') end
    end
  end
  if call_key then redis.call('SET', call_key, directs, 'EX', ONCE_OWN_SECONDS) end
  if directs ~= '' then  -- a delivery none of whose points went in is not remembered
    local kept = {}
    for u = 1, #units, 3 do
      if units[u + 1] ~= 0 and out[(u + 2) / 3] == 'o' then
        kept[K[units[u] + 2] .. '\n' .. deliveries[units[u + 1]]] = true
      end
    end
    once_forget(kept)
  end
  local logs = {}
  for _, key in ipairs(grown) do
    logs[#logs + 1] = key; logs[#logs + 1] = redis.call('GET', key)
  end
  return answer(out, logs)
end

-- the entry point: psd/scripts.py makes it a Redis Function
-- #entry pend_call
