-- fromlog.lua: included by sum.lua where it says "-- #include fromlog.lua" (after
-- pending.lua, fromrecords.lua, whose rec_ columns it fills, and atids.lua, whose note it
-- calls; it uses that script's thing_index, filter and hilo.lua): what a read adds
-- from a user's log of pending increments, {uid}:p.
--
-- Every read adds the log's points in its range to what the counters and records hold. A
-- user with a log and nothing kept (no activity state, no root hash: activities.lua's
-- nothing_kept), as a user's first points leave them until their log is applied, is read
-- from the log alone: their counters and records would cost a read ~3-8 commands for
-- nothing (a one-user read of one thing asks in lone.lua, after its windows' days).

-- the activities of users read from their log alone, by aid: a stamp (from 1 in each call,
-- forget_alone) whose column (rec_ columns, fromrecords.lua) is the stamp less the user's
-- first stamp; a stamp before it is an earlier user's. Entries are not taken out after each
-- user (a table emptied so was rehashed as each next one filled it): the table is made anew
-- between users once ALONE_MAX stamps have gone into it, so a call of many long logs keeps
-- it small
local ALONE_MAX = 4096
local alone_at, alone_stamp, alone_renew = {}, 0, ALONE_MAX
local function forget_alone()
  alone_at, alone_stamp, alone_renew = {}, 0, ALONE_MAX
end

-- an id of an entry (log_id's form: pending.lua) as its decimal string, as records and
-- replies name it
local function id_text(id)
  if type(id) == 'number' then return tostring(id) end
  return id
end

-- the filter as a log's entries name a type (log_id's form: pending.lua), set with filter
local log_filter

-- the text of a type as an entry names it (log_id's form), kept: a call's entries name few
-- types, and a number's text costs more than the lookup. At most 1,024 are kept, then the
-- lot is dropped (its state in a block of its own: a chunk holds 200 locals at most)
local type_text
do
  local texts, count = {}, 0
  type_text = function(atid)
    local text = texts[atid]
    if text == nil then
      text = id_text(atid)
      if count >= 1024 then texts, count = {}, 0 end
      texts[atid], count = text, count + 1
    end
    return text
  end
end

-- add to his/los (entry ti: thing ti) the pending points of a user's log (raw: as MGET
-- answered) in [t1, t2] after the type filter (pending.lua), and note them in found (nil:
-- no "_atids"), or with alone in the rec_ columns (their aids as the log keeps them, their
-- types as text), one an activity with the type of its latest change (note's rule: at one
-- second the later thing's, in one thing the greater type); how many columns. thing_index
-- holds the entries' codes too. Inline, as is the common case of add_number: a call a
-- point cost a mumt of such users 3% more
local function add_log(raw, t1, t2, his, los, found, alone)
  local p = pending_points(raw)
  if p == nil then return 0 end
  local base = alone_stamp
  for i = 1, #p, PENDING_STRIDE do
    local ts = p[i + 4]
    if ts >= t1 and ts <= t2 then
      local code = p[i]
      local ti, atid = thing_index[code], p[i + 2]
      if code < LOG_NUMBERS then atid = log_id(atid) end  -- an entry of strings
      if ti and (log_filter == nil or atid == log_filter) then
        local x = p[i + 3]
        if x < E15 and x > -E15 then
          x = los[ti] + x
          if x < E15 and x > -E15 then los[ti] = x else his[ti], los[ti] = carry(his[ti], x) end
        else
          his[ti], los[ti] = add_number(his[ti], los[ti], x)
        end
        if found then
          note(found, id_text(p[i + 1]), ts, ti, type_text(atid))
        elseif alone then
          local aid = p[i + 1]
          if code < LOG_NUMBERS then aid = log_id(aid) end
          local j = alone_at[aid]
          if j == nil or j <= base then
            alone_stamp = alone_stamp + 1
            alone_at[aid], j = alone_stamp, alone_stamp - base
            rec_aids[j], rec_types[j], rec_lasts[j], rec_tis[j] = aid, type_text(atid), ts, ti
          else
            j = j - base
            if ts > rec_lasts[j] or ts == rec_lasts[j] and (ti > rec_tis[j]
                or ti == rec_tis[j] and later_change(ts, type_text(atid), ts, rec_types[j])) then
              rec_types[j], rec_lasts[j], rec_tis[j] = type_text(atid), ts, ti
            end
          end
        end
      end
    end
  end
  return alone_stamp - base
end

-- add_log's points noted in found (nil: no "_atids")
local function add_pending(raw, t1, t2, his, los, found)
  add_log(raw, t1, t2, his, los, found, false)
end

-- add to his/los the points of the log of a user with nothing kept (raw: as MGET answered)
-- in [t1, t2], as add_pending does; with want, answer their activities as atids_of would,
-- built in the rec_ columns: a found table a user costs more than their whole log
local function pending_alone(raw, t1, t2, his, los, want)
  if alone_stamp >= alone_renew then alone_at, alone_renew = {}, alone_stamp + ALONE_MAX end
  local n = add_log(raw, t1, t2, his, los, nil, want)
  if not want then return nil end
  local words = rec_words
  if types_only then return table.concat(rec_types, ' ', 1, n) end
  for j = 1, n do words[2 * j - 1], words[2 * j] = rec_aids[j], rec_types[j] end
  return table.concat(words, ' ', 1, 2 * n)
end
