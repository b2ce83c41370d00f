-- Drop, from the head batch just taken, the recipients who opted out after it was enqueued:
-- they count as suppressed, and the batch goes out without them (or not at all).
-- Fenced like commit.lua.
--
-- KEYS[1]  {plan}:lease   KEYS[2] {plan}:lane   KEYS[3] {plan}:b:<id>   KEYS[4] dsp:{plan}:
-- ARGV[1]  fencing token   ARGV[2] batch id   ARGV[3] the body without them
-- ARGV[4]  recipients dropped   ARGV[5] suppression version checked   ARGV[6] retention s
--
-- Returns {"ok"} (the batch was rewritten, still in flight), {"dropped", next head | ""}
-- (nobody left to send to) or {"lost"} / {"moved", head | ""}.
--@include lib/clock.lua
--@include lib/fence.lua
local refused, index = fenced(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if refused then
  return refused
end
local prefix, removed = KEYS[4], tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[3], 'n', 'campaign')
local n, campaign = tonumber(b[1]), b[2]
local ckey = prefix .. 'c:' .. campaign
local has_campaign = redis.call('EXISTS', ckey) == 1
redis.call('HINCRBY', prefix .. 'stats', 'pending', -removed)
redis.call('HINCRBY', prefix .. 'stats', 'suppressed', removed)
if has_campaign then redis.call('HINCRBY', ckey, 'suppressed', removed) end
if removed >= n then
  lane_remove(KEYS[2], ARGV[2], index)
  redis.call('DEL', KEYS[3])
  if has_campaign then settle(prefix, campaign, now_ms(), tonumber(ARGV[6])) end
  return {'dropped', lane_head(KEYS[2], 0) or ''}
end
redis.call('HSET', KEYS[3], 'payload', ARGV[3], 'n', n - removed, 'sv', ARGV[5])
return {'ok'}
