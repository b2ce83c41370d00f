-- Claim plans whose drain is due: for a ticker to send their drain tasks ("ticker"), or for a
-- worker slot to drain one itself in the gap of a plan it keeps ("slot", sending/slot.py).
--
-- KEYS[1]  due      ZSET plan -> due time in ms
-- KEYS[2]  claimed  ZSET plan -> the due time its ticker claim set (its drain task is queued)
-- ARGV[1]  max plans to claim   ARGV[2] claim ms (how long before an unstarted claim is retried)
-- ARGV[3]  "ticker" | "slot"
--
-- A claimed plan's due time moves claim_ms ahead, so other tickers leave it alone; if the
-- drain task is lost (its worker was killed before it started), the plan comes due again.
--
-- A slot that finds nothing due takes the oldest plan whose drain task still waits in the
-- broker: when every slot keeps a plan, that task would wait until one gives its slot up (the
-- demo's third plan waited 4 s behind two kept ones).  A claim is still waiting while the
-- plan's due time is the one it set; any drain's reschedule changes it, so started claims are
-- dropped here, not by the drain task (which then costs nothing more).  The plan's task still
-- runs later; its lease makes it one sender, and it finds the plan drained.
--
-- Returns the claimed plan ids.
--@include lib/clock.lua
local now = now_ms()
local plans = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local again = now + tonumber(ARGV[2])
local ticker = ARGV[3] == 'ticker'
for _, plan in ipairs(plans) do
  redis.call('ZADD', KEYS[1], again, plan)
  if ticker then
    redis.call('ZADD', KEYS[2], again, plan)
  end
end
if ticker then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)  -- come due again: claimed anew
  return plans
end
if #plans > 0 then
  return plans
end
for _ = 1, 16 do  -- a bounded look past claims whose drain has started
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if not first[1] then
    break
  end
  redis.call('ZREM', KEYS[2], first[1])
  if tonumber(redis.call('ZSCORE', KEYS[1], first[1])) == tonumber(first[2]) then
    return {first[1]}
  end
end
return {}
