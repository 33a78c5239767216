-- restore: writes a session rebuilt from the audit trail, unless Redis still
-- has it. Rust builds the state (core/src/restore.rs); this script makes the
-- write, the publish and the `session_restored` event one atomic step, like
-- every command. Not concatenated with lib.lua: its KEYS and ARGV differ.
--
-- KEYS: 1 state  2 shard deadlines ZSET  3 shard audit stream   (one hash slot)
-- ARGV: 1 session_id  2 channel  3 record  4 version  5 now_ms (Redis TIME,
--       read by the caller just before)  6 base state TTL s  7 actor ('' = unknown)
-- Reply: { 'restored' } or { 'exists' }.

if redis.call('EXISTS', KEYS[1]) == 1 then return { 'exists' } end
redis.call('SET', KEYS[1], ARGV[3], 'PX', tonumber(ARGV[6]) * 1000)
-- A restored session is never running (see restore.rs), so it has no deadline.
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'type', 'session_restored', 'sid', ARGV[1],
    'v', ARGV[4], 'at', ARGV[5], 'actor', ARGV[7], 'snap', ARGV[3])
else
  redis.call('XADD', KEYS[3], '*', 'type', 'session_restored', 'sid', ARGV[1],
    'v', ARGV[4], 'at', ARGV[5], 'snap', ARGV[3])
end
return { 'restored' }
