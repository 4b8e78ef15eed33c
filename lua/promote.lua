-- promote: move due delayed messages of a partition into their lane streams.
-- KEYS[1] delayed set (zset: member = MessagePack [nonce, lane, key, headers,
-- payload], score = due ms)  KEYS[2..] the partition's lane streams, lane 0 first
-- ARGV[1] most to move  ARGV[2] MAXLEN ~ cap, or "" for none
-- Each moved entry carries 'o', its token "<due ms>-<sha1 of the member>" as
-- delay.lua returned it at publish: the first id in the message's identity.
-- Returns {moved, next due ms or -1, now ms}.
local now = clock_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES',
  'LIMIT', 0, tonumber(ARGV[1]))
local moved = 0
for i = 1, #due, 2 do
  local member = due[i]
  local e = cmsgpack.unpack(member)
  local stream = KEYS[2 + tonumber(e[2])]
  if stream then
    local token = string.format('%d', tonumber(due[i + 1])) .. '-' .. redis.sha1hex(member)
    if ARGV[2] ~= '' then
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*',
        'k', e[3], 'h', e[4], 'd', e[5], 'o', token)
    else
      redis.call('XADD', stream, '*', 'k', e[3], 'h', e[4], 'd', e[5], 'o', token)
    end
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return {moved, -1, now} end
return {moved, tonumber(nxt[2]), now}
