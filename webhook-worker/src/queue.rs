//! The retry queue in PostgreSQL (`webhook_deliveries`): one row per
//! (endpoint, event) until it is delivered or dead-lettered.
//!
//! Only the head of each (endpoint, session) queue (its oldest row in
//! stream order) is ever claimed, so within one endpoint and one session
//! events go out one at a time, in order. A claim is a lease
//! (`locked_until`, `locked_by`) taken with `FOR UPDATE SKIP LOCKED`, so
//! several worker processes share the queue and a crashed one's claims come
//! back when their lease runs out. Every finishing statement checks that the
//! lease is still this worker's.

use crate::payload::WebhookEvent;
use sqlx::{PgConnection, PgPool, Row as _};
use std::collections::HashMap;
use std::time::Duration;

/// A pool for `url`, connecting lazily (the worker starts, and reports not
/// ready, while PostgreSQL is down).
pub fn pool(url: &str, max: u32) -> Result<PgPool, sqlx::Error> {
    synckairos_audit_consumer::db::pool_named(url, max, "synckairos-webhook-worker")
}

/// Applies every migration not yet applied (the same set as the audit
/// consumer's: `migrations/`).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    synckairos_audit_consumer::db::migrate(pool).await
}

/// A delivery as claimed.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The row.
    pub id: i64,
    /// The endpoint.
    pub endpoint_id: String,
    /// `<shard>-<stream entry id>`.
    pub event_id: String,
    /// The session.
    pub session_id: String,
    /// The event type.
    pub event_type: String,
    /// The request body.
    pub payload: String,
    /// Attempts made so far (all failed).
    pub attempts: i32,
    /// When the event happened, epoch ms.
    pub occurred_at_ms: i64,
    /// The stream entry id, `<ms>-<seq>`.
    pub seq: String,
}

/// Queues `rows` (endpoint, event) in the caller's transaction; an entry
/// already queued for an endpoint is not queued again. Returns the rows
/// added.
pub async fn enqueue(
    conn: &mut PgConnection,
    rows: &[(&str, &WebhookEvent)],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut c = Cols::default();
    for (endpoint, e) in rows {
        let (ms, n) = e.seq();
        c.endpoint.push(endpoint.to_string());
        c.event.push(e.event_id.clone());
        c.session.push(e.session_id.clone());
        c.kind.push(e.event_type.clone());
        c.seq_ms.push(ms);
        c.seq_n.push(n);
        c.payload.push(e.body.clone());
        c.at.push(e.at_ms);
    }
    let done = sqlx::query(
        // A row joins its session's queue due no earlier than the row before
        // it: behind a head waiting for a retry, it waits too (see claim).
        "INSERT INTO webhook_deliveries
             (endpoint_id, event_id, session_id, event_type, seq_ms, seq_n, payload,
              occurred_at_ms, next_attempt_at)
         SELECT u.*, GREATEST(clock_timestamp(),
                    (SELECT w.next_attempt_at FROM webhook_deliveries w
                     WHERE w.endpoint_id = u.ep AND w.session_id = u.sid
                     ORDER BY w.seq_ms DESC, w.seq_n DESC LIMIT 1))
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[],
                     $6::int8[], $7::text[], $8::int8[]) AS u(ep, ev, sid, t, ms, n, p, at)
         ON CONFLICT (endpoint_id, event_id) DO NOTHING",
    )
    .bind(&c.endpoint)
    .bind(&c.event)
    .bind(&c.session)
    .bind(&c.kind)
    .bind(&c.seq_ms)
    .bind(&c.seq_n)
    .bind(&c.payload)
    .bind(&c.at)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

#[derive(Default)]
struct Cols {
    endpoint: Vec<String>,
    event: Vec<String>,
    session: Vec<String>,
    kind: Vec<String>,
    seq_ms: Vec<i64>,
    seq_n: Vec<i64>,
    payload: Vec<String>,
    at: Vec<i64>,
}

/// One dead delivery put back in the queue (a replay): attempts from 0, due
/// now. Returns whether it was added (false: that endpoint already has that
/// event queued).
#[allow(clippy::too_many_arguments)]
pub async fn requeue(
    pool: &PgPool,
    endpoint_id: &str,
    event_id: &str,
    session_id: &str,
    event_type: &str,
    seq: &str,
    payload: &str,
    occurred_at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let (ms, n) = crate::payload::parse_seq(seq);
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries
             (endpoint_id, event_id, session_id, event_type, seq_ms, seq_n, payload, occurred_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (endpoint_id, event_id) DO NOTHING",
    )
    .bind(endpoint_id)
    .bind(event_id)
    .bind(session_id)
    .bind(event_type)
    .bind(ms)
    .bind(n)
    .bind(payload)
    .bind(occurred_at_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims up to `limit` due heads of `endpoint`'s session queues for `me`
/// for `lease`. One statement: the endpoint's due, unleased rows in
/// next_attempt_at order, kept only if no older row of their session is
/// queued (the head), locked with `SKIP LOCKED` (rows another worker is
/// claiming right now are left to it), then leased. The lease and due
/// conditions are on the locked row itself, so a row another worker leased
/// meanwhile is rechecked and skipped.
pub async fn claim(
    pool: &PgPool,
    endpoint: &str,
    me: &str,
    lease: Duration,
    limit: usize,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH due AS (
             SELECT d.id FROM webhook_deliveries d
             WHERE d.endpoint_id = $1
               AND d.next_attempt_at <= clock_timestamp()
               AND (d.locked_until IS NULL OR d.locked_until < clock_timestamp())
               AND NOT EXISTS (
                   SELECT 1 FROM webhook_deliveries e
                   WHERE e.endpoint_id = d.endpoint_id AND e.session_id = d.session_id
                     AND (e.seq_ms, e.seq_n) < (d.seq_ms, d.seq_n))
             ORDER BY d.next_attempt_at
             LIMIT $4
             FOR UPDATE OF d SKIP LOCKED
         )
         UPDATE webhook_deliveries d
         SET locked_until = clock_timestamp() + make_interval(secs => $3::float8 / 1000.0),
             locked_by = $2
         FROM due WHERE d.id = due.id
         RETURNING d.id, d.endpoint_id, d.event_id, d.session_id, d.event_type, d.payload,
                   d.attempts, d.occurred_at_ms, d.seq_ms, d.seq_n",
    )
    .bind(endpoint)
    .bind(me)
    .bind(lease.as_millis() as f64)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Delivery {
            id: r.get(0),
            endpoint_id: r.get(1),
            event_id: r.get(2),
            session_id: r.get(3),
            event_type: r.get(4),
            payload: r.get(5),
            attempts: r.get(6),
            occurred_at_ms: r.get(7),
            seq: format!("{}-{}", r.get::<i64, _>(8), r.get::<i64, _>(9)),
        })
        .collect())
}

/// Removes a delivery this worker holds (delivered, or dead-lettered).
/// False: the lease was lost (it ran out and another worker took the row).
pub async fn remove(pool: &PgPool, id: i64, me: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1 AND locked_by = $2")
        .bind(id)
        .bind(me)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a failed attempt and releases the row until `after`; the rows
/// behind it in its session's queue wait as long (so they are not due, and
/// not scanned, while it waits). False: the lease was lost.
pub async fn reschedule(
    pool: &PgPool,
    id: i64,
    me: &str,
    after: Duration,
    error: &str,
    status: Option<u16>,
) -> Result<bool, sqlx::Error> {
    let (done,): (i64,) = sqlx::query_as(
        "WITH head AS (
             UPDATE webhook_deliveries
             SET attempts = attempts + 1,
                 next_attempt_at = clock_timestamp() + make_interval(secs => $3::float8 / 1000.0),
                 locked_until = NULL, locked_by = NULL, last_error = $4, last_status = $5
             WHERE id = $1 AND locked_by = $2
             RETURNING endpoint_id, session_id, next_attempt_at
         ), behind AS (
             UPDATE webhook_deliveries d SET next_attempt_at = head.next_attempt_at
             FROM head
             WHERE d.endpoint_id = head.endpoint_id AND d.session_id = head.session_id
               AND d.id <> $1 AND d.next_attempt_at < head.next_attempt_at
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM head) + 0 * (SELECT count(*) FROM behind)",
    )
    .bind(id)
    .bind(me)
    .bind(after.as_millis() as f64)
    .bind(error)
    .bind(status.map(i32::from))
    .fetch_one(pool)
    .await?;
    Ok(done == 1)
}

/// Rows queued, by endpoint.
pub async fn depth(pool: &PgPool) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT endpoint_id, count(*) FROM webhook_deliveries GROUP BY endpoint_id")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}
