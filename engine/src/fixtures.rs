//! Session bodies for the benchmark and the tests.

use serde_json::{json, Value};
use synckairos_core::validate::validate_create;
use synckairos_core::{Command, Issue, Request};

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

/// A valid create body for `mode` with `n` participants of `bank_ms` each
/// (participant ids `uuid(0xa000 + i)`).
pub fn body(session_id: &str, mode: &str, n: usize, bank_ms: i64) -> Value {
    let participants: Vec<Value> = (0..n)
        .map(|i| {
            json!({"participant_id": uuid(0xa000 + i as u128), "participant_index": i,
                "total_time_ms": bank_ms})
        })
        .collect();
    let mut b = json!({"session_id": session_id, "sync_mode": mode,
        "participants": participants, "total_time_ms": bank_ms});
    if mode == "per_cycle" {
        b["time_per_cycle_ms"] = json!(bank_ms);
    }
    b
}

/// The validated create command of a body.
pub fn create(body: &Value) -> Result<Request, Vec<Issue>> {
    let spec = validate_create(body)?;
    Ok(Request::new(
        spec.session_id.clone(),
        Command::Create(Box::new(spec)),
    ))
}
