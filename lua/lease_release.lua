-- lease_release: give a lease back at once (graceful handover), keeping the
-- epoch so the next owner's is higher.
-- KEYS[1] lease (hash: owner, epoch, expires ms)
-- ARGV[1] member id  ARGV[2] epoch
-- Returns 1 when released, 0 when it was no longer the caller's.
local owner = redis.call('HGET', KEYS[1], 'owner')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if owner ~= ARGV[1] or epoch ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '', 'expires', 0)
return 1
