-- promote_retry: move a group's due retries into the group's retry stream,
-- and keep that stream to what the group still needs: each time retries
-- move, entries before the group's oldest pending (or first undelivered)
-- entry are trimmed (XTRIM MINID ~; acked retries have no other reader),
-- and consumers idle for longer than the retention with nothing pending
-- (departed members) are deleted, as `trim` does for the lanes.
-- KEYS[1] group retry set (zset: member = MessagePack [nonce, lane, key,
-- headers, payload, attempt, origin id], score = due ms)
-- KEYS[2] group retry stream
-- ARGV[1] most to move  ARGV[2] group  ARGV[3] retention ms
-- Returns {moved, next due ms or -1, now ms}.
local now = clock_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local e = cmsgpack.unpack(member)
  redis.call('XADD', KEYS[2], '*', 'k', e[3], 'h', e[4], 'd', e[5],
    'l', e[2], 'a', e[6], 'o', e[7])
  redis.call('ZREM', KEYS[1], member)
end

local function field(list, name)
  for i = 1, #list, 2 do
    if list[i] == name then return list[i + 1] end
  end
  return nil
end

if #due > 0 then
  local last = nil
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
    if field(g, 'name') == ARGV[2] then last = field(g, 'last-delivered-id') end
  end
  if last then
    local ms, seq = string.match(last, '^(%d+)-(%d+)$')
    local keep = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
    local pending = redis.call('XPENDING', KEYS[2], ARGV[2])
    if tonumber(pending[1]) > 0 then keep = pending[2] end
    redis.call('XTRIM', KEYS[2], 'MINID', '~', keep)
    local retention = tonumber(ARGV[3])
    for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[2], ARGV[2])) do
      if tonumber(field(c, 'idle')) >= retention and tonumber(field(c, 'pending')) == 0 then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[2], field(c, 'name'))
      end
    end
  end
end

local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return {#due, -1, now} end
return {#due, tonumber(nxt[2]), now}
