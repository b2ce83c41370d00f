-- Take the head batch of a plan's lane for sending, if the lease, the plan's state and the
-- token bucket all allow it.  One round trip before every POST.
--
-- KEYS[1]  {plan}:lease   fencing token of the current sender
-- KEYS[2]  {plan}:lane    LIST of batch ids, FIFO ("#<campaign>" marks a paused campaign)
-- KEYS[3]  {plan}:state   HASH cooldown_until, circuit, probe_at, eff_rate, paused, runtime
--                         rate / burst / batch_size (ms / msg/s)
-- KEYS[4]  {plan}:bucket  token bucket (bucket.lua)
-- KEYS[5]  {plan}:b:<id>  the batch the caller believes is at the head
-- KEYS[6]  dsp:{plan}:    the plan's key prefix (campaign records, held lists, the
--                         scheduled campaigns' ZSET, stats)
-- ARGV[1]  fencing token      ARGV[2] batch id     ARGV[3] rate     ARGV[4] burst
-- ARGV[5]  lease ttl ms       ARGV[6] now_us ("" = Redis TIME)   ARGV[7] retention s
-- ARGV[8]  w: the number of the sender's batches in flight ("" or 0: take the head)
-- ARGV[9..8+w]  their ids in lane order: the batch is taken as the next of that window
--          (lib/take.lua take_after; max_in_flight > 1), answering as below or {"later"}
--
-- Returns one of
--   {"lost"}                       the lease is not ours any more: stop at once
--   {"moved", head_id | ""}        the head is another batch (or the lane is empty); also
--                                  after dropping a canceled or expired head, or parking a
--                                  paused campaign's
--   {"paused"}                     the plan is paused (`plans pause`)
--   {"circuit", wait_ms}           the plan's circuit is open, next probe in wait_ms
--   {"cooldown", wait_ms}          the plan backs off (429 Retry-After, 5xx backoff)
--   {"unknown", first_at_ms, campaign, fails, then_suspect}
--                                  an earlier attempt's outcome is unknown: look it up by
--                                  client_reference before sending again
--   {"oversize", n, payload, burst, batch_size | ""}
--                                  n is above the burst in force: split before it can ever
--                                  be granted
--   {"wait", wait_ms}              not enough tokens yet
--   {"go", payload, n, campaign, fails, waits, suspect, first_at_ms, then_suspect, next_id,
--    recheck, tokens_left}
--                                  tokens taken, batch marked in flight: POST it now.  When
--                                  `suspect` is set (the batch is known to hold a refused
--                                  recipient) no tokens are taken: the caller splits it.
--                                  next_id is the batch after it, for commit.lua to take
--                                  in the same round trip as this batch's outcome.
--                                  tokens_left (x1000) is what the bucket holds after this
--                                  take: the sender takes the next batch ahead only when
--                                  it can be granted (sending/overlap.py).
--                                  first_at_ms is the batch's first attempt ("" for a
--                                  suspect batch that was never sent).  recheck "1": a
--                                  number opted out since the batch was checked (the plan's
--                                  suppression version moved): filter it before the POST.
--   {"later"}                      (a window's take only) not now: let the window empty and
--                                  take the head
--   The answers carry every batch field the sender needs, so it reads nothing else.
--@include lib/clock.lua
--@include lib/take.lua

local w = tonumber(ARGV[8]) or 0
if w > 0 then
  return take_after(KEYS[6], KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2],
    {unpack(ARGV, 9, 8 + w)}, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
    now_us(ARGV[6]), tonumber(ARGV[7]))
end
return take_head(KEYS[6], KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2],
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), now_us(ARGV[6]), tonumber(ARGV[7]))
