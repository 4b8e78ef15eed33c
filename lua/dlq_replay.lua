-- dlq_replay: put a dead letter back into a stream, then remove it from the
-- dead-letter stream (it never leaves the DLQ before it is back).
-- KEYS[1] dead-letter stream  KEYS[2] target: a lane stream of the partition
-- (replay to the whole topic) or a group's retry stream (to that group only)
-- ARGV[1] dead-letter entry id  ARGV[2] "topic" or "group"
-- Returns the new stream id, or 0 when there is no such entry.
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = {}
local fields = e[1][2]
for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
local id
if ARGV[2] == 'topic' then
  -- 'o' keeps the message's first id (its identity) across the replay.
  id = redis.call('XADD', KEYS[2], '*', 'k', f['k'] or '', 'h', f['h'] or '', 'd', f['d'] or '',
    'o', f['o'] or '')
else
  id = redis.call('XADD', KEYS[2], '*', 'k', f['k'] or '', 'h', f['h'] or '', 'd', f['d'] or '',
    'l', f['l'] or '0', 'a', '1', 'o', f['o'] or '')
end
redis.call('XDEL', KEYS[1], ARGV[1])
return id
