//! Shared helpers of the engine's test binaries.
#![allow(dead_code)]

use serde_json::{json, Value};
use synckairos_core::audit::AuditEvent;
use synckairos_core::keys::SessionKeys;
use synckairos_core::validate::validate_create;
use synckairos_core::{Command, CreateSpec, Request};

/// A UUID built from a number (lower-case).
pub fn uuid(n: u128) -> String {
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A valid create body for `mode` with `n` participants of `bank_ms` each.
pub fn body(session_id: &str, mode: &str, n: usize, bank_ms: i64) -> Value {
    let participants: Vec<Value> = (0..n)
        .map(|i| {
            json!({"participant_id": uuid(0xa000 + i as u128), "participant_index": i, "total_time_ms": bank_ms})
        })
        .collect();
    let mut b = json!({"session_id": session_id, "sync_mode": mode, "participants": participants,
        "total_time_ms": bank_ms});
    if mode == "per_cycle" {
        b["time_per_cycle_ms"] = json!(bank_ms);
    }
    b
}

/// The validated create command of `body`.
pub fn create(body: &Value) -> Request {
    let spec: CreateSpec = validate_create(body).expect("valid body");
    Request::new(spec.session_id.clone(), Command::Create(Box::new(spec)))
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
