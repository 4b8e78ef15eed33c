-- promote: move due delayed messages of a partition into their lane streams.
-- KEYS[1] delayed set (zset: member = MessagePack [nonce, lane, key, headers,
-- payload], score = due ms)  KEYS[2..] the partition's lane streams, lane 0 first
-- ARGV[1] most to move  ARGV[2] MAXLEN ~ cap, or "" for none
-- Returns {moved, next due ms or -1, now ms}.
local now = clock_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved = 0
for _, member in ipairs(due) do
  local e = cmsgpack.unpack(member)
  local stream = KEYS[2 + tonumber(e[2])]
  if stream then
    if ARGV[2] ~= '' then
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', 'k', e[3], 'h', e[4], 'd', e[5])
    else
      redis.call('XADD', stream, '*', 'k', e[3], 'h', e[4], 'd', e[5])
    end
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return {moved, -1, now} end
return {moved, tonumber(nxt[2]), now}
