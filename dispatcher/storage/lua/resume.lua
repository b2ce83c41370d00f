-- Resume a paused campaign: its held batches take the place of its marker, so they are next
-- again, in their order, before the campaigns that went ahead meanwhile.
--
-- KEYS[1]  dsp:{plan}: (the plan's key prefix)   KEYS[2] {plan}:lane
-- ARGV[1]  campaign id
--
-- Returns {"ok"} | {"notpaused"} | {"missing"} | {"done"} | {"canceled"}.
--@include lib/lane.lua
local prefix, lane, cid = KEYS[1], KEYS[2], ARGV[1]
local ckey = prefix .. 'c:' .. cid
local refused = refusal(ckey)
if refused then return {refused} end
if redis.call('HDEL', prefix .. 'paused', cid) == 0 then return {'notpaused'} end
redis.call('HDEL', ckey, 'paused_by', 'paused_at')
for _, id in ipairs(redis.call('SMEMBERS', ckey .. ':ctl')) do
  redis.call('HDEL', prefix .. 'b:' .. id, 'ctl')
end
redis.call('DEL', ckey .. ':ctl')
if redis.call('ZSCORE', prefix .. 'sched', cid) then
  return {'ok'} -- not due yet: admitted with its batches when due
end
local held = prefix .. 'q:' .. cid
local items = redis.call('LRANGE', held, 0, -1)
local pos = redis.call('LPOS', lane, '#' .. cid)
if pos then
  local before = pos > 0 and redis.call('LRANGE', lane, 0, pos - 1) or {}
  redis.call('LTRIM', lane, pos + 1, -1)
  push_front(lane, items)
  push_front(lane, before)
elseif #items > 0 then
  push_all(lane, items)
end
redis.call('DEL', held)
return {'ok'}
