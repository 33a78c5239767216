-- lease: takes, renews or releases the expiry scheduler's lease, and returns
-- Redis TIME, so that every renewal is also a sample of the clock. Standalone
-- (not concatenated with lib.lua).
--
-- KEYS: 1 the lease
-- ARGV: 1 the caller's instance id  2 lease TTL ms  3 '1' take or renew, '0' release
-- Reply: { 1 if the caller holds the lease now else 0, TIME seconds, TIME µs }.

local cur = redis.call('GET', KEYS[1])
local held = 0
if ARGV[3] == '1' then
  if cur == false or cur == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    held = 1
  end
elseif cur == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local t = redis.call('TIME')
return { held, tonumber(t[1]), tonumber(t[2]) }
