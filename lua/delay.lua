-- delay: put a message aside in its partition's delayed set until it is due,
-- with the due time on Redis's clock. Optionally idempotent by dedup id.
-- KEYS[1] partition delayed set (zset, score = due ms)
-- KEYS[2] the partition's wake list (promoters block on it)
-- KEYS[3] dedup marker (optional: only when ARGV[4] is not "")
-- ARGV[1] delay ms (when ARGV[2] is "rel") or due ms (when "abs")
-- ARGV[2] "rel" or "abs"
-- ARGV[3] member: the MessagePack-encoded delayed entry (unique by a nonce)
-- ARGV[4] dedup marker TTL ms, or "" without dedup  ARGV[5] the message's lane
-- Returns {1, token} when stored, {0, marker} when a duplicate; token is
-- "<due ms>-<sha1 of the member>", which names the entry (promote.lua gives
-- it to the stream entry as its first id), and the marker "<lane>:<token>"
-- (or the bare token an older version set).
if ARGV[4] ~= '' then
  local first = redis.call('GET', KEYS[3])
  if first then return {0, first} end
end
local due = tonumber(ARGV[1])
if ARGV[2] == 'rel' then
  due = clock_ms() + due
end
redis.call('ZADD', KEYS[1], due, ARGV[3])
-- Wake promoters only when this is now the earliest due message.
local first_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if tonumber(first_due[2]) >= due then
  redis.call('LPUSH', KEYS[2], due)
  redis.call('LTRIM', KEYS[2], 0, 0)
end
local token = string.format('%d', due) .. '-' .. redis.sha1hex(ARGV[3])
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[3], ARGV[5] .. ':' .. token, 'PX', ARGV[4])
end
return {1, token}
