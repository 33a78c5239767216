//! The local stack, shown working: a chess clock driven over REST through the
//! edge worker (under the Workers runtime), upstash-local and Redis. Each
//! step prints the state it got back and, after a pause, the live clocks the
//! client computes from that state and its estimate of server time.
//!
//! With `--gateway ws://…` a WebSocket client watches the session on the
//! fan-out gateway too, and each change it receives is printed under the
//! command that caused it, with the time from the REST reply to its arrival.
//!
//! `demo [--base-url http://127.0.0.1:8787] [--gateway ws://127.0.0.1:8788]`; the token is an admin JWT
//! signed with `JWT_SECRET` when that is set (`scripts/up.sh` sets it), else
//! none (a worker with `AUTH_MODE=disabled`).

use anyhow::Context;
use std::time::Duration;
use synckairos_client::{live_clocks, Client, TimeEstimate, Watcher};
use synckairos_core::ws::ClientOut;
use synckairos_core::SyncState;

fn uuid(tag: u64) -> String {
    let n = synckairos_client::local_now_ms() as u64;
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        tag,
        (n >> 32) & 0xffff,
        n & 0xffff_ffff_ffff
    )
}

fn mmss(ms: i64) -> String {
    format!("{}:{:02}.{:03}", ms / 60_000, ms / 1000 % 60, ms % 1000)
}

fn show(what: &str, st: &SyncState, time: &TimeEstimate) {
    let line: Vec<String> = live_clocks(st, time)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mark = if c.is_active { "▶" } else { " " };
            format!("{mark} player {} {}", i + 1, mmss(c.remaining_ms))
        })
        .collect();
    println!(
        "{what:<9} v{:<2} {:<9} {}",
        st.version,
        st.status.as_str(),
        line.join("   ")
    );
}

/// Waits for the WebSocket client to receive `version` and says how long
/// after the REST reply it arrived.
async fn pushed(watcher: &mut Option<Watcher>, version: u64) -> anyhow::Result<()> {
    let Some(w) = watcher else { return Ok(()) };
    let since = std::time::Instant::now();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .context("no WebSocket update within 5 s")??;
        if let ClientOut::StateUpdate { state, .. } | ClientOut::StateSync { state, .. } = &m {
            if state.version >= version {
                let after = since.elapsed().as_secs_f64() * 1000.0;
                let when = if after < 0.1 {
                    "already there when the REST reply came".to_string()
                } else {
                    format!("{after:.1} ms after the REST reply")
                };
                println!(
                    "          ws: STATE_UPDATE v{} {} ({when})",
                    state.version,
                    state.status.as_str()
                );
                return Ok(());
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut base = "http://127.0.0.1:8787".to_string();
    let mut gateway = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--base-url" => base = args.next().context("--base-url needs a value")?,
            "--gateway" => gateway = Some(args.next().context("--gateway needs a value")?),
            other => anyhow::bail!(
                "unknown argument {other} (usage: demo [--base-url URL] [--gateway WS-URL])"
            ),
        }
    }
    let token = match std::env::var("JWT_SECRET") {
        Ok(s) if !s.is_empty() => Some(synckairos_client::mint_token(
            &s, "admin", "demo", None, 3600,
        )?),
        _ => None,
    };
    let api = Client::new(&base, token.clone());
    let time = api.sync_time(5).await.context("GET /v1/time")?;
    println!(
        "edge worker at {base}; server clock = local {:+} ms (± {} ms)\n",
        time.offset_ms, time.error_bound_ms
    );

    let (sid, white, black) = (uuid(1), uuid(0xa), uuid(0xb));
    let body = serde_json::json!({
        "session_id": sid, "sync_mode": "per_participant", "total_time_ms": 300_000,
        "increment_ms": 2_000, "metadata": {"demo": "blitz 5+2"},
        "participants": [
            {"participant_id": white, "participant_index": 0, "total_time_ms": 300_000},
            {"participant_id": black, "participant_index": 1, "total_time_ms": 300_000}
        ]
    });
    println!("session {sid}: chess clock, 5 min + 2 s increment");
    show("create", &api.create(&body).await?, &time);
    let mut watcher = match &gateway {
        Some(g) => {
            let mut w = Watcher::connect(g, &sid, token.as_deref())
                .await
                .context("connecting to the gateway")?;
            let clock = w.sync_time(5).await?;
            println!(
                "          ws: watching on {g}; its clock = local {:+} ms (± {} ms)",
                clock.offset_ms, clock.error_bound_ms
            );
            Some(w)
        }
        None => None,
    };
    let started = api.command(&sid, "start").await?;
    show("start", &started, &time);
    pushed(&mut watcher, started.version).await?;
    for think_ms in [900, 1_300, 600] {
        tokio::time::sleep(Duration::from_millis(think_ms)).await;
        let st = api.get(&sid).await?;
        show("  (live)", &st, &time);
        let sw = api.switch(&sid, None).await?;
        let st = api.get(&sid).await?;
        anyhow::ensure!(st.version == sw.version, "GET after switch is behind");
        show("switch", &st, &time);
        pushed(&mut watcher, sw.version).await?;
    }
    for action in ["pause", "resume", "complete"] {
        let st = api.command(&sid, action).await?;
        show(action, &st, &time);
        pushed(&mut watcher, st.version).await?;
    }
    match api.command(&sid, "pause").await {
        Err(e) => println!("\npause after complete is refused: {e}"),
        Ok(_) => anyhow::bail!("a completed session accepted pause"),
    }
    Ok(())
}
