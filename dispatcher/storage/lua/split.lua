-- Replace the head batch by smaller batches, in order, at the head of the lane: to fit a
-- lowered burst, or to isolate the recipients the provider refused one by one.
--
-- KEYS[1]  {plan}:lease   KEYS[2] {plan}:lane   KEYS[3] {plan}:b:<id> (the batch to split)
-- KEYS[4..] {plan}:b:<new id>, one per part, in lane order
-- ARGV[1]  fencing token   ARGV[2] batch id   ARGV[3] number of parts k
-- then for each part i: ARGV[3+3i-2] new id, ARGV[3+3i-1] n, ARGV[3+3i] payload
-- then k values ARGV[4+3k..]: for each part "" or its suspect mark (JSON of the refusal)
-- then k values: for each part "" or its then_suspect mark (JSON {"id", "err"}: the sibling
--      to mark suspect if this part is accepted)
--
-- Returns {"ok", first new id} or {"lost"} or {"moved", head id | ""}.
--@include lib/fence.lua
local token, bid, k = ARGV[1], ARGV[2], tonumber(ARGV[3])
local refused, index = fenced(KEYS[1], KEYS[2], token, bid)
if refused then
  return refused
end
local b = redis.call('HMGET', KEYS[3], 'campaign', 'first_at', 'waits', 'last_at', 'enq_at',
  'exp', 'ctl')
for i = k, 1, -1 do
  local base = 3 + (i - 1) * 3
  local id, n, payload = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local suspect = ARGV[3 + 3 * k + i]
  redis.call('HSET', KEYS[3 + i], 'n', n, 'payload', payload, 'campaign', b[1], 'fails', 0,
    'waits', b[3] or 0)
  if b[2] then redis.call('HSET', KEYS[3 + i], 'first_at', b[2]) end
  -- A part dead-lettered without a request of its own shows its parent's last attempt.
  if b[4] then redis.call('HSET', KEYS[3 + i], 'last_at', b[4]) end
  -- Parts keep their parent's enqueue time: the queue's oldest-age gauge stays honest.
  if b[5] then redis.call('HSET', KEYS[3 + i], 'enq_at', b[5]) end
  if suspect ~= '' then redis.call('HSET', KEYS[3 + i], 'suspect', suspect) end
  local then_suspect = ARGV[3 + 4 * k + i]
  if then_suspect ~= '' then redis.call('HSET', KEYS[3 + i], 'then_suspect', then_suspect) end
  -- Parts inherit the expiry and a cancel or pause that came while the batch was in flight.
  if b[6] then redis.call('HSET', KEYS[3 + i], 'exp', b[6]) end
  if b[7] then redis.call('HSET', KEYS[3 + i], 'ctl', b[7]) end
end
-- The parts take the batch's place (behind any paused campaign's marker before it).
if index == 0 then
  redis.call('LPOP', KEYS[2])
  for i = k, 1, -1 do
    redis.call('LPUSH', KEYS[2], ARGV[3 + (i - 1) * 3 + 1])
  end
else
  for i = 1, k do
    redis.call('LINSERT', KEYS[2], 'BEFORE', bid, ARGV[3 + (i - 1) * 3 + 1])
  end
  redis.call('LREM', KEYS[2], 1, bid)
end
redis.call('DEL', KEYS[3])
return {'ok', ARGV[4]}
