-- At the start of a drain: let scheduled campaigns that are due into the lane, and read the
-- head batch, in one call.
--
-- KEYS[1]  {plan}:lane   KEYS[2] dsp:{plan}: (the plan's key prefix)
-- ARGV     none.
--
-- Returns the head batch id, or false when the lane holds no batch to send now.
--@include lib/clock.lua
--@include lib/lane.lua
local now = now_ms()
local due = next_admission(KEYS[2])
if due and tonumber(due) <= now then
  admit(KEYS[2], KEYS[1], now)
end
return lane_head(KEYS[1], 0) or false
