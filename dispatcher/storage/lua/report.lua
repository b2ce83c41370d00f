-- Count a delivery report's final statuses on its campaign, each recipient once, whatever the
-- number of retries, their order or their delay (Sinch retries for up to ~23 h).
--
-- KEYS[1]  dsp:{plan}: (the plan's key prefix)
-- ARGV[1]  callback type (for the counters)   ARGV[2] our client_reference ("" if absent)
-- ARGV[3]  the provider's batch id ("" if absent)   ARGV[4] retention s
-- ARGV[5]  "recipients" | "counts"; then pairs: (status, recipient) or (status, count)
--
-- A listed recipient's first final status is its status (HSETNX on {plan}:c:<c>:rs); a summary
-- without recipients counts by the batch's largest reported count per status ({plan}:c:<c>:bs),
-- so a repeated or older summary adds nothing.
--
-- Returns {"ok", campaign, newly counted} or {"orphaned"} (no such campaign: unknown or expired).
--@include lib/lane.lua
local prefix, kind, ref, pbid = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local retention = tonumber(ARGV[4])
local stats = prefix .. 'stats'
local campaign = nil
if ref ~= '' then
  local c = campaign_of(ref)
  if redis.call('EXISTS', prefix .. 'c:' .. c) == 1 then campaign = c end
end
if not campaign and pbid ~= '' then
  campaign = redis.call('GET', prefix .. 'pb:' .. pbid)
  if campaign and redis.call('EXISTS', prefix .. 'c:' .. campaign) == 0 then campaign = nil end
end
if not campaign then
  redis.call('HINCRBY', stats, 'cb:' .. kind .. ':orphaned', 1)
  return {'orphaned'}
end
local ckey = prefix .. 'c:' .. campaign
local dr, rs, bs = ckey .. ':dr', ckey .. ':rs', ckey .. ':bs'
local added = 0
local function count(status, n)
  redis.call('HINCRBY', dr, status, n)
  redis.call('HINCRBY', stats, 'dr:' .. status, n)
  added = added + n
end
for i = 6, #ARGV, 2 do
  local status, what = ARGV[i], ARGV[i + 1]
  if ARGV[5] == 'recipients' then
    if redis.call('HSETNX', rs, what, status) == 1 then count(status, 1) end
  else
    local field = (pbid ~= '' and pbid or ref) .. '|' .. status
    local before = tonumber(redis.call('HGET', bs, field)) or 0
    local now = tonumber(what)
    if now > before then
      redis.call('HSET', bs, field, now)
      count(status, now - before)
    end
  end
end
redis.call('EXPIRE', dr, retention)
redis.call('EXPIRE', rs, retention)
redis.call('EXPIRE', bs, retention)
redis.call('HINCRBY', stats, 'cb:' .. kind .. ':ok', 1)
return {'ok', campaign, added}
