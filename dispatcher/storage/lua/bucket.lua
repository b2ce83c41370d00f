-- Recipient-weighted token bucket: one call decides whether `cost` recipients may go now.
--
-- KEYS[1]  bucket hash {tokens, ts}  (ts in microseconds of Redis time)
-- ARGV[1]  rate   tokens per second (> 0)
-- ARGV[2]  burst  bucket capacity (>= cost for a grant ever to happen)
-- ARGV[3]  cost   recipients in the batch
-- ARGV[4]  now_us optional; "" = Redis TIME.  Tests pass it to step the clock.
--
-- Returns {granted (1|0), wait_ms, tokens_after_x1000}.  A cost above burst is never granted:
-- the answer is {0, -1, tokens}, and the caller must split the batch (see sender.py); waiting
-- would never help and splitting silently here would hide it.
--
-- Envelope: tokens never exceed burst and refill at `rate`, so the grants in any window of
-- T seconds total at most burst + rate * T.

--@include lib/clock.lua
--@include lib/bucket.lua

return bucket_take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  now_us(ARGV[4]), true)
