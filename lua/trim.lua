-- trim: time retention for one partition lane that never drops a message a
-- live group has not handled yet. Trims with XTRIM MINID ~ at the oldest of:
-- now - retention, and for each live group its oldest pending entry or the
-- entry after its last delivered one. A group is live while one of its
-- consumers touched the stream within the retention period (each group gets
-- a placeholder consumer "~created" on creation, so a new group counts as
-- live for one retention period even before anyone reads).
-- On the way it forgets departed members: a consumer idle for longer than
-- the retention with nothing pending is deleted (member ids are per process,
-- so each restart leaves one behind). That changes no group's liveness, and
-- a live member that was only idle is created again by its next read. A
-- consumer with pending entries stays (deleting it would drop them from the
-- group's pending list), and so does "~created".
-- KEYS[1] partition lane stream
-- ARGV[1] retention ms
-- Returns the number of entries trimmed.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = clock_ms()
local retention = tonumber(ARGV[1])

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a_ms, a_seq, b_ms, b_seq)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end
local function field(list, name)
  for i = 1, #list, 2 do
    if list[i] == name then return list[i + 1] end
  end
  return nil
end

local min_ms, min_seq = now - retention, 0
if min_ms < 0 then return 0 end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name = field(g, 'name')
  local live = false
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], name)) do
    local consumer = field(c, 'name')
    if tonumber(field(c, 'idle')) < retention then
      live = true
    elseif consumer ~= '~created' and tonumber(field(c, 'pending')) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], name, consumer)
    end
  end
  if live then
    local ms, seq = parse(field(g, 'last-delivered-id'))
    seq = seq + 1
    local pending = redis.call('XPENDING', KEYS[1], name)
    if tonumber(pending[1]) > 0 then
      local p_ms, p_seq = parse(pending[2])
      if less(p_ms, p_seq, ms, seq) then ms, seq = p_ms, p_seq end
    end
    if less(ms, seq, min_ms, min_seq) then min_ms, min_seq = ms, seq end
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~',
  string.format('%d', min_ms) .. '-' .. string.format('%d', min_seq))
