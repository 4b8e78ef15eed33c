-- cancel_request: asks a group to cancel a message: its members skip it if
-- it has not started, and stop it if it runs or waits to retry. Members see
-- the request at their next heartbeat (the count in field "v" moved).
-- KEYS[1] the group's cancel requests (hash message id -> requested at ms)
-- ARGV[1] message id (<partition>:<lane>:<first id>)
-- Returns the number of requests so far.
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', clock_ms()))
return redis.call('HINCRBY', KEYS[1], 'v', 1)
