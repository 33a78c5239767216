-- Incarnations: a session id can be deleted and later created again (after
-- TOMBSTONE_TTL_SECONDS). Each creation is an incarnation of its own, with
-- its own versions from 1, told apart by the session's created_at, which
-- every event's snapshot carries. Per-session rows are keyed by
-- (session_id, created_at), and every event records its incarnation.

-- Events: the incarnation each belongs to, from its own snapshot.
ALTER TABLE sync_events ADD COLUMN session_created_at timestamptz;
UPDATE sync_events SET session_created_at = (snapshot->>'created_at')::timestamptz;
ALTER TABLE sync_events ALTER COLUMN session_created_at SET NOT NULL;
-- "A session's timeline" is now an incarnation's.
DROP INDEX sync_events_timeline;
CREATE INDEX sync_events_timeline
    ON sync_events (session_id, session_created_at, version, occurred_at);

-- Participants follow their session's row.
ALTER TABLE sync_participants DROP CONSTRAINT sync_participants_session_id_fkey;
ALTER TABLE sync_participants ADD COLUMN session_created_at timestamptz;
UPDATE sync_participants p SET session_created_at = s.created_at
    FROM sync_sessions s WHERE s.session_id = p.session_id;
ALTER TABLE sync_participants ALTER COLUMN session_created_at SET NOT NULL;
ALTER TABLE sync_participants DROP CONSTRAINT sync_participants_pkey;
ALTER TABLE sync_participants
    ADD PRIMARY KEY (session_id, session_created_at, participant_id);

-- One row per incarnation.
ALTER TABLE sync_sessions DROP CONSTRAINT sync_sessions_pkey;
ALTER TABLE sync_sessions ADD PRIMARY KEY (session_id, created_at);

ALTER TABLE sync_participants
    ADD CONSTRAINT sync_participants_session_fkey
    FOREIGN KEY (session_id, session_created_at)
    REFERENCES sync_sessions (session_id, created_at) ON DELETE CASCADE;
