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
--          fenced_in(lease_key, lane_key, token, bid, anywhere) -> as fenced, but with
--            `anywhere` the batch may be at any place in the lane (a window of batches in
--            flight, max_in_flight > 1: one behind the head is committed or held where it
--            is); its index is found by LPOS.  {"moved", head} when it is not in the lane.
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

local function fenced_in(lease_key, lane_key, token, bid, anywhere)
  if not anywhere then
    return fenced(lease_key, lane_key, token, bid)
  end
  if not holds_lease(lease_key, token) then
    return {'lost'}
  end
  local head, index = lane_head(lane_key, 0)
  if head == bid then
    return nil, index
  end
  -- Within the window a batch is a few places from the head; the bound keeps a batch that
  -- left the lane from scanning a long one.
  local at = redis.call('LPOS', lane_key, bid, 'MAXLEN', 4096)
  if not at then
    return {'moved', head or ''}
  end
  return nil, at
end
