-- Redis time, the one clock every worker host shares (a host's own clock may be skewed).
--
-- KEYS     none: this file only defines functions for the scripts that include it.
-- ARGV     none.
-- Defines  now_us(override)  microseconds; `override` "" or nil = Redis TIME (tests step it)
--          now_ms()          milliseconds of Redis TIME
local function now_us(override)
  if override and override ~= '' then
    return tonumber(override)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
