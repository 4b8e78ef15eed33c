-- schedule_mark: record that a schedule published a fire, only ever moving
-- its mark forward (schedulers racing for fires may finish out of order).
-- KEYS[1] last fires (hash schedule name -> ms since the epoch)
-- ARGV[1] schedule name  ARGV[2] fire time ms
-- Returns 1 when the mark moved forward, 0 when it was already at or past it.
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= last then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
