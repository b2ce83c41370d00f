-- Delete one dead letter for good (after a person decided it will never be sent).
--
-- KEYS[1]  {plan}:d:<entry id>   KEYS[2] {plan}:dlq   KEYS[3] {plan}:stats
-- ARGV[1]  entry id
-- Returns the number of recipients purged (0 when the entry no longer exists).
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
if not n then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('HINCRBY', KEYS[3], 'dlq_pending', -n)
redis.call('HINCRBY', KEYS[3], 'purged', n)
return n
