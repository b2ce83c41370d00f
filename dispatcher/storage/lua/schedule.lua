-- Ask for a plan to be drained again after delay_ms (Redis time), so that a waiting plan never
-- holds a worker slot.  `mode` "set" overwrites the plan's due time; "lt" only brings it
-- forward (used by a sender that found the lease busy, so it cannot push back the holder's
-- own schedule).  "head" puts it first in line, ahead of plans due earlier: a plan that was
-- sending in a kept slot (sending/slot.py) passes its turn on without going to the back.
--
-- KEYS[1]  due    ZSET plan -> due time in ms
-- ARGV[1]  plan id   ARGV[2] delay ms   ARGV[3] "set" | "lt" | "head"
-- Returns the due time in ms.
--@include lib/clock.lua
local at = now_ms() + math.max(0, tonumber(ARGV[2]))
if ARGV[3] == 'lt' then
  redis.call('ZADD', KEYS[1], 'LT', at, ARGV[1])
elseif ARGV[3] == 'head' then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[1] and first[1] ~= ARGV[1] then
    at = math.min(at, tonumber(first[2]) - 1)
  end
  redis.call('ZADD', KEYS[1], at, ARGV[1])
else
  redis.call('ZADD', KEYS[1], at, ARGV[1])
end
return at
