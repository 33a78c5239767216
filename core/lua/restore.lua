-- restore: writes a session rebuilt from the audit trail, unless Redis still
-- has it. Rust builds the state (core/src/restore.rs); this script makes the
-- write, the publish and the `session_restored` event one atomic step, like
-- every command. Not concatenated with lib.lua: its KEYS and ARGV differ.
--
-- KEYS: 1 state  2 shard deadlines ZSET  3 shard audit stream   (one hash slot)
-- ARGV: 1 session_id  2 channel  3 record  4 version  5 now_ms (Redis TIME,
--       read by the caller just before)  6 base state TTL s  7 actor ('' = unknown)
--       8 wake time (the paused session's idle end, epoch ms)  9 wake channel
--       10 shard
-- Reply: { 'restored' } or { 'exists' }.

if redis.call('EXISTS', KEYS[1]) == 1 then return { 'exists' } end
local wake = tonumber(ARGV[8])
redis.call('SET', KEYS[1], ARGV[3], 'PX', wake - tonumber(ARGV[5]) + tonumber(ARGV[6]) * 1000)
-- A restored session is never running (see restore.rs): it has no deadline,
-- only its idle end, which the scheduler applies like any other.
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[2], wake, ARGV[1])
if #head == 0 or wake < tonumber(head[2]) then
  redis.call('PUBLISH', ARGV[9], ARGV[10] .. ':' .. wake .. ':' .. ARGV[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'type', 'session_restored', 'sid', ARGV[1],
    'v', ARGV[4], 'at', ARGV[5], 'actor', ARGV[7], 'snap', ARGV[3])
else
  redis.call('XADD', KEYS[3], '*', 'type', 'session_restored', 'sid', ARGV[1],
    'v', ARGV[4], 'at', ARGV[5], 'snap', ARGV[3])
end
return { 'restored' }
