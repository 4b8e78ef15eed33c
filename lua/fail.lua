-- fail: record a failed attempt of a message in ordered mode (the message
-- stays pending; its owner retries it after the wait). Recorded so that a
-- new owner after a crash continues the attempt count and the wait.
-- Refused when the caller no longer holds the partition's lease.
-- KEYS[1] lease (hash: owner, epoch, expires)  KEYS[2] group attempts (hash)
-- ARGV[1] member  ARGV[2] epoch  ARGV[3] message id
-- ARGV[4] failures so far  ARGV[5] wait before the next attempt (ms)
-- ARGV[6] the last error
-- Writes the JSON record {"n": failures, "due": now + wait, "err": error}
-- (due on Redis's clock, so the caller needs no TIME round trip).
-- Returns 1 when recorded, -1 when the lease is not the caller's.
local now = clock_ms()
if not lease_held(KEYS[1], ARGV[1], ARGV[2], now) then return -1 end
local record = cjson.encode({
  n = tonumber(ARGV[4]),
  due = now + tonumber(ARGV[5]),
  err = ARGV[6],
})
redis.call('HSET', KEYS[2], ARGV[3], record)
return 1
