-- Taking the head batch for sending, shared by take.lua (before a POST) and commit.lua (which
-- takes the next batch in the same round trip as the outcome of the one before).
--
-- KEYS     none: this file only defines a function; callers pass the plan's key names.
-- ARGV     none.
-- Defines  take_head(prefix, lease_key, lane_key, state_key, bucket_key, batch_key, token, bid,
--            rate, burst, ttl_ms, now_us, retention_s) -> take.lua's answer (see its header).
--            `rate` and `burst` are the config file's; runtime values (`plans set`) in the
--            plan's state win over them.
--          take_after(prefix, lease_key, lane_key, state_key, bucket_key, batch_key, token,
--            bid, window, rate, burst, ttl_ms, now_us, retention_s) -> the take of `bid` as the
--            next batch of a window (max_in_flight > 1), or {"later"}.  `window` is the
--            sender's batches in flight, in lane order: `bid` is taken only when the lane
--            starts with exactly those (paused campaigns' markers skipped) and then `bid`, so
--            batches are taken in lane order and a held or foreign batch ahead stops the
--            window.  Anything but a plain send (a batch in flight from an earlier sender,
--            one to park, drop, split, isolate or recheck) answers {"later"} before any
--            write: the sender lets its window empty and takes it as the head.
--@include lib/fence.lua
--@include lib/bucket.lua

-- Batches dropped in one call at most (an expired campaign's run), so a call stays short.
local DROP_MAX = 500

-- The plan's state for a take (HMGET fields in the order take_head reads them), and the rate
-- and burst in force (a runtime `plans set` wins over the caller's configured ones); scheduled
-- campaigns now due join the lane's tail first: they never go ahead of what is queued.
local function plan_state(prefix, lane_key, state_key, now_ms, rate, burst)
  local st = redis.call('HMGET', state_key, 'cooldown_until', 'circuit', 'probe_at', 'eff_rate',
    'paused', 'rate', 'burst', 'batch_size')
  local due = next_admission(prefix)
  if due and tonumber(due) <= now_ms then
    admit(prefix, lane_key, now_ms)
  end
  return st, tonumber(st[6] or rate), tonumber(st[7] or burst)
end

-- The plan may send now: nil, or the refusal (circuit open, cooling down).
local function plan_blocked(st, now_ms)
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
  return nil
end

local function take_head(prefix, lease_key, lane_key, state_key, bucket_key, batch_key, token,
                         bid, rate, burst, ttl_ms, now_us, retention_s)
  local now_ms = math.floor(now_us / 1000)
  local refused, index = fenced(lease_key, lane_key, token, bid, ttl_ms)
  if refused then
    return refused
  end

  local st
  st, rate, burst = plan_state(prefix, lane_key, state_key, now_ms, rate, burst)
  if st[5] then
    return {'paused'}
  end

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

  local blocked = plan_blocked(st, now_ms)
  if blocked then
    return blocked
  end

  if b[8] then
    -- Known to hold a bad recipient: it is split without spending a request or tokens.
    return {'go', b[4], n, b[5], b[6] or '0', b[7] or '0', b[8], b[3] or '', b[9] or '',
      lane_head(lane_key, index + 1) or ''}
  end
  local eff = tonumber(st[4]) or rate
  if eff > rate then eff = rate end

  local granted, wait_ms, left = bucket_take(bucket_key, eff, burst, n, now_us, true)
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
      lane_head(lane_key, index + 1) or '', recheck, left}
end

local function take_after(prefix, lease_key, lane_key, state_key, bucket_key, batch_key, token,
                          bid, window, rate, burst, ttl_ms, now_us, retention_s)
  local now_ms = math.floor(now_us / 1000)
  if not holds_lease(lease_key, token) then
    return {'lost'}
  end
  redis.call('PEXPIRE', lease_key, ttl_ms)
  -- The lane must start with the window, then bid (markers skipped).
  local want, index = 1, nil
  local i = 0
  while index == nil do
    local chunk = redis.call('LRANGE', lane_key, i, i + #window + 15)
    if #chunk == 0 then
      return {'later'}
    end
    for j, v in ipairs(chunk) do
      if string.byte(v, 1) ~= MARK then
        if want <= #window then
          if v ~= window[want] then
            return {'later'}
          end
          want = want + 1
        elseif v == bid then
          index = i + j - 1
          break
        else
          return {'later'}
        end
      end
    end
    i = i + #chunk
  end

  local st
  st, rate, burst = plan_state(prefix, lane_key, state_key, now_ms, rate, burst)
  if st[5] then
    return {'paused'}
  end
  local blocked = plan_blocked(st, now_ms)
  if blocked then
    return blocked
  end
  local b = redis.call('HMGET', batch_key, 'n', 'inflight', 'first_at', 'payload', 'campaign',
    'fails', 'waits', 'suspect', 'then_suspect', 'ctl', 'exp', 'sv')
  if not b[1] or b[2] or b[8] or b[10] or (b[11] and tonumber(b[11]) <= now_ms) then
    return {'later'}
  end
  if (redis.call('GET', prefix .. 'supv') or '0') ~= (b[12] or '0') then
    return {'later'}
  end
  local n = tonumber(b[1])
  local eff = tonumber(st[4]) or rate
  if eff > rate then eff = rate end
  local granted, wait_ms, left = bucket_take(bucket_key, eff, burst, n, now_us, true)
  if granted == 0 then
    if wait_ms < 0 then
      return {'later'}
    end
    return {'wait', wait_ms}
  end
  redis.call('HSET', batch_key, 'inflight', now_ms, 'last_at', now_ms)
  if not b[3] then
    redis.call('HSET', batch_key, 'first_at', now_ms)
  end
  return {'go', b[4], n, b[5], b[6] or '0', b[7] or '0', '', b[3] or now_ms, b[9] or '',
      lane_head(lane_key, index + 1) or '', '', left}
end
