//! `watch --gateway ws://127.0.0.1:8788 --session <id> [--token JWT]`:
//! a session's clocks, live, in a terminal. The clocks are computed here
//! from the last snapshot and the gateway's clock (estimated with
//! `TIME_SYNC`), ten times a second; the socket only brings changes.

use anyhow::Context;
use std::io::Write;
use std::time::Duration;
use synckairos_client::{live_clocks, Watcher};
use synckairos_core::ws::ClientOut;
use synckairos_core::SyncState;

fn mmss(ms: i64) -> String {
    format!("{}:{:02}.{}", ms / 60_000, ms / 1000 % 60, ms % 1000 / 100)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut gateway, mut session, mut token) = ("ws://127.0.0.1:8788".to_string(), None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gateway" => gateway = args.next().context("--gateway needs a value")?,
            "--session" => session = Some(args.next().context("--session needs a value")?),
            "--token" => token = Some(args.next().context("--token needs a value")?),
            other => anyhow::bail!(
                "unknown argument {other} (usage: watch --gateway URL --session ID [--token JWT])"
            ),
        }
    }
    let session = session.context("--session is required")?;
    let mut w = Watcher::connect(&gateway, &session, token.as_deref()).await?;
    let time = w.sync_time(8).await?;
    println!(
        "gateway clock = local {:+} ms (± {} ms); ctrl-c to stop",
        time.offset_ms, time.error_bound_ms
    );
    let mut state: Option<SyncState> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            m = w.next() => match m? {
                ClientOut::StateSync { state: s, .. } | ClientOut::StateUpdate { state: s, .. } => {
                    println!();
                    state = Some(*s);
                }
                ClientOut::SessionDeleted { .. } => {
                    println!("\nsession deleted");
                    return Ok(());
                }
                _ => {}
            },
            _ = tick.tick() => {
                if let Some(st) = &state {
                    let clocks: Vec<String> = live_clocks(st, &time)
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("{}{} {}", if c.is_active { "▶" } else { " " }, i + 1, mmss(c.remaining_ms)))
                        .collect();
                    print!("\rv{} {:<9} {}   ", st.version, st.status.as_str(), clocks.join("  "));
                    std::io::stdout().flush().ok();
                }
            }
        }
    }
}
