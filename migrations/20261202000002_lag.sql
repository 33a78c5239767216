-- Lag compensation: a switch in a session that compensates network lag
-- records the lag the move claimed and the lag credited from the mover's
-- quota (both NULL for every other event).
ALTER TABLE sync_events ADD COLUMN lag_claimed_ms bigint;
ALTER TABLE sync_events ADD COLUMN lag_credited_ms bigint;
