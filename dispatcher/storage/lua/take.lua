-- Take the head batch of a plan's lane for sending, if the lease, the plan's state and the
-- token bucket all allow it.  One round trip before every POST.
--
-- KEYS[1]  {plan}:lease   fencing token of the current sender
-- KEYS[2]  {plan}:lane    LIST of batch ids, FIFO
-- KEYS[3]  {plan}:state   HASH cooldown_until, circuit, probe_at, eff_rate (ms / msg/s)
-- KEYS[4]  {plan}:bucket  token bucket (bucket.lua)
-- KEYS[5]  {plan}:b:<id>  the batch the caller believes is at the head
-- ARGV[1]  fencing token      ARGV[2] batch id     ARGV[3] rate     ARGV[4] burst
-- ARGV[5]  lease ttl ms       ARGV[6] now_us ("" = Redis TIME)
--
-- Returns one of
--   {"lost"}                       the lease is not ours any more: stop at once
--   {"moved", head_id | ""}        the head is another batch (or the lane is empty)
--   {"circuit", wait_ms}           the plan's circuit is open, next probe in wait_ms
--   {"cooldown", wait_ms}          the plan backs off (429 Retry-After, 5xx backoff)
--   {"unknown", first_at_ms, attempt_at_ms}  an earlier attempt's outcome is unknown: look it
--                                   up by client_reference before sending again
--   {"oversize", n}                n is above burst: split before it can ever be granted
--   {"wait", wait_ms}              not enough tokens yet
--   {"go", payload, n, campaign, fails, waits, suspect, now_ms, then_suspect, next_id}
--                                  tokens taken, batch marked in flight: POST it now.  When
--                                  `suspect` is set (the batch is known to hold a refused
--                                  recipient) no tokens are taken: the caller splits it.
--                                  next_id is the batch after it, for commit.lua to take
--                                  in the same round trip as this batch's outcome.
--@include bucket_take

--@function
local function take_head(lease_key, lane_key, state_key, bucket_key, batch_key, token, bid,
                         rate, burst, ttl_ms, now_us)
  local now_ms = math.floor(now_us / 1000)
  if redis.call('GET', lease_key) ~= token then
    return {'lost'}
  end
  redis.call('PEXPIRE', lease_key, ttl_ms)

  local head = redis.call('LINDEX', lane_key, 0)
  if head ~= bid then
    return {'moved', head or ''}
  end

  local st = redis.call('HMGET', state_key, 'cooldown_until', 'circuit', 'probe_at', 'eff_rate')
  if st[2] == 'open' then
    local probe_at = tonumber(st[3]) or 0
    if probe_at > now_ms then
      return {'circuit', probe_at - now_ms}
    end
  end
  local cooldown = tonumber(st[1]) or 0
  if cooldown > now_ms then
    return {'cooldown', cooldown - now_ms}
  end

  local b = redis.call('HMGET', batch_key, 'n', 'inflight', 'first_at', 'payload', 'campaign',
    'fails', 'waits', 'suspect', 'then_suspect')
  if not b[1] then
    return redis.error_reply('batch ' .. bid .. ' is in the lane but has no record')
  end
  if b[2] then
    return {'unknown', b[3] or b[2], b[2]}
  end
  local n = tonumber(b[1])
  if b[8] then
    -- Known to hold a bad recipient: it is split without spending a request or tokens.
    return {'go', b[4], n, b[5], b[6] or '0', b[7] or '0', b[8], now_ms, b[9] or '',
      redis.call('LINDEX', lane_key, 1) or ''}
  end
  local eff = tonumber(st[4]) or rate
  if eff > rate then eff = rate end

  local r = bucket_take(bucket_key, eff, burst, n, now_us, true)
  if r[1] == 0 then
    if r[2] < 0 then
      return {'oversize', n}
    end
    return {'wait', r[2]}
  end
  redis.call('HSET', batch_key, 'inflight', now_ms, 'last_at', now_ms)
  if not b[3] then
    redis.call('HSET', batch_key, 'first_at', now_ms)
  end
  return {'go', b[4], n, b[5], b[6] or '0', b[7] or '0', '', now_ms, b[9] or '',
      redis.call('LINDEX', lane_key, 1) or ''}
end
--@end

local now_us
if ARGV[6] and ARGV[6] ~= '' then
  now_us = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
return take_head(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2],
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), now_us)
