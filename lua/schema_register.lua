-- schema_register: add a schema version to a topic's subject, atomically.
-- Versions are 1, 2, 3 ... with no gap and no duplicate; a document equal to
-- a registered version (the same canonical text) returns that version. The
-- caller has checked compatibility against the subject as it read it: if
-- another registration came in between, nothing is written and the caller
-- reads again, so every version was checked against its predecessors.
-- KEYS[1] the subject (hash: latest = N, mode, v:<N> = document,
--         h:<sha1 of document> = N)
-- ARGV[1] the latest version the caller checked against (0 for none)
-- ARGV[2] the document (canonical JSON text)
-- Returns {version, 1} when registered now, {version, 0} when the document
-- was registered before, {-1, latest} when the subject moved on.
local sha = redis.sha1hex(ARGV[2])
local existing = redis.call('HGET', KEYS[1], 'h:' .. sha)
if existing then return {tonumber(existing), 0} end
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0')
if latest ~= tonumber(ARGV[1]) then return {-1, latest} end
local version = latest + 1
redis.call('HSET', KEYS[1], 'latest', version, 'v:' .. version, ARGV[2], 'h:' .. sha, version)
return {version, 1}
