-- keys.lua: included by every script first ("-- #include keys.lua"), after it sets WRITES.
-- On one server a call's keys come as KEYS. A Redis Cluster refuses a call whose declared
-- keys span slots (even from a script flagged allow-cross-slot-keys), so there KEYS is empty
-- and the keys come in the last argument, msgpack {{keys of one slot...}, ...} (psd/nodes.py):
-- the script reads them through this local KEYS. A script that writes first touches every
-- group (EXISTS, one call per slot): a key whose slot is not served here, or is half moved
-- to another node, is refused by the server there and then, before anything is written, so
-- the caller can route the call again without a part of it applied.
local KEYS = KEYS
if #KEYS == 0 and #ARGV > 0 then
  local groups = cmsgpack.unpack(ARGV[#ARGV])
  KEYS = {}
  for _, group in ipairs(groups) do
    if WRITES then redis.call('EXISTS', unpack(group)) end
    for _, key in ipairs(group) do KEYS[#KEYS + 1] = key end
  end
end
