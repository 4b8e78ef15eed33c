-- dead_letter: move a message that will not be retried to the dead-letter
-- stream, atomically with its ack (and, in ordered mode, only while the
-- caller holds the partition's lease).
-- KEYS[1] lease (hash; only read when ARGV[4] is "1")
-- KEYS[2] the stream the message was read from (partition lane or group retry stream)
-- KEYS[3] dead-letter stream  KEYS[4] group attempts (hash)
-- ARGV[1] group  ARGV[2] member  ARGV[3] epoch  ARGV[4] "1" to check the lease
-- ARGV[5] message id
-- ARGV[6..13] key, headers, payload, partition, lane, origin id, attempts, error
-- Returns the dead-letter entry id, or -1 when the lease is not the caller's.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] == '1' then
  local owner = redis.call('HGET', KEYS[1], 'owner')
  local epoch = redis.call('HGET', KEYS[1], 'epoch')
  local expires = tonumber(redis.call('HGET', KEYS[1], 'expires') or '0')
  if owner ~= ARGV[2] or epoch ~= ARGV[3] or expires <= now then return -1 end
end
local id = redis.call('XADD', KEYS[3], '*',
  'k', ARGV[6], 'h', ARGV[7], 'd', ARGV[8], 'g', ARGV[1], 'p', ARGV[9],
  'l', ARGV[10], 'o', ARGV[11], 'a', ARGV[12], 'e', ARGV[13],
  't', string.format('%d', now))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[5])
redis.call('HDEL', KEYS[4], ARGV[5])
return id
