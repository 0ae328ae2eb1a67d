-- lists.lua: included by sum.lua where it says "-- #include lists.lua": msgpack lists read
-- without the tables cmsgpack.unpack builds for them (activities.lua's changes of an hour,
-- fromrecords.lua's summaries).

-- where a msgpack list's values start: after its header (a fixarray's one byte, an array
-- 16's three, an array 32's five): cmsgpack.unpack_limit(raw, n, list_start(raw)) reads
-- its first n in place, as values
local function list_start(raw)
  local h = string.byte(raw, 1)
  return h < 0xa0 and 1 or h == 0xdc and 3 or 5
end

-- a msgpack list of numbers (raw) as a table, and the index of its first value. cmsgpack.
-- unpack builds a list's table element by element, which Lua 5.1 grows one rehash at a
-- time; one constructor around unpack_limit's values makes it at its size (its first value
-- is unpack_limit's next offset). A list of more than LIST_IN_PLACE values is left to
-- cmsgpack.unpack: values are passed on Lua's C stack, which holds at most 8,000.
local LIST_IN_PLACE = 4000
local function list_of(raw)
  local h = string.byte(raw, 1)
  if h < 0xa0 or h == 0xdc and string.byte(raw, 2) * 256 + string.byte(raw, 3) <= LIST_IN_PLACE
  then
    return {cmsgpack.unpack_limit(raw, LIST_IN_PLACE, list_start(raw))}, 2
  end
  return cmsgpack.unpack(raw), 1
end
