-- Taking the head batch for sending, shared by take.lua (before a POST) and commit.lua (which
-- takes the next batch in the same round trip as the outcome of the one before).
--
-- KEYS     none: this file only defines a function; callers pass the plan's key names.
-- ARGV     none.
-- Defines  take_head(prefix, lease_key, lane_key, state_key, bucket_key, batch_key, token, bid,
--            rate, burst, ttl_ms, now_us, retention_s) -> take.lua's answer (see its header).
--            `rate` and `burst` are the config file's; runtime values (`plans set`) in the
--            plan's state win over them.
--@include lib/fence.lua
--@include lib/bucket.lua

-- Batches dropped in one call at most (an expired campaign's run), so a call stays short.
local DROP_MAX = 500

local function take_head(prefix, lease_key, lane_key, state_key, bucket_key, batch_key, token,
                         bid, rate, burst, ttl_ms, now_us, retention_s)
  local now_ms = math.floor(now_us / 1000)
  local refused, index = fenced(lease_key, lane_key, token, bid, ttl_ms)
  if refused then
    return refused
  end

  local st = redis.call('HMGET', state_key, 'cooldown_until', 'circuit', 'probe_at', 'eff_rate',
    'paused', 'rate', 'burst', 'batch_size')
  local due = next_admission(prefix)
  if due and tonumber(due) <= now_ms then
    -- Scheduled campaigns now due join the tail: they never go ahead of this head.
    admit(prefix, lane_key, now_ms)
  end
  if st[5] then
    return {'paused'}
  end
  if st[6] then rate = tonumber(st[6]) end
  if st[7] then burst = tonumber(st[7]) end

  local b = redis.call('HMGET', batch_key, 'n', 'inflight', 'first_at', 'payload', 'campaign',
    'fails', 'waits', 'suspect', 'then_suspect', 'ctl', 'exp', 'sv')
  if not b[1] then
    return redis.error_reply('batch ' .. bid .. ' is in the lane but has no record')
  end
  if b[2] then
    return {'unknown', b[3] or b[2], b[5] or '', b[6] or '0', b[9] or ''}
  end
  local n = tonumber(b[1])
  if b[10] == 'paused' then
    park(prefix, lane_key, bid, index, b[5])
    return {'moved', lane_head(lane_key, 0) or ''}
  end
  if b[10] == 'canceled' or (b[11] and tonumber(b[11]) <= now_ms) then
    -- Never to be posted: drop it, and the rest of an expired campaign's run with it.
    local why = b[10] == 'canceled' and 'canceled' or 'expired'
    drop(prefix, lane_key, batch_key, bid, index, n, b[5], why, now_ms, retention_s)
    for _ = 2, DROP_MAX do
      local nid, ni = lane_head(lane_key, 0)
      if not nid then break end
      local nb = redis.call('HMGET', prefix .. 'b:' .. nid, 'n', 'inflight', 'campaign', 'exp')
      if nb[2] or not nb[4] or tonumber(nb[4]) > now_ms then break end
      drop(prefix, lane_key, prefix .. 'b:' .. nid, nid, ni, tonumber(nb[1]), nb[3], 'expired',
        now_ms, retention_s)
    end
    return {'moved', lane_head(lane_key, 0) or ''}
  end

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

  if b[8] then
    -- Known to hold a bad recipient: it is split without spending a request or tokens.
    return {'go', b[4], n, b[5], b[6] or '0', b[7] or '0', b[8], b[3] or '', b[9] or '',
      lane_head(lane_key, index + 1) or ''}
  end
  local eff = tonumber(st[4]) or rate
  if eff > rate then eff = rate end

  local granted, wait_ms = bucket_take(bucket_key, eff, burst, n, now_us, true)
  if granted == 0 then
    if wait_ms < 0 then
      return {'oversize', n, b[4], tostring(burst), st[8] or ''}
    end
    return {'wait', wait_ms}
  end
  redis.call('HSET', batch_key, 'inflight', now_ms, 'last_at', now_ms)
  if not b[3] then
    redis.call('HSET', batch_key, 'first_at', now_ms)
  end
  -- Someone opted out since this batch was checked: the sender checks it once more.
  local recheck = (redis.call('GET', prefix .. 'supv') or '0') ~= (b[12] or '0') and '1' or ''
  return {'go', b[4], n, b[5], b[6] or '0', b[7] or '0', '', b[3] or now_ms, b[9] or '',
      lane_head(lane_key, index + 1) or '', recheck}
end
