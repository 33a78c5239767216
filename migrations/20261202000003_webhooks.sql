-- Webhook deliveries waiting to be sent (or retried): the webhook worker's
-- retry queue. A row lives from the moment its stream entry is read until
-- the endpoint answers 2xx or the last attempt fails (then it moves to the
-- dead-letter stream sk:webhooks:dead). It lives here, not in Redis: a dead
-- endpoint can hold hours of deliveries, and disk is cheaper than Redis
-- memory.
CREATE TABLE webhook_deliveries (
    id              bigserial   PRIMARY KEY,
    endpoint_id     text        NOT NULL,
    -- '<shard>-<stream entry id>', as the audit trail names the event; the
    -- webhook-id header is 'evt_' || event_id. A redelivered stream entry
    -- is not queued twice (ON CONFLICT DO NOTHING).
    event_id        text        NOT NULL,
    session_id      text        NOT NULL,
    event_type      text        NOT NULL,
    -- The stream entry id <seq_ms>-<seq_n>: stream order within the shard,
    -- and a session lives in one shard, so it orders a session's events.
    seq_ms          bigint      NOT NULL,
    seq_n           bigint      NOT NULL,
    -- The request body, the same on every attempt.
    payload         text        NOT NULL,
    -- When the event happened (Redis time, epoch ms).
    occurred_at_ms  bigint      NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- A worker's claim: while locked_until is ahead, the row is that
    -- worker's; a crashed worker's claims come back when it passes.
    locked_until    timestamptz,
    locked_by       text,
    last_error      text,
    last_status     integer,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (endpoint_id, event_id)
);

-- "The head of each (endpoint, session) queue" (a session's oldest row):
-- only the head may be in flight, so a session's events reach an endpoint in
-- stream order.
CREATE INDEX webhook_deliveries_sessions
    ON webhook_deliveries (endpoint_id, session_id, seq_ms, seq_n);

-- "What is due": the claim scans an endpoint's rows by next_attempt_at and
-- keeps the heads. The rows behind a head that is waiting for a retry carry
-- that retry's time too (the worker pushes them back with it), so an
-- endpoint that has been down for hours has nothing due between its
-- retries, whatever its backlog.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at);
