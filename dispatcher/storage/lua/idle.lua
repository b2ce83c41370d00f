-- What an idle drain needs to know before it leaves the schedule: is there a batch it could
-- send now (markers of paused campaigns do not count), is the plan paused, and when is the
-- next scheduled campaign due.
--
-- KEYS[1]  {plan}:lane   KEYS[2] {plan}:state   KEYS[3] dsp:{plan}: (the plan's key prefix)
-- ARGV     none.
--
-- Returns {runnable 1|0, paused 1|0, next admission ms | ""}.
--@include lib/lane.lua
local paused = redis.call('HEXISTS', KEYS[2], 'paused')
return {lane_head(KEYS[1], 0) and 1 or 0, paused, next_admission(KEYS[3]) or ''}
