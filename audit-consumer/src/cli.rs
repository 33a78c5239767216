//! The operator commands: `restore` and `timeline`.

use crate::db::{self, Incarnation, TimelineEntry};
use sqlx::PgPool;
use synckairos_core::record;
use synckairos_core::script::Settings;
use synckairos_core::time::format_iso;
use synckairos_core::SyncState;
use synckairos_engine::{Engine, EngineError, RedisTarget};

/// Why a restore did not happen. Each has a stable code.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Redis still has the session: restoring would overwrite live state.
    #[error("session {0} still exists in Redis; nothing to restore")]
    StillExists(String),
    /// The audit trail has no event of this session.
    #[error("session {0} has no audited event")]
    NotAudited(String),
    /// The latest event is a delete: the session was removed on purpose.
    #[error(
        "session {session_id} was deleted (version {version}); a deleted session is not restored"
    )]
    Deleted {
        /// The session.
        session_id: String,
        /// The delete's version.
        version: u64,
    },
    /// The audited snapshot cannot be read.
    #[error("the audited snapshot of {session_id} is not valid: {source}")]
    BadSnapshot {
        /// The session.
        session_id: String,
        /// Why.
        source: record::BadRecord,
    },
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Redis failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl RestoreError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RestoreError::StillExists(_) => "SESSION_EXISTS",
            RestoreError::NotAudited(_) => "SESSION_NOT_FOUND",
            RestoreError::Deleted { .. } => "SESSION_DELETED",
            RestoreError::BadSnapshot { .. } => "BAD_SNAPSHOT",
            RestoreError::Postgres(_) | RestoreError::Engine(_) => "INTERNAL_ERROR",
        }
    }
}

/// Rebuilds `session_id` in Redis from its latest audited snapshot, with a
/// new version and a `session_restored` event (see
/// [`synckairos_core::restore`]): of the incarnation created at
/// `created_at_ms`, else of the latest. Refuses while Redis still has the
/// session.
pub async fn restore(
    pool: &PgPool,
    redis: &RedisTarget,
    settings: Settings,
    session_id: &str,
    actor: Option<&str>,
    created_at_ms: Option<i64>,
) -> Result<SyncState, RestoreError> {
    let sid = session_id.to_ascii_lowercase();
    let engine = Engine::connect_target(redis, settings).await?;
    if engine.get(&sid).await?.is_some() {
        return Err(RestoreError::StillExists(sid));
    }
    let latest = db::latest_state(pool, &sid, created_at_ms)
        .await?
        .ok_or_else(|| RestoreError::NotAudited(sid.clone()))?;
    if latest.event_type == "session_deleted" {
        return Err(RestoreError::Deleted {
            session_id: sid,
            version: latest.version,
        });
    }
    let last = record::decode(&latest.record).map_err(|source| RestoreError::BadSnapshot {
        session_id: sid.clone(),
        source,
    })?;
    engine
        .restore(&last, latest.version, actor)
        .await?
        .ok_or(RestoreError::StillExists(sid))
}

/// Picks an incarnation by its 1-based number (oldest first), or the latest.
pub fn pick(incarnations: &[Incarnation], number: Option<usize>) -> Option<(usize, &Incarnation)> {
    match number {
        None => incarnations.last().map(|i| (incarnations.len(), i)),
        Some(n) => incarnations.get(n.checked_sub(1)?).map(|i| (n, i)),
    }
}

/// The incarnations, one per line, the one shown marked.
pub fn render_incarnations(session_id: &str, all: &[Incarnation], shown: usize) -> String {
    let mut out = format!(
        "{session_id} has {} incarnation(s); showing #{shown} (--incarnation N for another)\n",
        all.len()
    );
    for (i, inc) in all.iter().enumerate() {
        out.push_str(&format!(
            "{} #{}  created {}  {} events  v1..v{}{}\n",
            if i + 1 == shown { "*" } else { " " },
            i + 1,
            format_iso(inc.created_at_ms),
            inc.events,
            inc.last_version,
            if inc.deleted { "  deleted" } else { "" }
        ));
    }
    out
}

/// The timeline as a table, one event per line.
pub fn render_timeline(session_id: &str, entries: &[TimelineEntry]) -> String {
    let mut rows = vec![[
        "time (UTC)".to_string(),
        "v".into(),
        "event".into(),
        "status".into(),
        "turn".into(),
        "remaining (s)".into(),
        "actor".into(),
    ]];
    for e in entries {
        rows.push([
            format_iso(e.occurred_at_ms),
            e.version.to_string(),
            e.event_type.clone(),
            e.status.clone(),
            e.active_index
                .map(|i| format!("#{i}"))
                .unwrap_or_else(|| "-".into()),
            e.remaining_ms
                .iter()
                .map(|ms| format!("{:.1}", *ms as f64 / 1000.0))
                .collect::<Vec<_>>()
                .join(" / "),
            e.actor.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!("timeline of {session_id}: {} events\n", entries.len());
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out
}
