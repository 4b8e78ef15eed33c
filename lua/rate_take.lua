-- rate_take: take up to N permits from a group's rate limit (a fixed window
-- shared by all members of the group).
-- KEYS[1] the group's rate state (hash: window, used)
-- ARGV[1] permits per window  ARGV[2] window ms  ARGV[3] permits wanted
-- Returns {granted, ms until the current window ends, the window's number}.
local now = clock_ms()
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local window = math.floor(now / window_ms)
local used = 0
if tonumber(redis.call('HGET', KEYS[1], 'window') or '-1') == window then
  used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
end
local granted = math.min(tonumber(ARGV[3]), limit - used)
if granted < 0 then granted = 0 end
redis.call('HSET', KEYS[1], 'window', window, 'used', used + granted)
redis.call('PEXPIRE', KEYS[1], window_ms * 2)
return {granted, (window + 1) * window_ms - now, window}
