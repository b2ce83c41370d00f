-- Record an answer that keeps the head batch at the head (or a window's batch in its place): the plan holds its lane (FIFO) and
-- backs off, its circuit opens, or a lookup showed an unknown attempt never arrived.
-- Fenced like commit.lua.
--
-- KEYS[1]  {plan}:lease   KEYS[2] {plan}:lane   KEYS[3] {plan}:b:<id>
-- KEYS[4]  {plan}:stats   KEYS[5] {plan}:state
-- ARGV[1]  fencing token   ARGV[2] batch id
-- ARGV[3]  kind: "retry" (5xx, timeout; counts a failure) | "ratewait" (429; counts a rate
--          wait, never a failure) | "circuit" (the plan's fault) | "notfound" (lookup: the
--          unknown attempt never reached the provider, send it again) | "suspect" (a refused
--          recipient in a batch of a window: marked suspect with the refusal ARGV[11], so
--          that it is isolated once it is the head, without another request)
-- ARGV[4]  HTTP status ("" = no answer)   ARGV[5] provider code   ARGV[6] text
-- ARGV[7]  delay ms (cool-down, or time to the next circuit probe)
-- ARGV[8]  "1" when the outcome is ambiguous (keep the in-flight mark: look up before resend)
-- ARGV[9]  plan rate (for the multiplicative decrease on 429; a runtime rate wins)
-- ARGV[10] "1": the batch may be anywhere in the lane (a window, max_in_flight > 1); it
--          keeps its place
-- ARGV[11] the refusal JSON for kind "suspect"
--
-- Returns {"ok"} or {"lost"} or {"moved", head id | ""}.
--@include lib/fence.lua
--@include lib/clock.lua
local token, bid, kind = ARGV[1], ARGV[2], ARGV[3]
local refused = fenced_in(KEYS[1], KEYS[2], token, bid, ARGV[10] == '1')
if refused then
  return refused
end
local now_ms = now_ms()
local status, code, delay = ARGV[4], ARGV[5], tonumber(ARGV[7])

if status == 'lookup' then
  -- A failed lookup by client_reference is not an answer to a POST: counted on its own.
  redis.call('HINCRBY', KEYS[4], 'lookups:failed', 1)
elseif kind ~= 'notfound' then
  redis.call('HINCRBY', KEYS[4], 'resp:' .. status .. ':' .. code, 1)
  redis.call('HSET', KEYS[3], 'last_status', status, 'last_code', code, 'last_text', ARGV[6])
end
if ARGV[8] ~= '1' then
  redis.call('HDEL', KEYS[3], 'inflight')
end

if kind == 'retry' then
  redis.call('HINCRBY', KEYS[3], 'fails', 1)
  redis.call('HINCRBY', KEYS[4], 'retries', 1)
  redis.call('HSET', KEYS[5], 'cooldown_until', now_ms + delay)
elseif kind == 'ratewait' then
  redis.call('HINCRBY', KEYS[3], 'waits', 1)
  redis.call('HINCRBY', KEYS[4], 'rate_waits', 1)
  redis.call('HSET', KEYS[5], 'cooldown_until', now_ms + delay)
  local st = redis.call('HMGET', KEYS[5], 'eff_rate', 'rate')
  local rate = tonumber(st[2] or ARGV[9])
  local eff = tonumber(st[1]) or rate
  redis.call('HSET', KEYS[5], 'eff_rate', string.format('%.3f', math.max(rate * 0.05, eff * 0.5)))
elseif kind == 'suspect' then
  redis.call('HSET', KEYS[3], 'suspect', ARGV[11])
elseif kind == 'circuit' then
  if redis.call('HGET', KEYS[5], 'circuit') ~= 'open' then
    redis.call('HSET', KEYS[5], 'opened_at', now_ms)
    redis.call('HINCRBY', KEYS[4], 'circuit_opened', 1)
  end
  redis.call('HINCRBY', KEYS[5], 'probes', 1)
  redis.call('HSET', KEYS[5], 'circuit', 'open', 'circuit_status', status, 'circuit_code', code,
    'probe_at', now_ms + delay)
end
return {'ok'}
