-- fromlog.lua: included by sum.lua where it says "-- #include fromlog.lua" (after
-- pending.lua, fromrecords.lua, whose rec_ columns it fills, and activities.lua, whose
-- note it calls; it uses that script's thing_index, filter and hilo.lua): what a read adds
-- from a user's log of pending increments, {uid}:p.
--
-- Every read adds the log's points in its range to what the counters and records hold. A
-- user with a log and nothing kept (no activity state, no root hash: activities.lua's
-- nothing_kept), as a user's first points leave them until their log is applied, is read
-- from the log alone: their counters and records would cost a read ~3-8 commands for
-- nothing (a one-user read of one thing asks in lone.lua, after its windows' days).

-- add to his/los (entry ti: thing ti) the pending points of a user's log (raw: as MGET
-- answered) in [t1, t2] (pending.lua), and note them in found (nil: no "_atids")
local function add_pending(raw, t1, t2, his, los, found)
  local p = pending_points(raw)
  if p == nil then return end
  for i = 1, #p, PENDING_STRIDE do
    local ts = p[i + PE_TS]
    if ts >= t1 and ts <= t2 then
      local ti, atid = thing_index[p[i + PE_THING]], p[i + PE_ATID]
      if ti and (filter == nil or atid == filter) then
        his[ti], los[ti] = add_number(his[ti], los[ti], p[i + PE_VALUE])
        if found then note(found, p[i + PE_AID], ts, ti, atid) end
      end
    end
  end
end

-- the activities of a user read from their log alone, by aid: the column (rec_ columns,
-- fromrecords.lua) of each, emptied after each user
local alone_at = {}

-- add to his/los the points of the log of a user with nothing kept (raw: as MGET answered)
-- in [t1, t2], as add_pending does; with want, answer their activities as atids_of would,
-- each with the type of its latest change (note's rule), built in the rec_ columns: a
-- found table a user costs more than their whole log
local function pending_alone(raw, t1, t2, his, los, want)
  local p, at, n = pending_points(raw), alone_at, 0
  local aids, types, whens, tis = rec_aids, rec_types, rec_lasts, rec_tis
  for i = 1, #p, PENDING_STRIDE do
    local ts = p[i + PE_TS]
    if ts >= t1 and ts <= t2 then
      local ti, atid = thing_index[p[i + PE_THING]], p[i + PE_ATID]
      if ti and (filter == nil or atid == filter) then
        his[ti], los[ti] = add_number(his[ti], los[ti], p[i + PE_VALUE])
        if want then
          local aid = p[i + PE_AID]
          local j = at[aid]
          if j == nil then
            n = n + 1
            at[aid], aids[n], types[n], whens[n], tis[n] = n, aid, atid, ts, ti
          elseif ts > whens[j] or ts == whens[j] and (ti > tis[j]
              or ti == tis[j] and later_change(ts, atid, ts, types[j])) then
            types[j], whens[j], tis[j] = atid, ts, ti
          end
        end
      end
    end
  end
  if not want then return nil end
  local words = rec_words
  for j = 1, n do
    words[2 * j - 1], words[2 * j] = aids[j], types[j]
    at[aids[j]] = nil
  end
  return table.concat(words, ' ', 1, 2 * n)
end
