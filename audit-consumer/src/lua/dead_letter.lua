-- Moves one entry to the dead letters: acknowledges it in the shard's audit
-- stream (KEYS[1]) for group ARGV[1] and, only if that acknowledged it, adds
-- the dead letter (fields and values ARGV[3..]) to KEYS[2]. One script, so the
-- dead letter is written exactly when the entry is acknowledged, and a
-- retried settle (the entry already acknowledged) writes no second one.
-- The acknowledgement is the first write, so Redis lets the dead letter
-- through even when memory is short (it never stops a script midway).
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return 1
