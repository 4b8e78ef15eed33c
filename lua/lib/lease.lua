-- [shared piece: lease] lease_held(key, member, epoch, now, fence): whether
-- the partition lease at `key` (hash: owner, epoch, expires ms, fence) is
-- `member`'s at `epoch` and has not expired by `now`; with `fence` (a read
-- fence, see read_fenced), also that the lease carries that fence ("" for
-- none). Every step that may only run while the caller holds the lease
-- calls this guard before it writes anything.
local function lease_held(key, member, epoch, now, fence)
  local l = redis.call('HMGET', key, 'owner', 'epoch', 'expires', 'fence')
  if l[1] ~= member or l[2] ~= epoch or tonumber(l[3] or '0') <= now then
    return false
  end
  return fence == nil or (l[4] or '') == fence
end
