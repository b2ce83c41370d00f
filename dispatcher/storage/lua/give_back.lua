-- Give back a batch that was taken but never POSTed: the next batch a sender took while the
-- POST of the one before was in flight (overlap.py, max_in_flight = 1).  Its in-flight mark is
-- cleared (so it is not looked up: it never left) and its tokens go back to the bucket, capped
-- at the burst in force.  Fenced by the lease.
--
-- KEYS[1]  {plan}:lease   KEYS[2] {plan}:b:<id>   KEYS[3] {plan}:bucket   KEYS[4] {plan}:state
-- ARGV[1]  fencing token   ARGV[2] recipients to refund (the batch's n)   ARGV[3] burst (the
--          config file's; a runtime burst in the plan's state wins)
-- ARGV[4]  "always" (the batch before it failed) | "stopped": only when a pause or cancel
--          came while the POST before it ran (its campaign's ctl mark, or the plan paused),
--          so that control stops a campaign at the batch being posted, as without the
--          overlap; otherwise the batch stays taken and the lease is renewed for ARGV[5] ms
--          (its POST starts now and must fit in the lease)
-- ARGV[5]  lease ttl ms (with "stopped")
--
-- Returns {"ok"} (given back), {"go"} (kept: post it) or {"lost"}.
--@include lib/fence.lua
if not holds_lease(KEYS[1], ARGV[1]) then
  return {'lost'}
end
if ARGV[4] == 'stopped' and not redis.call('HGET', KEYS[2], 'ctl')
    and not redis.call('HGET', KEYS[4], 'paused') then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
  return {'go'}
end
if redis.call('HDEL', KEYS[2], 'inflight') == 1 then
  local burst = tonumber(redis.call('HGET', KEYS[4], 'burst') or ARGV[3])
  local tokens = tonumber(redis.call('HGET', KEYS[3], 'tokens'))
  if tokens then
    redis.call('HSET', KEYS[3], 'tokens', math.min(burst, tokens + tonumber(ARGV[2])))
  end
end
return {'ok'}
