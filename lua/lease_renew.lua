-- lease_renew: extend a lease the caller still holds, with the same epoch.
-- A lease that already expired is not renewed, even if nobody took it: the
-- holder must stop and acquire again (with a new epoch).
-- KEYS[1] lease (hash: owner, epoch, expires ms)
-- ARGV[1] member id  ARGV[2] epoch  ARGV[3] lease ttl ms
-- Returns 1 when renewed, 0 when the lease is no longer the caller's.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = redis.call('HGET', KEYS[1], 'owner')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires') or '0')
if owner ~= ARGV[1] or epoch ~= ARGV[2] or expires <= now then return 0 end
redis.call('HSET', KEYS[1], 'expires', now + tonumber(ARGV[3]))
return 1
