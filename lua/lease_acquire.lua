-- lease_acquire: take (or keep) a group's lease on a partition. The epoch
-- (fencing token) grows whenever the lease changes hands, including to a new
-- incarnation of the same member id (a restarted static member), so acks of
-- an older holder are refused. A new epoch is at least Redis's clock in ms,
-- so epochs keep growing even after Redis lost recent writes (a restart
-- with appendfsync everysec, a failover to a lagging replica) as long as its
-- clock does not go back further than what was lost.
-- KEYS[1] lease (hash: owner, epoch, expires ms, fence)
-- ARGV[1] member id  ARGV[2] lease ttl ms  ARGV[3] epoch the caller holds (0 if none)
-- Returns {1, epoch} when held, {0, owner, expires} when another holds it.
local now = clock_ms()
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires') or '0')
local live = owner ~= '' and expires > now

if live and owner ~= ARGV[1] then
  return {0, owner, expires}
end
if not (live and owner == ARGV[1] and epoch == tonumber(ARGV[3])) then
  epoch = math.max(epoch + 1, now)
  -- A new holder starts with no fence (see read_fenced).
  redis.call('HDEL', KEYS[1], 'fence')
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch,
  'expires', now + tonumber(ARGV[2]))
return {1, epoch}
