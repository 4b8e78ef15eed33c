-- promote_retry: move a group's due retries into the group's retry stream.
-- KEYS[1] group retry set (zset: member = MessagePack [nonce, lane, key,
-- headers, payload, attempt, origin id], score = due ms)
-- KEYS[2] group retry stream
-- ARGV[1] most to move
-- Returns {moved, next due ms or -1, now ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local e = cmsgpack.unpack(member)
  redis.call('XADD', KEYS[2], '*', 'k', e[3], 'h', e[4], 'd', e[5],
    'l', e[2], 'a', e[6], 'o', e[7])
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return {#due, -1, now} end
return {#due, tonumber(nxt[2]), now}
