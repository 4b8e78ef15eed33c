-- responders: how many members of a group could answer a request now (a
-- heartbeat within their session).
-- KEYS[1] the group's members (zset, score = session deadline ms)
-- Returns the number of live members.
local now = clock_ms()
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', now), '+inf')
