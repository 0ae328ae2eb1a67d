-- keys.lua: included by every script first ("-- #include keys.lua"), after it sets WRITES:
-- call_keys(keys, args), a call's keys. On one server they come as its keys. A Redis Cluster refuses a call whose declared
-- keys span slots (even from a script flagged allow-cross-slot-keys), so there KEYS is empty
-- and the keys come in the last argument, msgpack {{keys of one slot...}, ...} (psd/nodes.py):
-- the script reads them through its local KEYS. A script that writes first touches every
-- group (EXISTS, one call per slot): a key whose slot is not served here, or is half moved
-- to another node, is refused by the server there and then, before anything is written, so
-- the caller can route the call again without a part of it applied.
-- whether this call came from a cluster's caller (set by call_keys): there a command may
-- name keys of one slot only, and a script whose command names several fails for good
local clustered = false

local function call_keys(keys, args)
  clustered = not (#keys > 0 or #args == 0)
  if not clustered then return keys end
  local out = {}
  for _, group in ipairs(cmsgpack.unpack(args[#args])) do
    if WRITES then redis.call('EXISTS', unpack(group)) end
    for _, key in ipairs(group) do out[#out + 1] = key end
  end
  return out
end
