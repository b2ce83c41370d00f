-- The recipient-weighted token bucket's arithmetic, shared by bucket.lua (the limiter alone)
-- and take.lua / commit.lua (the send path), so that the two cannot drift apart.
--
-- KEYS     none: this file only defines a function; callers pass the bucket's key.
-- ARGV     none.
-- Defines  bucket_take(key, rate, burst, cost, now_us, commit) -> granted (1|0), wait_ms,
--            tokens_after_x1000: three values, not a table, so a grant allocates nothing in
--            Lua; wait_ms -1 when cost > burst (never grantable: split).
--            `key` is a HASH {tokens, ts} (ts in microseconds); with `commit` a grant is
--            written back, else only answered.
--
-- Cost: three commands (HMGET, HSET, PEXPIRE) and no Lua string building.  The numbers are
-- handed to HSET as Lua numbers, which Redis writes with 17 significant digits: the stored
-- tokens read back as the very same double (no rounding, so none in the grantee's favour),
-- and any version of this file reads them with tonumber.
local function bucket_take(key, rate, burst, cost, now_us, commit)
  local tokens = burst
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  if state[1] then
    local ts = tonumber(state[2])
    tokens = tonumber(state[1])
    if now_us > ts then
      tokens = math.min(burst, tokens + (now_us - ts) * rate / 1000000)
    else
      now_us = ts -- the clock never goes back for the bucket
    end
  end
  if cost > burst then
    return 0, -1, math.floor(tokens * 1000)
  end
  if tokens >= cost then
    tokens = tokens - cost
    if commit then
      redis.call('HSET', key, 'tokens', tokens, 'ts', now_us)
      -- Idle buckets vanish once full again: no state kept for plans that stopped sending.
      redis.call('PEXPIRE', key, math.ceil((burst / rate) * 1000) + 1000)
    end
    return 1, 0, math.floor(tokens * 1000)
  end
  return 0, math.ceil((cost - tokens) * 1000 / rate), math.floor(tokens * 1000)
end
