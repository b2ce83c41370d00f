-- Give a plan's lease back, if it is still ours.
--
-- KEYS[1]  {plan}:lease
-- ARGV[1]  fencing token
-- Returns 1 when released, 0 when the lease had already passed to another sender.
--@include lib/fence.lua
if holds_lease(KEYS[1], ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
