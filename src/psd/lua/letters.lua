#!lua
-- letters.lua: keep dead letters (psd/dlq.py), each identity once within the window: a
-- message delivered again after its letters were kept (its worker killed before it
-- acknowledged it, the NSQ bridge before it FINished it, a duplicate publish) adds none.
--
-- KEYS[1] the list of letters (psd:dlq)
-- KEYS[2] the identities of the letters kept within the window ({psd:dlq}:kept, the same
--         slot): a sorted set of identities scored by when each was kept
-- ARGV[1] now (Unix seconds), ARGV[2] the window (seconds, PSD_IDEMPOTENCY_WINDOW)
-- ARGV[3..] per letter, its identity ("" = none: always kept) and its text
-- Returns per letter 1 if kept by this call, 0 if a letter of its identity was kept within
-- the window (this one is dropped: the list holds it already, or held it until a retry or
-- a purge took it off).
local now, window = tonumber(ARGV[1]), ARGV[2]
local kept, texts, recorded = {}, {}, false
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', now - window))
for i = 3, #ARGV, 2 do
  local identity = ARGV[i]
  local new = identity == ''
  if not new then  -- ZADD NX answers 1 only for an identity it did not hold: asks and adds
    new = redis.call('ZADD', KEYS[2], 'NX', ARGV[1], identity) == 1
    recorded = recorded or new
  end
  kept[#kept + 1] = new and 1 or 0
  if new then texts[#texts + 1] = ARGV[i + 1] end
end
for first = 1, #texts, 1000 do  -- Lua's unpack takes a few thousand values at most
  redis.call('RPUSH', KEYS[1], unpack(texts, first, math.min(first + 999, #texts)))
end
if recorded then redis.call('EXPIRE', KEYS[2], window) end
return kept
