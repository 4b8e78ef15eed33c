-- publish_dedup: idempotent publish into a stream. If the dedup marker
-- exists, nothing is written and the first message's id is returned;
-- otherwise the entry is added and the marker set to "<lane>:<id>" with a
-- TTL (the lane too, so a repeat names the first message whatever its
-- priority).
-- KEYS[1] dedup marker (string)  KEYS[2] partition lane stream
-- ARGV[1] marker TTL ms  ARGV[2] MAXLEN ~ cap, or "" for none
-- ARGV[3..8] the entry: k, key, h, headers, d, payload  ARGV[9] its lane
-- Returns {1, id} when published, {0, marker} when a duplicate (the marker
-- is "<lane>:<id>", or a bare id when an older version set it).
local first = redis.call('GET', KEYS[1])
if first then return {0, first} end
local id
if ARGV[2] ~= '' then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
    ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
else
  id = redis.call('XADD', KEYS[2], '*',
    ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
end
redis.call('SET', KEYS[1], ARGV[9] .. ':' .. id, 'PX', ARGV[1])
return {1, id}
