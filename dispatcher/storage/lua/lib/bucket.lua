-- The recipient-weighted token bucket's arithmetic, shared by bucket.lua (the limiter alone)
-- and take.lua / commit.lua (the send path), so that the two cannot drift apart.
--
-- KEYS     none: this file only defines a function; callers pass the bucket's key.
-- ARGV     none.
-- Defines  bucket_take(key, rate, burst, cost, now_us, commit) -> {granted (1|0), wait_ms,
--            tokens_after_x1000}; wait_ms -1 when cost > burst (never grantable: split).
--            `key` is a HASH {tokens, ts} (ts in microseconds); with `commit` a grant is
--            written back, else only answered.
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
