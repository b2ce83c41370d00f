-- Recipient-weighted token bucket: one call decides whether `cost` recipients may go now.
--
-- KEYS[1]  bucket hash {tokens, ts}  (ts in microseconds of Redis time)
-- ARGV[1]  rate   tokens per second (> 0)
-- ARGV[2]  burst  bucket capacity (>= cost for a grant ever to happen)
-- ARGV[3]  cost   recipients in the batch
-- ARGV[4]  now_us optional; "" = Redis TIME.  Tests pass it to step the clock.
--
-- Returns tokens_after_x1000 (an integer) when granted, else {0, wait_ms, tokens_after_x1000}.
-- A grant, the answer a limiter gives most, is one integer because a client decodes it in one
-- step where a three-element array costs four (without hiredis, ~10 us of Python per call).
-- A cost above burst is never granted: the answer is {0, -1, tokens}, and the caller must
-- split the batch (see sending/drain.py); waiting would never help and splitting silently
-- here would hide it.
--
-- Envelope: tokens never exceed burst and refill at `rate`, so the grants in any window of
-- T seconds total at most burst + rate * T.

--@include lib/clock.lua
--@include lib/bucket.lua

local granted, wait_ms, tokens = bucket_take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), now_us(ARGV[4]), true)
if granted == 1 then
  return tokens
end
return {0, wait_ms, tokens}
