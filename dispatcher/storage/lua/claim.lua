-- Claim the plans whose drain is due, for one ticker to start their drain tasks.
--
-- KEYS[1]  due    ZSET plan -> due time in ms
-- ARGV[1]  max plans to claim   ARGV[2] claim ms (how long before an unstarted claim is retried)
--
-- A claimed plan's due time moves claim_ms ahead, so other tickers leave it alone; if the
-- drain task is lost (its worker was killed before it started), the plan comes due again.
--
-- Returns the claimed plan ids.
--@include lib/clock.lua
local now = now_ms()
local plans = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local again = now + tonumber(ARGV[2])
for _, plan in ipairs(plans) do
  redis.call('ZADD', KEYS[1], again, plan)
end
return plans
