-- Pause a campaign: it keeps its place in the lane as one marker "#<campaign>" and its unsent
-- batches wait in its held list, so later campaigns of the plan go ahead.  A batch in flight
-- finishes; if it comes back to the head (a retry), take.lua parks it then.
--
-- KEYS[1]  dsp:{plan}: (the plan's key prefix)   KEYS[2] {plan}:lane
-- ARGV[1]  campaign id   ARGV[2] reason ("campaign" | "failures")
--
-- Returns {"ok"} | {"already"} | {"missing"} | {"done"} | {"canceled"}.
--@include lib/clock.lua
--@include lib/lane.lua
local prefix, lane, cid = KEYS[1], KEYS[2], ARGV[1]
local ckey = prefix .. 'c:' .. cid
local refused = refusal(ckey)
if refused then return {refused} end
if redis.call('HEXISTS', prefix .. 'paused', cid) == 1 then return {'already'} end
redis.call('HSET', prefix .. 'paused', cid, ARGV[2])
redis.call('HSET', ckey, 'paused_by', ARGV[2], 'paused_at', now_ms())
if redis.call('ZSCORE', prefix .. 'sched', cid) then
  return {'ok'} -- not due yet: its batches are held already
end
local keep, moved, marked = {}, {}, false
for _, id in ipairs(redis.call('LRANGE', lane, 0, -1)) do
  if of_campaign(id, cid) then
    if redis.call('HEXISTS', prefix .. 'b:' .. id, 'inflight') == 1 then
      redis.call('HSET', prefix .. 'b:' .. id, 'ctl', 'paused')
      redis.call('SADD', ckey .. ':ctl', id)
      keep[#keep + 1] = id
    else
      moved[#moved + 1] = id
      if not marked then
        keep[#keep + 1] = '#' .. cid
        marked = true
      end
    end
  else
    keep[#keep + 1] = id
  end
end
if #moved > 0 then
  redis.call('DEL', lane)
  push_all(lane, keep)
  push_all(prefix .. 'q:' .. cid, moved)
end
return {'ok'}
