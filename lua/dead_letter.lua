-- dead_letter: move a message that will not be retried to the dead-letter
-- stream, atomically with its ack (and, in ordered mode, only while the
-- caller holds the partition's lease). A request's failure is kept as its
-- result and sent to the requester in the same step.
-- KEYS[1] lease (hash; only read when ARGV[4] is "1")
-- KEYS[2] the stream the message was read from (partition lane or group retry stream)
-- KEYS[3] dead-letter stream  KEYS[4] group attempts (hash)
-- KEYS[5] (requests only) the message's result (hash)
-- ARGV[1] group  ARGV[2] member  ARGV[3] epoch  ARGV[4] "1" to check the lease
-- ARGV[5] message id
-- ARGV[6..13] key, headers, payload, partition, lane, origin id, attempts, error
-- ARGV[14..16] (with KEYS[5]) result ttl ms (0: not kept), reply channel
--   ("" for none), reply message
-- Returns the dead-letter entry id, or -1 when the lease is not the caller's.
local now = clock_ms()
if ARGV[4] == '1' and not lease_held(KEYS[1], ARGV[2], ARGV[3], now) then return -1 end
local id = redis.call('XADD', KEYS[3], '*',
  'k', ARGV[6], 'h', ARGV[7], 'd', ARGV[8], 'g', ARGV[1], 'p', ARGV[9],
  'l', ARGV[10], 'o', ARGV[11], 'a', ARGV[12], 'e', ARGV[13],
  't', string.format('%d', now))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[5])
redis.call('HDEL', KEYS[4], ARGV[5])
if KEYS[5] then
  local ttl = tonumber(ARGV[14])
  if ttl > 0 then
    redis.call('HDEL', KEYS[5], 'v')
    redis.call('HSET', KEYS[5], 's', 'failed', 'e', ARGV[13], 'a', ARGV[12], 'd', id,
      't', string.format('%d', now))
    redis.call('PEXPIRE', KEYS[5], ttl)
  end
  if ARGV[15] ~= '' then redis.call('PUBLISH', ARGV[15], ARGV[16]) end
end
return id
