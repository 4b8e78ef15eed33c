-- progress: keep a running handler's latest progress beside its message, in
-- the hash its result will join (fields p, pt), only while the caller holds
-- the partition's lease at this epoch (ordered mode): a member that lost
-- its lease cannot report for a message that is now another's.
-- KEYS[1] lease (hash; read only when ARGV[2] is not "")  KEYS[2] result (hash)
-- ARGV[1] member  ARGV[2] epoch ("" in shared mode)  ARGV[3] progress (JSON)
-- ARGV[4] ttl ms of the hash
-- Returns 1, or -1 when the lease is not the caller's (nothing written).
local now = clock_ms()
if ARGV[2] ~= '' and not lease_held(KEYS[1], ARGV[1], ARGV[2], now) then return -1 end
redis.call('HSET', KEYS[2], 'p', ARGV[3], 'pt', string.format('%d', now))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
