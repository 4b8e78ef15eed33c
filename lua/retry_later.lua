-- retry_later: shared mode: ack a failed message and park it in the group's
-- retry set until due (it comes back through the group's retry stream, so
-- no other group sees it again). Also wakes the partition's promoters.
-- KEYS[1] the stream it was read from  KEYS[2] group retry set (zset)
-- KEYS[3] wake list
-- ARGV[1] group  ARGV[2] message id  ARGV[3] wait ms
-- ARGV[4] member: MessagePack [nonce, lane, key, headers, payload, next attempt, origin id]
-- Returns the due time (ms, Redis clock).
local now = clock_ms()
local due = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], due, ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('LPUSH', KEYS[3], due)
redis.call('LTRIM', KEYS[3], 0, 0)
return due
