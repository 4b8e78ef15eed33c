-- schema_policy: set whether a topic's publishes must match its schema.
-- KEYS[1] the topic's meta hash
-- ARGV[1] 'required', or '' for optional
-- Returns 1, or 0 when there is no such topic: nothing is written, so a
-- topic deleted meanwhile does not come back as a half-made meta hash.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'schema', ARGV[1])
return 1
