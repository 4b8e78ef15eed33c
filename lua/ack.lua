-- ack: acknowledge handled messages of a partition lane for a group, only
-- while the caller holds the partition's lease with this epoch (fencing: a
-- member that lost its lease cannot ack what is now another's).
-- KEYS[1] lease (hash: owner, epoch, expires ms)  KEYS[2] partition lane stream
-- ARGV[1] group  ARGV[2] member id  ARGV[3] epoch  ARGV[4..] message ids
-- Returns the number acked, or -1 when the lease is not the caller's (nothing acked).
local now = clock_ms()
if not lease_held(KEYS[1], ARGV[2], ARGV[3], now) then return -1 end
if #ARGV < 4 then return 0 end
return redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, 4))
