-- A plan's lane and what control does to it, shared by the send path (take, commit, split) and
-- the control scripts (pause, resume, cancel, admit).
--
-- The lane is a LIST of batch ids in FIFO order.  A paused campaign keeps its place as one
-- marker element "#<campaign>"; its batches wait in its held list {plan}:q:<campaign> (so do
-- a scheduled campaign's, until it is due).  Batch ids are "<campaign>.<n>[...]", so a batch's
-- campaign is the part before the first dot.
--
-- KEYS     none: this file only defines functions; callers pass the plan's key prefix
--          "dsp:{plan}:" (always one of their KEYS, so every key built here is in its slot).
-- ARGV     none.
-- Defines  lane_head(lane_key, from) -> id, index of the first batch (not a marker) at or
--            after `from` (0-based), or nil
--          lane_remove(lane_key, id, index)        remove the element known to be at `index`
--          campaign_of(batch_id) -> campaign id
--          settle(prefix, campaign, now_ms, retention_s)   a campaign with nothing pending is
--            finished: finished_at is set, it leaves the active set and its record expires
--            after the retention
--          drop(prefix, lane_key, batch_key, bid, index, n, campaign, why, now_ms, retention_s)
--            a batch that will never be posted leaves the lane; its n recipients count as
--            `why` ("canceled" | "expired") on the campaign and the plan
--          park(prefix, lane_key, bid, index, campaign)  a paused campaign's batch that was in
--            flight when it was paused goes to the front of its held list (marker in its place)
--          admit(prefix, lane_key, now_ms)  scheduled campaigns now due enter the lane's tail,
--            in the order of their due times; returns how many
--          next_admission(prefix) -> ms the next scheduled campaign is due, or nil
--          push_all(list_key, items) / push_front(list_key, items)  RPUSH / LPUSH in chunks,
--            keeping `items` in order
--          of_campaign(id, campaign) -> true when lane element `id` is a batch of `campaign`
--          refusal(campaign_key) -> "missing" | "canceled" | "done" when a control action has
--            nothing to act on, else nil (pause, resume and cancel share the check)
local MARK = 35 -- '#'

local function lane_head(lane_key, from)
  local i = from or 0
  local first = redis.call('LINDEX', lane_key, i)
  if not first or string.byte(first, 1) ~= MARK then
    return first or nil, i
  end
  while true do
    local chunk = redis.call('LRANGE', lane_key, i, i + 63)
    if #chunk == 0 then
      return nil, i
    end
    for j, v in ipairs(chunk) do
      if string.byte(v, 1) ~= MARK then
        return v, i + j - 1
      end
    end
    i = i + 64
  end
end

local function lane_remove(lane_key, id, index)
  if index == 0 then
    redis.call('LPOP', lane_key)
  else
    redis.call('LREM', lane_key, 1, id)
  end
end

local function campaign_of(bid)
  return string.match(bid, '^[^.]+')
end

local function settle(prefix, campaign, now_ms, retention_s)
  local ckey = prefix .. 'c:' .. campaign
  local c = redis.call('HMGET', ckey, 'recipients', 'sent', 'dead_lettered', 'canceled',
    'expired', 'suppressed', 'finished_at')
  if not c[1] or c[7] then
    return
  end
  local done = 0
  for i = 2, 6 do
    done = done + (tonumber(c[i]) or 0)
  end
  if done >= tonumber(c[1]) then
    redis.call('HSET', ckey, 'finished_at', now_ms)
    redis.call('EXPIRE', ckey, retention_s)
    redis.call('HDEL', prefix .. 'paused', campaign)
    redis.call('ZREM', prefix .. 'active', campaign)
  end
end

local function drop(prefix, lane_key, batch_key, bid, index, n, campaign, why, now_ms, retention_s)
  lane_remove(lane_key, bid, index)
  redis.call('DEL', batch_key)
  local stats = prefix .. 'stats'
  redis.call('HINCRBY', stats, 'pending', -n)
  redis.call('HINCRBY', stats, why, n)
  local ckey = prefix .. 'c:' .. campaign
  if redis.call('EXISTS', ckey) == 1 then
    redis.call('HINCRBY', ckey, why, n)
    settle(prefix, campaign, now_ms, retention_s)
  end
end

local function park(prefix, lane_key, bid, index, campaign)
  local held = prefix .. 'q:' .. campaign
  if redis.call('LLEN', held) == 0 then
    redis.call('LSET', lane_key, index, '#' .. campaign)
  else
    lane_remove(lane_key, bid, index)
  end
  redis.call('LPUSH', held, bid)
  redis.call('HDEL', prefix .. 'b:' .. bid, 'ctl')
end

local function push_all(list_key, items)
  for i = 1, #items, 4000 do
    redis.call('RPUSH', list_key, unpack(items, i, math.min(i + 3999, #items)))
  end
end

local function push_front(list_key, items)
  local rev = {}
  for i = #items, 1, -1 do
    rev[#rev + 1] = items[i]
  end
  for i = 1, #rev, 4000 do
    redis.call('LPUSH', list_key, unpack(rev, i, math.min(i + 3999, #rev)))
  end
end

local function refusal(ckey)
  local c = redis.call('HMGET', ckey, 'recipients', 'finished_at', 'canceled_at')
  if not c[1] then return 'missing' end
  if c[3] then return 'canceled' end
  if c[2] then return 'done' end
  return nil
end

local function of_campaign(id, campaign)
  return string.sub(id, 1, #campaign + 1) == campaign .. '.'
end

local function admit(prefix, lane_key, now_ms)
  local sched = prefix .. 'sched'
  local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now_ms)
  for _, campaign in ipairs(due) do
    local held = prefix .. 'q:' .. campaign
    if redis.call('HEXISTS', prefix .. 'paused', campaign) == 1 then
      if redis.call('LLEN', held) > 0 then
        redis.call('RPUSH', lane_key, '#' .. campaign)
      end
    else
      push_all(lane_key, redis.call('LRANGE', held, 0, -1))
      redis.call('DEL', held)
    end
    redis.call('HSET', prefix .. 'c:' .. campaign, 'admitted_at', now_ms)
    redis.call('ZREM', sched, campaign)
  end
  return #due
end

local function next_admission(prefix)
  return redis.call('ZRANGE', prefix .. 'sched', 0, 0, 'WITHSCORES')[2]
end
