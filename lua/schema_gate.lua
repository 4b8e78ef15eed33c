-- schema_gate: what a producer (or a validating consumer) needs to check
-- payloads against a topic's schema, read in one step: whether the topic
-- exists, whether its publishes must match, and one version's document.
-- KEYS[1] the topic's meta hash (field schema: 'required', or '' / missing
--         for optional)
-- KEYS[2] the topic's schema subject (same hash tag, same slot)
-- ARGV[1] the version wanted, or '' for the latest
-- Returns {0} when there is no such topic, else {1, policy, version, document};
-- version is 0 and document '' when there is no such version.
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local policy = redis.call('HGET', KEYS[1], 'schema') or ''
local version = ARGV[1]
if version == '' then version = redis.call('HGET', KEYS[2], 'latest') end
if not version then return {1, policy, 0, ''} end
local document = redis.call('HGET', KEYS[2], 'v:' .. version)
if not document then return {1, policy, 0, ''} end
return {1, policy, tonumber(version), document}
