-- The audit trail: every event of the shard streams exactly once, the latest
-- state of every session, and its participants' clocks.

-- One row per session: its configuration and the latest audited snapshot.
-- An update applies only when its version is newer (see the consumer's upsert).
CREATE TABLE sync_sessions (
    session_id      text        PRIMARY KEY,
    sync_mode       text        NOT NULL,
    status          text        NOT NULL,
    version         bigint      NOT NULL,
    -- total_time_ms, time_per_cycle_ms, increment_ms, max_time_ms,
    -- cycle_expiry, metadata: what the session was created with.
    config          jsonb       NOT NULL,
    -- The API JSON of the latest state.
    snapshot        jsonb       NOT NULL,
    -- The same state as the engine's compact record: restore writes it back
    -- byte for byte (metadata included, which jsonb would re-order).
    record          text        NOT NULL,
    last_event_type text        NOT NULL,
    last_event_id   text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    deleted_at      timestamptz
);

-- "Sessions by status and time".
CREATE INDEX sync_sessions_status_updated ON sync_sessions (status, updated_at DESC);

-- One row per audit event. event_id = '<shard>-<stream entry id>': unique
-- across shards, and the same on every redelivery, so a replayed entry is a
-- no-op (ON CONFLICT DO NOTHING).
CREATE TABLE sync_events (
    event_id    text        PRIMARY KEY,
    shard       smallint    NOT NULL,
    session_id  text        NOT NULL,
    event_type  text        NOT NULL,
    version     bigint      NOT NULL,
    occurred_at timestamptz NOT NULL,
    actor       text,
    snapshot    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- "A session's timeline".
CREATE INDEX sync_events_timeline ON sync_events (session_id, version, occurred_at);

-- Per session and participant: the clock as of the session's latest version.
CREATE TABLE sync_participants (
    session_id        text        NOT NULL REFERENCES sync_sessions (session_id) ON DELETE CASCADE,
    participant_id    text        NOT NULL,
    participant_index integer     NOT NULL,
    group_id          text,
    total_time_ms     bigint      NOT NULL,
    time_used_ms      bigint      NOT NULL,
    time_remaining_ms bigint      NOT NULL,
    cycle_count       bigint      NOT NULL,
    has_expired       boolean     NOT NULL,
    version           bigint      NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (session_id, participant_id)
);
