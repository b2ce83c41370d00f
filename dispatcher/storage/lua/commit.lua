-- Record the final outcome of the head batch: accepted by the provider, or dead-lettered.
-- Either way it leaves the lane, its counts move to the campaign and the plan's counters, and
-- (for a dead letter) an entry with everything needed to inspect and replay it is written.
-- Fenced: nothing happens unless the caller still holds the plan's lease.
--
-- KEYS[1]  {plan}:lease     KEYS[2] {plan}:lane     KEYS[3] {plan}:b:<id>
-- KEYS[4]  {plan}:c:<campaign>   KEYS[5] {plan}:stats   KEYS[6] {plan}:state
-- KEYS[7]  {plan}:dlq (LIST of entry ids)    KEYS[8] {plan}:d:<entry id>
-- ARGV[1]  fencing token   ARGV[2] batch id   ARGV[3] "accepted" | "dead"
-- ARGV[4]  HTTP status ("" when there was no answer)   ARGV[5] provider code   ARGV[6] text
-- ARGV[7]  provider batch id (accepted)   ARGV[8] dead-letter reason
-- ARGV[9]  campaign retention s   ARGV[10] entry id   ARGV[11] plan id   ARGV[12] plan rate
-- ARGV[13] "1" to count a provider response (0 when it was found by a lookup, counted before)
-- KEYS[9], ARGV[14]: when this accepted batch was the tested half of a split batch with a
--          refused recipient, its untested sibling (KEYS[9]) now surely holds that recipient
--          and is marked suspect with the refusal ARGV[14] (JSON); "" (any KEYS[9]) otherwise.
-- KEYS[10] {plan}:bucket   KEYS[11] {plan}:b:<next id>   ARGV[15] next id ("" = stop here)
-- ARGV[16] burst   ARGV[17] lease ttl ms: when the next batch is still the one after this,
--          take it at once exactly as take.lua does, so that a plan under backlog spends one
--          Redis round trip per batch (this commit and the next take together).
-- KEYS[12] dsp:{plan}:  the plan's key prefix.  An accepted batch's provider id is kept for
--          the retention period: {plan}:c:<campaign>:pb (LIST, for cancel --at-provider) and
--          {plan}:pb:<provider batch id> -> campaign (for delivery reports).
--
-- ARGV[18] "1": the batch may be anywhere in the lane (a window, max_in_flight > 1): it is
--          removed where it is (LREM), not only as the head
-- ARGV[19] w, ARGV[20..19+w]: the sender's other batches in flight, in lane order; with
--          w > 0 the next batch (ARGV[15]) is taken as the next of that window (take_after),
--          and the lease is renewed for ARGV[17] ms even when nothing is taken: a batch of
--          the window may be posted after this (overlap.py posts the one it took ahead once
--          this one's commit is written), and a POST must fit in the lease
--
-- Returns {"ok", next head id | "", take.lua's answer for it (when asked)} or {"lost"} or
-- {"moved", head id | ""}.
--@include lib/fence.lua
--@include lib/clock.lua
--@include lib/take.lua
local token, bid, outcome = ARGV[1], ARGV[2], ARGV[3]
local refused, index = fenced_in(KEYS[1], KEYS[2], token, bid, ARGV[18] == '1')
if refused then
  return refused
end
local w = tonumber(ARGV[19]) or 0
if w > 0 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[17]))
end
local prefix, retention = KEYS[12], tonumber(ARGV[9])
local now_us = now_us()
local now_ms = math.floor(now_us / 1000)
local status, code = ARGV[4], ARGV[5]
local nb = redis.call('HMGET', KEYS[3], 'n', 'campaign')
local n, campaign = tonumber(nb[1]), nb[2] or campaign_of(bid)
-- A replayed dead letter may outlive its campaign record (retention): never recreate a
-- partial record that would then never expire.
local has_campaign = redis.call('EXISTS', KEYS[4]) == 1

lane_remove(KEYS[2], bid, index)
redis.call('HINCRBY', KEYS[5], 'pending', -n)
if ARGV[13] == '1' then
  redis.call('HINCRBY', KEYS[5], 'resp:' .. status .. ':' .. code, 1)
end

if outcome == 'accepted' then
  if has_campaign then redis.call('HINCRBY', KEYS[4], 'sent', n) end
  redis.call('HINCRBY', KEYS[5], 'sent', n)
  redis.call('HINCRBY', KEYS[5], 'batches:accepted', 1)
  local pbid = ARGV[7]
  if pbid ~= '' and has_campaign then
    local pbs = KEYS[4] .. ':pb'
    redis.call('RPUSH', pbs, pbid)
    redis.call('EXPIRE', pbs, retention)
    redis.call('SET', prefix .. 'pb:' .. pbid, campaign, 'EX', retention)
  end
  -- Additive increase after a 429 lowered the plan's effective rate; a success also closes
  -- an open circuit (this batch was its probe).
  local st = redis.call('HMGET', KEYS[6], 'eff_rate', 'circuit', 'rate')
  if st[1] then
    local rate = tonumber(st[3] or ARGV[12])
    local eff = tonumber(st[1]) + rate * 0.05
    if eff >= rate then
      redis.call('HDEL', KEYS[6], 'eff_rate')
    else
      redis.call('HSET', KEYS[6], 'eff_rate', string.format('%.3f', eff))
    end
  end
  if st[2] then
    redis.call('HDEL', KEYS[6], 'circuit', 'probe_at', 'circuit_status', 'circuit_code', 'opened_at', 'probes')
  end
  if KEYS[9] and ARGV[14] and ARGV[14] ~= '' and redis.call('EXISTS', KEYS[9]) == 1 then
    redis.call('HSET', KEYS[9], 'suspect', ARGV[14])
  end
else
  local b = redis.call('HGETALL', KEYS[3])
  redis.call('HSET', KEYS[8], unpack(b))
  redis.call('HDEL', KEYS[8], 'inflight', 'suspect', 'ctl')
  redis.call('HSET', KEYS[8], 'id', ARGV[10], 'plan', ARGV[11], 'batch_id', bid,
    'status', status, 'code', code, 'text', ARGV[6], 'reason', ARGV[8], 'dead_at', now_ms)
  redis.call('RPUSH', KEYS[7], ARGV[10])
  if has_campaign then redis.call('HINCRBY', KEYS[4], 'dead_lettered', n) end
  redis.call('HINCRBY', KEYS[5], 'dead_lettered', n)
  redis.call('HINCRBY', KEYS[5], 'dlq_pending', n)
  redis.call('HINCRBY', KEYS[5], 'dlq:' .. code, n)
  redis.call('HINCRBY', KEYS[5], 'batches:dead_lettered', 1)
end
redis.call('DEL', KEYS[3])

if has_campaign then settle(prefix, campaign, now_ms, retention) end
local next_head = lane_head(KEYS[2], 0) or ''
if w > 0 and ARGV[15] ~= '' then
  return {'ok', next_head, take_after(prefix, KEYS[1], KEYS[2], KEYS[6], KEYS[10], KEYS[11],
    token, ARGV[15], {unpack(ARGV, 20, 19 + w)}, tonumber(ARGV[12]), tonumber(ARGV[16]),
    tonumber(ARGV[17]), now_us, retention)}
end
if ARGV[15] and ARGV[15] ~= '' and next_head == ARGV[15] then
  return {'ok', next_head, take_head(prefix, KEYS[1], KEYS[2], KEYS[6], KEYS[10], KEYS[11],
    token, next_head, tonumber(ARGV[12]), tonumber(ARGV[16]), tonumber(ARGV[17]), now_us,
    retention)}
end
return {'ok', next_head}
