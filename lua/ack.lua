-- ack: acknowledge handled messages of a partition lane for a group, and keep
-- what their handlers returned, in ordered mode only while the caller holds
-- the partition's lease with this epoch (fencing: a member that lost its
-- lease can neither ack nor answer for what is now another's). A result is
-- written only with its own ack, so nothing is acked without its result and
-- nothing has a result without its ack; an id some other member acked first
-- keeps that member's result.
-- KEYS[1] lease (hash: owner, epoch, expires ms; read only when ARGV[3] is not "")
-- KEYS[2] partition lane stream (or the group's retry stream)
-- KEYS[3..] result keys (hash), one per result below, in order (a progress
--   already reported there stays)
-- ARGV[1] group  ARGV[2] member id  ARGV[3] epoch ("" in shared mode: no lease)
-- ARGV[4] n, how many ids are acked without a result  ARGV[5..4+n] those ids
-- then six per result: id, ttl ms (0: not kept), status ("ok" or
--   "cancelled"), value (MessagePack), reply channel ("" for none), reply message
-- Returns the number acked, or -1 when the lease is not the caller's (nothing acked).
local now = clock_ms()
if ARGV[3] ~= '' and not lease_held(KEYS[1], ARGV[2], ARGV[3], now) then return -1 end
local n = tonumber(ARGV[4])
local acked = 0
if n > 0 then acked = redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, 5, 4 + n)) end
local i, k = 5 + n, 3
while i + 5 <= #ARGV do
  if redis.call('XACK', KEYS[2], ARGV[1], ARGV[i]) == 1 then
    acked = acked + 1
    local ttl = tonumber(ARGV[i + 1])
    if ttl > 0 then
      redis.call('HDEL', KEYS[k], 'e', 'a', 'd')
      redis.call('HSET', KEYS[k], 's', ARGV[i + 2], 'v', ARGV[i + 3], 't', string.format('%d', now))
      redis.call('PEXPIRE', KEYS[k], ttl)
    end
    if ARGV[i + 4] ~= '' then redis.call('PUBLISH', ARGV[i + 4], ARGV[i + 5]) end
  end
  i, k = i + 6, k + 1
end
return acked
