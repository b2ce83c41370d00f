-- Cancel a campaign: every batch not yet being posted leaves the lane (or its held list) at
-- once and its recipients count as canceled; a batch in flight finishes and counts as sent,
-- or, if it fails and comes back to the head, take.lua drops it as canceled.  A second cancel
-- changes nothing.
--
-- KEYS[1]  dsp:{plan}: (the plan's key prefix)   KEYS[2] {plan}:lane
-- ARGV[1]  campaign id   ARGV[2] retention s
--
-- Returns {"ok", recipients canceled, batches left in flight} | {"already"} | {"missing"} |
-- {"done"}.
--@include lib/clock.lua
--@include lib/lane.lua
local prefix, lane, cid = KEYS[1], KEYS[2], ARGV[1]
local ckey = prefix .. 'c:' .. cid
local refused = refusal(ckey)
if refused then return {refused == 'canceled' and 'already' or refused} end
local now = now_ms()
local total, inflight = 0, 0

local function forget(id)
  local bkey = prefix .. 'b:' .. id
  total = total + (tonumber(redis.call('HGET', bkey, 'n')) or 0)
  redis.call('DEL', bkey)
end

local held = prefix .. 'q:' .. cid
for _, id in ipairs(redis.call('LRANGE', held, 0, -1)) do
  forget(id)
end
redis.call('DEL', held, ckey .. ':ctl')
redis.call('ZREM', prefix .. 'sched', cid)
redis.call('HDEL', prefix .. 'paused', cid)
redis.call('HDEL', ckey, 'paused_by', 'paused_at')

local keep, removed = {}, false
for _, id in ipairs(redis.call('LRANGE', lane, 0, -1)) do
  if id == '#' .. cid then
    removed = true
  elseif of_campaign(id, cid) then
    if redis.call('HEXISTS', prefix .. 'b:' .. id, 'inflight') == 1 then
      redis.call('HSET', prefix .. 'b:' .. id, 'ctl', 'canceled')
      inflight = inflight + 1
      keep[#keep + 1] = id
    else
      forget(id)
      removed = true
    end
  else
    keep[#keep + 1] = id
  end
end
if removed then
  redis.call('DEL', lane)
  push_all(lane, keep)
end
redis.call('HSET', ckey, 'canceled_at', now)
redis.call('ZREM', prefix .. 'active', cid)
redis.call('HINCRBY', ckey, 'canceled', total)
redis.call('HINCRBY', prefix .. 'stats', 'pending', -total)
redis.call('HINCRBY', prefix .. 'stats', 'canceled', total)
settle(prefix, cid, now, tonumber(ARGV[2]))
return {'ok', total, inflight}
