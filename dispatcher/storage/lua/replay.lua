-- Put a dead letter back at the tail of its plan's lane as a new batch, once: the entry is
-- deleted in the same step, so replaying the same entry twice sends it once.
--
-- KEYS[1]  {plan}:d:<entry id>   KEYS[2] {plan}:dlq   KEYS[3] {plan}:lane
-- KEYS[4]  {plan}:b:<new batch id>   KEYS[5] {plan}:c:<campaign>   KEYS[6] {plan}:stats
-- KEYS[7]  dsp:{plan}: (the plan's key prefix): a paused or scheduled campaign's replay
--          waits with its held batches
-- ARGV[1]  entry id   ARGV[2] new batch id   ARGV[3] payload (with the new client_reference)
--
-- The new batch keeps the campaign's `expire_at` (`exp`): a replay after it is dropped at the
-- head and counted as expired, as the campaign asked.  It keeps no suppression version, so the
-- take checks it against the opt-out lists once more before its POST.
--
-- Returns the number of recipients put back (0 when the entry no longer exists).
--@include lib/clock.lua
--@include lib/lane.lua
local e = redis.call('HMGET', KEYS[1], 'n', 'campaign', 'exp')
if not e[1] then
  return 0
end
local n = tonumber(e[1])
local now_ms = now_ms()
redis.call('HSET', KEYS[4], 'n', n, 'payload', ARGV[3], 'campaign', e[2], 'fails', 0,
  'waits', 0, 'enq_at', now_ms, 'replayed_from', ARGV[1])
if e[3] then
  redis.call('HSET', KEYS[4], 'exp', e[3])
end
local prefix, campaign = KEYS[7], e[2]
local held = prefix .. 'q:' .. campaign
if redis.call('ZSCORE', prefix .. 'sched', campaign) then
  redis.call('RPUSH', held, ARGV[2])
elseif redis.call('HEXISTS', prefix .. 'paused', campaign) == 1 then
  if redis.call('RPUSH', held, ARGV[2]) == 1 then
    redis.call('RPUSH', KEYS[3], '#' .. campaign)
  end
else
  redis.call('RPUSH', KEYS[3], ARGV[2])
end
redis.call('DEL', KEYS[1])
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('HINCRBY', KEYS[6], 'pending', n)
redis.call('HINCRBY', KEYS[6], 'dlq_pending', -n)
redis.call('HINCRBY', KEYS[6], 'replayed', n)
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('HINCRBY', KEYS[5], 'dead_lettered', -n)
  redis.call('HDEL', KEYS[5], 'finished_at')
  redis.call('PERSIST', KEYS[5])
end
return n
