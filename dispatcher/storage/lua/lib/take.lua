-- Taking the head batch for sending, shared by take.lua (before a POST) and commit.lua (which
-- takes the next batch in the same round trip as the outcome of the one before).
--
-- KEYS     none: this file only defines a function; callers pass the plan's key names.
-- ARGV     none.
-- Defines  take_head(lease_key, lane_key, state_key, bucket_key, batch_key, token, bid, rate,
--            burst, ttl_ms, now_us) -> take.lua's answer (see its header).
--@include lib/fence.lua
--@include lib/bucket.lua

local function take_head(lease_key, lane_key, state_key, bucket_key, batch_key, token, bid,
                         rate, burst, ttl_ms, now_us)
  local now_ms = math.floor(now_us / 1000)
  local refused = fenced(lease_key, lane_key, token, bid, ttl_ms)
  if refused then
    return refused
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
    return {'unknown', b[3] or b[2], b[5] or '', b[6] or '0', b[9] or ''}
  end
  local n = tonumber(b[1])
  if b[8] then
    -- Known to hold a bad recipient: it is split without spending a request or tokens.
    return {'go', b[4], n, b[5], b[6] or '0', b[7] or '0', b[8], b[3] or '', b[9] or '',
      redis.call('LINDEX', lane_key, 1) or ''}
  end
  local eff = tonumber(st[4]) or rate
  if eff > rate then eff = rate end

  local r = bucket_take(bucket_key, eff, burst, n, now_us, true)
  if r[1] == 0 then
    if r[2] < 0 then
      return {'oversize', n, b[4]}
    end
    return {'wait', r[2]}
  end
  redis.call('HSET', batch_key, 'inflight', now_ms, 'last_at', now_ms)
  if not b[3] then
    redis.call('HSET', batch_key, 'first_at', now_ms)
  end
  return {'go', b[4], n, b[5], b[6] or '0', b[7] or '0', '', b[3] or now_ms, b[9] or '',
      redis.call('LINDEX', lane_key, 1) or ''}
end
