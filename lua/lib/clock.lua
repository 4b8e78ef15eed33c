-- [shared piece: clock] clock_ms(): Redis's clock in milliseconds. Scripts
-- take the time from Redis, never from a caller, so every member agrees.
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
