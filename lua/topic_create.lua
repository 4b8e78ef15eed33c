-- topic_create: create a topic's settings hash, or check that an existing
-- topic has the same settings. Never changes an existing topic.
-- KEYS[1] topic meta hash
-- ARGV pairs: field, value ... (the settings to compare), then the marker "--",
--   then pairs written on creation only, never compared (created_ms, placement, tags).
-- Returns {1} when created, {0} when it existed with the same settings, or
-- {2, field, existing, requested, ...} for every setting that differs.
local sep = 0
for i = 1, #ARGV do
  if ARGV[i] == '--' then sep = i break end
end
if sep == 0 then return redis.error_reply('ERR topic_create: missing -- marker') end

if redis.call('EXISTS', KEYS[1]) == 1 then
  local diff = {2}
  for i = 1, sep - 1, 2 do
    local have = redis.call('HGET', KEYS[1], ARGV[i])
    if have ~= ARGV[i + 1] then
      diff[#diff + 1] = ARGV[i]
      diff[#diff + 1] = have or ''
      diff[#diff + 1] = ARGV[i + 1]
    end
  end
  if #diff == 1 then return {0} end
  return diff
end

for i = 1, sep - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = sep + 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return {1}
