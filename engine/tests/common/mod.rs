//! Shared helpers of the engine's test binaries.
#![allow(dead_code, unused_imports)]

use serde_json::Value;
use synckairos_core::audit::AuditEvent;
use synckairos_core::keys::SessionKeys;

use synckairos_core::model::Reply;
use synckairos_core::script::ScriptReply;
use synckairos_core::{Command, Request, SyncState};

pub use synckairos_engine::fixtures::{body, uuid};

/// The validated create command of `body` (panics on an invalid body).
pub fn create(body: &Value) -> Request {
    synckairos_engine::fixtures::create(body).expect("valid body")
}

/// Every audit event of the session's shard stream after `after` (exclusive),
/// with the last entry id read.
pub async fn audit_after(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &SessionKeys,
    after: &str,
) -> (Vec<AuditEvent>, String) {
    let start = format!("({after}");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&keys.audit)
        .arg(&start)
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE");
    let last = entries
        .last()
        .map(|e| e.0.clone())
        .unwrap_or_else(|| after.to_string());
    let events = entries
        .iter()
        .map(|(_, f)| {
            AuditEvent::from_fields(f.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .expect("valid audit entry")
        })
        .collect();
    (events, last)
}

/// The state of a reply (panics on anything else).
pub fn state(r: &ScriptReply) -> &SyncState {
    match &r.result {
        Ok(Reply::State { state, .. }) => state,
        other => panic!("expected a state, got {other:?}"),
    }
}

/// `c` on session `sid`, with no expected version, actor or turn check.
pub fn cmd(sid: &str, c: Command) -> Request {
    Request::new(sid, c)
}

/// A connection to the test's redis-server.
pub async fn conn(server: &synckairos_testkit::RedisServer) -> redis::aio::MultiplexedConnection {
    server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("conn")
}

/// `req` at Redis time `now_ms` (the scripts' test-only clock).
pub async fn at(e: &synckairos_engine::Engine, req: &Request, now_ms: i64) -> ScriptReply {
    let opts = synckairos_core::script::CallOptions {
        now_ms: Some(now_ms),
        idempotency_key: None,
    };
    e.execute(req, &opts).await.expect("execute")
}

/// A switch to whoever is next, on session `sid`.
pub fn switch(sid: &str) -> Request {
    cmd(
        sid,
        Command::Switch {
            next_participant_id: None,
        },
    )
}
