-- group_assign: replace a group's target assignment if nobody changed it
-- since the caller read it (compare-and-set on the version).
-- KEYS[1] assignment (hash partition -> member, field "v" = version)
-- ARGV[1] the version the caller read
-- ARGV[2..] partition, member, partition, member ... (the new assignment)
-- Returns {1, new version} when written, {0, current version} when stale.
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[1]) then return {0, version} end
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'v', version + 1)
return {1, version + 1}
