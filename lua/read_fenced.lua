-- read_fenced: an ordered-mode owner reads new entries of one partition, only
-- while it holds the partition's lease at its epoch. Fencing the read (as
-- `ack` fences the ack): a member whose lease moved on while it was paused or
-- cut off cannot take entries that are now the new owner's; they would sit
-- in its pending list, unseen, while later entries of their keys ran.
-- The fence is the holder's own: before re-reading its pending entries
-- after a read whose reply was lost, the holder writes a fresh one, so that
-- read, if it reaches Redis only now, carries the old value and reads
-- nothing (on a single server a WATCH of the lease does the same).
-- KEYS[1] lease (hash: owner, epoch, expires ms, fence)
-- KEYS[2..] the streams, in priority order: lanes 0.., then the group's retry stream
-- ARGV[1] group  ARGV[2] member id  ARGV[3] epoch  ARGV[4] most entries to read
-- ARGV[5] the fence the caller last wrote ("" if none since it took the lease)
-- Returns -1 when the lease is not the caller's at that epoch and fence
-- (nothing read). Otherwise
-- {reads, last}: reads = {{stream, entries}, ...} as XREADGROUP replies them;
-- when nothing was read, last[i] is the newest entry id of KEYS[i + 1] ("0-0"
-- if none), for an XREAD that wakes the caller on anything newer.
if not lease_held(KEYS[1], ARGV[2], ARGV[3], clock_ms(), ARGV[5]) then return -1 end
local left = tonumber(ARGV[4])
local reads = {}
for i = 2, #KEYS do
  if left <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left,
    'STREAMS', KEYS[i], '>')
  if r then
    left = left - #r[1][2]
    reads[#reads + 1] = r[1]
  end
end
local last = {}
if #reads == 0 then
  for i = 2, #KEYS do
    local e = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
    last[#last + 1] = e[1] and e[1][1] or '0-0'
  end
end
return {reads, last}
