//! A chess clock through the engine on a local Redis: create, start, a few
//! switches, a pause, with every player's live clock and the audit trail.
//!
//! `REDIS_URL` (default `redis://127.0.0.1:6379/`).

use std::time::Duration;
use synckairos_core::keys::SessionKeys;
use synckairos_core::model::Reply;
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::validate::validate_create;
use synckairos_core::view::clocks;
use synckairos_core::{Command, Request, SyncState};
use synckairos_engine::Engine;

fn id(n: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    format!("{:08x}-0000-4000-8000-{:012x}", n, nanos & 0xffff_ffff_ffff)
}

fn mmss(ms: i64) -> String {
    format!("{}:{:02}.{:03}", ms / 60_000, ms / 1000 % 60, ms % 1000)
}

async fn show(engine: &Engine, what: &str, st: &SyncState) -> anyhow::Result<()> {
    let now = engine.redis_time_ms().await?;
    let line: Vec<String> = clocks(st, now)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mark = if c.is_active { "▶" } else { " " };
            format!("{mark} player {} {}", i + 1, mmss(c.remaining_ms))
        })
        .collect();
    println!(
        "{what:<8} v{:<2} {:<8} {}",
        st.version,
        st.status.as_str(),
        line.join("   ")
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let engine = Engine::connect(&url, Settings::default()).await?;
    let sid = id(1);
    let body = serde_json::json!({
        "session_id": sid, "sync_mode": "per_participant", "total_time_ms": 300_000,
        "increment_ms": 2_000, "metadata": {"demo": "blitz 5+2"},
        "participants": [
            {"participant_id": id(0xa), "participant_index": 0, "total_time_ms": 300_000},
            {"participant_id": id(0xb), "participant_index": 1, "total_time_ms": 300_000}
        ]
    });
    let spec = validate_create(&body).map_err(|issues| anyhow::anyhow!("{issues:?}"))?;
    println!("session {sid}: chess clock, 5 min + 2 s increment\n");
    let steps = [
        ("create", Command::Create(Box::new(spec)), 0),
        ("start", Command::Start, 1_300),
        (
            "switch",
            Command::Switch {
                next_participant_id: None,
            },
            800,
        ),
        (
            "switch",
            Command::Switch {
                next_participant_id: None,
            },
            1_100,
        ),
        (
            "switch",
            Command::Switch {
                next_participant_id: None,
            },
            500,
        ),
        ("pause", Command::Pause, 700),
        ("resume", Command::Resume, 0),
    ];
    for (what, command, think_ms) in steps {
        let reply = engine
            .execute(&Request::new(&sid, command), &CallOptions::default())
            .await?;
        match reply.result {
            Ok(Reply::State { state, .. }) => {
                show(&engine, what, &state).await?;
                if think_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(think_ms)).await;
                    show(&engine, "  (live)", &state).await?;
                }
            }
            other => anyhow::bail!("{what} failed: {other:?}"),
        }
    }

    let keys = SessionKeys::new(&sid, engine.settings().shards);
    let mut conn = engine.connection();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&keys.audit)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await?;
    println!("\naudit stream {} (this session):", keys.audit);
    for (entry, fields) in entries {
        let ev = synckairos_core::audit::AuditEvent::from_fields(
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        if ev.session_id == sid {
            println!(
                "  {entry:<16} v{:<2} {}",
                ev.version,
                ev.event_type.as_str()
            );
        }
    }
    Ok(())
}
