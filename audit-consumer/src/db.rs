//! PostgreSQL: migrations, the batch insert, and the operator's queries.

use crate::event::Row;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Row as _};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;
use synckairos_core::audit::EventType;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool for `url`. Connections are made lazily, so a consumer starts (and
/// reports not ready) while PostgreSQL is down.
pub fn pool(url: &str, max: u32) -> Result<PgPool, sqlx::Error> {
    pool_named(url, max, "synckairos-audit-consumer")
}

/// A pool for `url` whose connections name themselves `application_name`
/// (each service its own), connecting lazily, waiting at most 3 s for a
/// connection.
pub fn pool_named(url: &str, max: u32, application_name: &str) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?.application_name(application_name);
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(opts))
}

/// Applies every migration not yet applied.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// What one batch did in PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    /// New rows in `sync_events`.
    pub events: u64,
    /// Entries already there (a redelivery).
    pub duplicates: u64,
}

/// Inserts `rows` (one batch) inside the caller's transaction: the events
/// (`ON CONFLICT DO NOTHING`), then each session's latest state and its
/// participants, each applied only over an older version.
pub async fn insert(conn: &mut PgConnection, rows: &[Row]) -> Result<Inserted, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Inserted::default());
    }
    let n = rows.len();
    let (mut ids, mut shards, mut sids, mut types) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut versions, mut ats, mut actors, mut snaps) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut created = Vec::with_capacity(n);
    let (mut claimed, mut credited) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for r in rows {
        claimed.push(r.event.lag.map(|l| l.0));
        credited.push(r.event.lag.map(|l| l.1));
        ids.push(r.event_id.as_str());
        shards.push(r.shard as i16);
        sids.push(r.event.session_id.as_str());
        types.push(r.event.event_type.as_str());
        versions.push(r.event.version as i64);
        ats.push(r.event.at_ms);
        actors.push(r.event.actor.as_deref());
        snaps.push(r.snapshot_json.as_str());
        created.push(r.state.created_at.ms());
    }
    let done = sqlx::query(
        "INSERT INTO sync_events
             (event_id, shard, session_id, event_type, version, occurred_at, actor, snapshot,
              session_created_at, lag_claimed_ms, lag_credited_ms)
         SELECT e, s, sid, t, v, to_timestamp(at / 1000.0), a, snap::jsonb, to_timestamp(c / 1000.0),
                lc, lr
         FROM UNNEST($1::text[], $2::int2[], $3::text[], $4::text[], $5::int8[],
                     $6::int8[], $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[])
              AS u(e, s, sid, t, v, at, a, snap, c, lc, lr)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&shards)
    .bind(&sids)
    .bind(&types)
    .bind(&versions)
    .bind(&ats)
    .bind(&actors)
    .bind(&snaps)
    .bind(&created)
    .bind(&claimed)
    .bind(&credited)
    .execute(&mut *conn)
    .await?;
    let events = done.rows_affected();
    upsert_sessions(conn, rows).await?;
    Ok(Inserted {
        events,
        duplicates: n as u64 - events,
    })
}

/// The newest row of each session incarnation (session id and creation
/// time) in the batch, in that order (the same lock order in every consumer,
/// so two of them never deadlock). A low-time warning is not a transition:
/// the row keeps the transition's snapshot whichever batch the warning
/// lands in.
fn latest(rows: &[Row]) -> Vec<&Row> {
    let mut by: BTreeMap<(&str, i64), &Row> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.event.event_type != EventType::LowTimeWarning)
    {
        let key = (r.event.session_id.as_str(), r.state.created_at.ms());
        let e = by.entry(key).or_insert(r);
        if r.event.version >= e.event.version {
            *e = r;
        }
    }
    by.into_values().collect()
}

async fn upsert_sessions(conn: &mut PgConnection, rows: &[Row]) -> Result<(), sqlx::Error> {
    let latest = latest(rows);
    let mut s = SessionCols::default();
    let mut p = ParticipantCols::default();
    for r in &latest {
        let st = &r.state;
        s.sid.push(st.session_id.as_str());
        s.mode.push(st.sync_mode.as_str());
        s.status.push(st.status.as_str());
        s.version.push(r.event.version as i64);
        s.config.push(
            json!({
                "total_time_ms": st.total_time_ms,
                "time_per_cycle_ms": st.time_per_cycle_ms,
                "increment_ms": st.increment_ms,
                "max_time_ms": st.max_time_ms,
                "cycle_expiry": st.cycle_expiry.map(|c| c.as_str()),
                "metadata": st.metadata,
            })
            .to_string(),
        );
        s.snap.push(r.snapshot_json.as_str());
        s.record.push(r.event.snapshot.as_str());
        s.etype.push(r.event.event_type.as_str());
        s.eid.push(r.event_id.as_str());
        s.created.push(st.created_at.ms());
        s.at.push(r.event.at_ms);
        s.completed.push(st.session_completed_at.map(|t| t.ms()));
        s.deleted
            .push((r.event.event_type == EventType::SessionDeleted).then_some(r.event.at_ms));
        for x in &st.participants {
            p.sid.push(st.session_id.as_str());
            p.pid.push(x.participant_id.as_str());
            p.index.push(x.participant_index as i32);
            p.group.push(x.group_id.as_deref());
            p.total.push(x.total_time_ms);
            p.used.push(x.time_used_ms);
            p.remaining.push(x.time_remaining_ms);
            p.cycles.push(x.cycle_count);
            p.expired.push(x.has_expired);
            p.version.push(r.event.version as i64);
            p.at.push(r.event.at_ms);
            p.created.push(st.created_at.ms());
        }
    }
    sqlx::query(
        "INSERT INTO sync_sessions AS cur
             (session_id, sync_mode, status, version, config, snapshot, record,
              last_event_type, last_event_id, created_at, updated_at, completed_at, deleted_at)
         SELECT sid, m, st, v, cfg::jsonb, snap::jsonb, rec, t, e, to_timestamp(c / 1000.0),
                to_timestamp(at / 1000.0), to_timestamp(done / 1000.0), to_timestamp(del / 1000.0)
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::int8[], $11::int8[], $12::int8[],
                     $13::int8[]) AS u(sid, m, st, v, cfg, snap, rec, t, e, c, at, done, del)
         ON CONFLICT (session_id, created_at) DO UPDATE SET
             status = EXCLUDED.status, version = EXCLUDED.version, config = EXCLUDED.config,
             snapshot = EXCLUDED.snapshot, record = EXCLUDED.record,
             last_event_type = EXCLUDED.last_event_type, last_event_id = EXCLUDED.last_event_id,
             updated_at = EXCLUDED.updated_at, completed_at = EXCLUDED.completed_at,
             deleted_at = EXCLUDED.deleted_at
         WHERE cur.version < EXCLUDED.version",
    )
    .bind(&s.sid)
    .bind(&s.mode)
    .bind(&s.status)
    .bind(&s.version)
    .bind(&s.config)
    .bind(&s.snap)
    .bind(&s.record)
    .bind(&s.etype)
    .bind(&s.eid)
    .bind(&s.created)
    .bind(&s.at)
    .bind(&s.completed)
    .bind(&s.deleted)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO sync_participants AS cur
             (session_id, session_created_at, participant_id, participant_index, group_id,
              total_time_ms, time_used_ms, time_remaining_ms, cycle_count, has_expired, version,
              updated_at)
         SELECT sid, to_timestamp(c / 1000.0), pid, i, g, tot, used, rem, cyc, ex, v,
                to_timestamp(at / 1000.0)
         FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::int8[], $6::int8[],
                     $7::int8[], $8::int8[], $9::bool[], $10::int8[], $11::int8[], $12::int8[])
              AS u(sid, pid, i, g, tot, used, rem, cyc, ex, v, at, c)
         ON CONFLICT (session_id, session_created_at, participant_id) DO UPDATE SET
             participant_index = EXCLUDED.participant_index, group_id = EXCLUDED.group_id,
             total_time_ms = EXCLUDED.total_time_ms, time_used_ms = EXCLUDED.time_used_ms,
             time_remaining_ms = EXCLUDED.time_remaining_ms, cycle_count = EXCLUDED.cycle_count,
             has_expired = EXCLUDED.has_expired, version = EXCLUDED.version,
             updated_at = EXCLUDED.updated_at
         WHERE cur.version < EXCLUDED.version",
    )
    .bind(&p.sid)
    .bind(&p.pid)
    .bind(&p.index)
    .bind(&p.group)
    .bind(&p.total)
    .bind(&p.used)
    .bind(&p.remaining)
    .bind(&p.cycles)
    .bind(&p.expired)
    .bind(&p.version)
    .bind(&p.at)
    .bind(&p.created)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Default)]
struct SessionCols<'a> {
    sid: Vec<&'a str>,
    mode: Vec<&'a str>,
    status: Vec<&'a str>,
    version: Vec<i64>,
    config: Vec<String>,
    snap: Vec<&'a str>,
    record: Vec<&'a str>,
    etype: Vec<&'a str>,
    eid: Vec<&'a str>,
    created: Vec<i64>,
    at: Vec<i64>,
    completed: Vec<Option<i64>>,
    deleted: Vec<Option<i64>>,
}

#[derive(Default)]
struct ParticipantCols<'a> {
    sid: Vec<&'a str>,
    pid: Vec<&'a str>,
    index: Vec<i32>,
    group: Vec<Option<&'a str>>,
    total: Vec<i64>,
    used: Vec<i64>,
    remaining: Vec<i64>,
    cycles: Vec<i64>,
    expired: Vec<bool>,
    version: Vec<i64>,
    at: Vec<i64>,
    created: Vec<i64>,
}

/// Whether an error is about the data (retrying the same rows fails the same
/// way) rather than the connection or the server's state.
pub fn is_data_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            // 22: data exception, 23: integrity violation, 54: program limit.
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54")),
        _ => false,
    }
}

/// The latest audited state of a session.
#[derive(Clone, Debug)]
pub struct Latest {
    /// The record of the latest snapshot.
    pub record: String,
    /// The version of the latest event.
    pub version: u64,
    /// Its type.
    pub event_type: String,
}

/// Reads the latest audited state of an incarnation of `session_id`: the
/// one created at `created_at_ms`, else the latest.
pub async fn latest_state(
    pool: &PgPool,
    session_id: &str,
    created_at_ms: Option<i64>,
) -> Result<Option<Latest>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT record, version, last_event_type FROM sync_sessions
         WHERE session_id = $1
           AND ($2::int8 IS NULL OR created_at = to_timestamp($2::int8 / 1000.0))
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(session_id)
    .bind(created_at_ms)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Latest {
        record: r.get(0),
        version: r.get::<i64, _>(1) as u64,
        event_type: r.get(2),
    }))
}

/// One line of a session's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineEntry {
    /// `<shard>-<stream entry id>`.
    pub event_id: String,
    /// Epoch ms.
    pub occurred_at_ms: i64,
    /// The version the event produced.
    pub version: i64,
    /// `session_created`, …
    pub event_type: String,
    /// Who did it, when known.
    pub actor: Option<String>,
    /// The status after the event.
    pub status: String,
    /// Whose turn it was after the event.
    pub active_participant_id: Option<String>,
    /// That participant's index.
    pub active_index: Option<i64>,
    /// Each participant's bank after the event (ms), by index.
    pub remaining_ms: Vec<i64>,
}

/// One incarnation of a session id: from its creation to its delete (or
/// its latest event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incarnation {
    /// When it was created (epoch ms): what tells incarnations apart.
    pub created_at_ms: i64,
    /// Its audited events.
    pub events: i64,
    /// Its latest version.
    pub last_version: i64,
    /// Whether its latest event is a delete.
    pub deleted: bool,
}

/// The incarnations of `session_id` in the audit trail, oldest first.
pub async fn incarnations(
    pool: &PgPool,
    session_id: &str,
) -> Result<Vec<Incarnation>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT (extract(epoch FROM session_created_at) * 1000)::int8, count(*), max(version),
                bool_or(event_type = 'session_deleted')
         FROM sync_events WHERE session_id = $1
         GROUP BY session_created_at ORDER BY session_created_at",
    )
    .bind(session_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Incarnation {
            created_at_ms: r.get(0),
            events: r.get(1),
            last_version: r.get(2),
            deleted: r.get(3),
        })
        .collect())
}

/// An incarnation's audit trail, oldest first: the one created at
/// `created_at_ms`, else the latest.
pub async fn timeline(
    pool: &PgPool,
    session_id: &str,
    created_at_ms: Option<i64>,
) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_id, (extract(epoch FROM occurred_at) * 1000)::int8, version, event_type,
                actor, snapshot->>'status', snapshot->>'active_participant_id',
                (SELECT (p->>'participant_index')::int8
                 FROM jsonb_array_elements(snapshot->'participants') AS p
                 WHERE p->>'participant_id' = snapshot->>'active_participant_id' LIMIT 1),
                ARRAY(SELECT (p->>'time_remaining_ms')::int8
                      FROM jsonb_array_elements(snapshot->'participants') AS p)
         FROM sync_events
         WHERE session_id = $1
           AND session_created_at = COALESCE(
                 to_timestamp($2::int8 / 1000.0),
                 (SELECT max(session_created_at) FROM sync_events WHERE session_id = $1))
         ORDER BY occurred_at, version, event_id",
    )
    .bind(session_id)
    .bind(created_at_ms)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TimelineEntry {
            event_id: r.get(0),
            occurred_at_ms: r.get(1),
            version: r.get(2),
            event_type: r.get(3),
            actor: r.get(4),
            status: r.get::<Option<String>, _>(5).unwrap_or_default(),
            active_participant_id: r.get(6),
            active_index: r.get(7),
            remaining_ms: r.get(8),
        })
        .collect())
}
