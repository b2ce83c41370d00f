-- The fencing-token check every write of a lease holder starts with: a sender whose lease
-- expired (a long GC pause, a partition) can no longer change the plan after a new sender
-- took over, and a write meant for the head batch never lands on another one.
--
-- KEYS     none: this file only defines functions; callers pass their own key names.
-- ARGV     none.
-- Defines  holds_lease(lease_key, token) -> true when `token` is the plan's current lease
--          fenced(lease_key, lane_key, token, bid, renew_ms) -> nil, index of the head when
--            the caller holds the lease and `bid` is the head batch (paused campaigns'
--            markers skipped; the lease renewed for renew_ms if given); else the refusal to
--            return: {"lost"} or {"moved", head id | ""}
--@include lib/lane.lua
local function holds_lease(lease_key, token)
  return redis.call('GET', lease_key) == token
end

local function fenced(lease_key, lane_key, token, bid, renew_ms)
  if not holds_lease(lease_key, token) then
    return {'lost'}
  end
  if renew_ms then
    redis.call('PEXPIRE', lease_key, renew_ms)
  end
  local head, index = lane_head(lane_key, 0)
  if head ~= bid then
    return {'moved', head or ''}
  end
  return nil, index
end
