-- Recipient-weighted token bucket: one call decides whether `cost` recipients may go now.
--
-- KEYS[1]  bucket hash {tokens, ts}  (ts in microseconds of Redis time)
-- ARGV[1]  rate   tokens per second (> 0)
-- ARGV[2]  burst  bucket capacity (>= cost for a grant ever to happen)
-- ARGV[3]  cost   recipients in the batch
-- ARGV[4]  now_us optional; "" = Redis TIME.  Tests pass it to step the clock.
--
-- Returns {granted (1|0), wait_ms, tokens_after_x1000}.  A cost above burst is never granted:
-- the answer is {0, -1, tokens}, and the caller must split the batch (see sender.py); waiting
-- would never help and splitting silently here would hide it.
--
-- Envelope: tokens never exceed burst and refill at `rate`, so the grants in any window of
-- T seconds total at most burst + rate * T.

--@function
local function bucket_take(key, rate, burst, cost, now_us, commit)
  local tokens = burst
  local ts = now_us
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  if state[1] then
    tokens = tonumber(state[1])
    ts = tonumber(state[2])
    if now_us > ts then
      tokens = math.min(burst, tokens + (now_us - ts) * rate / 1000000)
    else
      now_us = ts -- the clock never goes back for the bucket
    end
  end
  if cost > burst then
    return {0, -1, math.floor(tokens * 1000)}
  end
  if tokens >= cost then
    tokens = tokens - cost
    if commit then
      redis.call('HSET', key, 'tokens', string.format('%.6f', tokens), 'ts', string.format('%d', now_us))
      -- Idle buckets vanish once full again: no state kept for plans that stopped sending.
      redis.call('PEXPIRE', key, math.ceil((burst / rate) * 1000) + 1000)
    end
    return {1, 0, math.floor(tokens * 1000)}
  end
  local wait_ms = math.ceil((cost - tokens) * 1000 / rate)
  return {0, wait_ms, math.floor(tokens * 1000)}
end
--@end

local now_us
if ARGV[4] and ARGV[4] ~= '' then
  now_us = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
return bucket_take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), now_us, true)
