-- group_heartbeat: a member says it is alive; dead members are expired.
-- KEYS[1] members (zset member -> session deadline ms)
-- KEYS[2] member info (hash member -> "static|joined_ms|last_heartbeat_ms")
-- KEYS[3] assignment (hash partition -> member, field "v" = version)
-- KEYS[4] the group's pause flag (string, present while paused)
-- KEYS[5] the group's cancel requests (hash; field "v" counts them)
-- ARGV[1] member id  ARGV[2] session timeout ms  ARGV[3] "1" if static, else "0"
-- ARGV[4] "leave" to leave the group instead of heartbeating, else ""
-- Returns {now ms, {live members...}, version, {partition, member, ...}, paused 0/1,
--   cancel requests so far}.
local now = clock_ms()

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end

if ARGV[4] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  local joined = now
  local info = redis.call('HGET', KEYS[2], ARGV[1])
  if info then
    local j = string.match(info, '^[01]|(%d+)|')
    if j then joined = tonumber(j) end
  end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1],
    ARGV[3] .. '|' .. string.format('%d', joined) .. '|' .. string.format('%d', now))
end

local live = redis.call('ZRANGE', KEYS[1], 0, -1)
local version = tonumber(redis.call('HGET', KEYS[3], 'v') or '0')
local flat = redis.call('HGETALL', KEYS[3])
local assign = {}
for i = 1, #flat, 2 do
  if flat[i] ~= 'v' then
    assign[#assign + 1] = flat[i]
    assign[#assign + 1] = flat[i + 1]
  end
end
return {now, live, version, assign, redis.call('EXISTS', KEYS[4]),
  tonumber(redis.call('HGET', KEYS[5], 'v') or '0')}
