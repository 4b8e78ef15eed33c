-- lease_renew: extend a lease the caller still holds, with the same epoch.
-- A lease that already expired is not renewed, even if nobody took it: the
-- holder must stop and acquire again (with a new epoch).
-- KEYS[1] lease (hash: owner, epoch, expires ms)
-- ARGV[1] member id  ARGV[2] epoch  ARGV[3] lease ttl ms
-- Returns 1 when renewed, 0 when the lease is no longer the caller's.
local now = clock_ms()
if not lease_held(KEYS[1], ARGV[1], ARGV[2], now) then return 0 end
redis.call('HSET', KEYS[1], 'expires', now + tonumber(ARGV[3]))
return 1
