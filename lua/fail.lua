-- fail: record a failed attempt of a message in ordered mode (the message
-- stays pending; its owner retries it after the wait). Recorded so that a
-- new owner after a crash continues the attempt count and the wait.
-- Refused when the caller no longer holds the partition's lease.
-- KEYS[1] lease (hash: owner, epoch, expires)  KEYS[2] group attempts (hash)
-- ARGV[1] member  ARGV[2] epoch  ARGV[3] message id
-- ARGV[4] the record: JSON {"n": failures so far, "due": ms, "err": text}
-- Returns 1 when recorded, -1 when the lease is not the caller's.
local now = clock_ms()
if not lease_held(KEYS[1], ARGV[1], ARGV[2], now) then return -1 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1
