-- Take a plan's sending lease, so that one sender at a time submits its batches in order.
--
-- KEYS[1]  {plan}:lease   the current fencing token, with a TTL
-- KEYS[2]  {plan}:fence   counter that issues fencing tokens
-- ARGV[1]  lease ttl ms
--
-- Returns the new fencing token, or {false, pttl_ms} when another sender holds the lease.
-- Every later write of the holder checks the token, so a sender whose lease expired (a long GC
-- pause, a partition) can no longer change the lane after a new one took over.
--
-- The token is the counter plus the Redis time in microseconds ("17.1764671234123456"): a
-- failover to a replica that missed the last INCR (replication is asynchronous) issues the
-- same counter value again, and without the time two live senders would hold equal tokens.
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 or pttl == -1 then
  return {false, pttl}
end
local t = redis.call('TIME')
local token = string.format('%d.%s%06d', redis.call('INCR', KEYS[2]), t[1], tonumber(t[2]))
redis.call('SET', KEYS[1], token, 'PX', tonumber(ARGV[1]))
return {token, 0}
