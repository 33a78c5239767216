//! The local stack, shown working: a chess clock driven over REST through the
//! edge worker (under the Workers runtime), upstash-local and Redis. Each
//! step prints the state it got back and, after a pause, the live clocks the
//! client computes from that state and its estimate of server time.
//!
//! With `--gateway ws://…` a WebSocket client watches the session on the
//! fan-out gateway too, and each change it receives is printed under the
//! command that caused it, with the time from the REST reply to its arrival.
//!
//! `--control` plays the game under another time control, with short
//! parameters so the demo stays quick (`--help` lists them; byo-yomi is 3 s +
//! 3 × 1 s, and a clock runs into its periods), and prints each participant's
//! control fields of the state (`periods_left`, `moves_left`, `stage`,
//! `overtime`) beside its clock. The default is Fischer 5 min + 2 s.
//!
//! `demo [--base-url http://127.0.0.1:8787] [--gateway ws://127.0.0.1:8788] [--control CONTROL]`;
//! the token is an admin JWT signed with `JWT_SECRET` when that is set
//! (`scripts/up.sh` sets it), else none (a worker with `AUTH_MODE=disabled`).

use anyhow::Context;
use std::time::Duration;
use synckairos_client::{live_clocks, Client, TimeEstimate, Watcher};
use synckairos_core::view::Clock;
use synckairos_core::ws::ClientOut;
use synckairos_core::{Participant, SyncState};

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

const USAGE: &str = "usage: demo [--base-url URL] [--gateway WS-URL] \
    [--control fischer|bronstein|simple_delay|byoyomi|canadian|hourglass|stages]";

const CONTROLS: &str = "--control: the demo game's time control, with short parameters:
  fischer       5 min + 2 s increment (the default)
  bronstein     10 s + 1 s Bronstein delay
  simple_delay  10 s + 1 s simple (US) delay
  byoyomi       3 s main time + 3 periods of 1 s; a clock runs into its periods
  canadian      2 s main time, then 2 moves in 2 s; overtime begins and a block renews
  hourglass     5 s each; what one uses goes to the other
  stages        5 s for 2 moves (+0.5 s each), then +3 s (+1 s each)
Each participant's control fields of the state (periods_left, moves_left,
stage, overtime) are printed beside its clock.";

/// The game a `--control` plays: what it is called, each player's bank, the
/// create body's `increment_ms` or `time_control`, and how long the players
/// think before each switch (white first).
struct Game {
    title: &'static str,
    bank_ms: i64,
    control: serde_json::Value,
    thinks_ms: &'static [u64],
}

fn game(control: &str) -> anyhow::Result<Game> {
    use serde_json::json;
    let g = |title, bank_ms, control, thinks_ms| Game {
        title,
        bank_ms,
        control,
        thinks_ms,
    };
    Ok(match control {
        "fischer" => g(
            "chess clock, 5 min + 2 s increment",
            300_000,
            json!({"increment_ms": 2_000}),
            &[900, 1_300, 600],
        ),
        // A move gets back what it used, up to 1 s: white's 0.9 s and 0.6 s
        // cost nothing, black's 1.3 s costs 0.3 s.
        "bronstein" => g(
            "chess clock, 10 s + 1 s Bronstein delay",
            10_000,
            json!({"time_control": {"type": "bronstein", "delay_ms": 1_000}}),
            &[900, 1_300, 600],
        ),
        // The clock waits 1 s each turn before it runs.
        "simple_delay" => g(
            "chess clock, 10 s + 1 s simple (US) delay",
            10_000,
            json!({"time_control": {"type": "simple_delay", "delay_ms": 1_000}}),
            &[900, 1_300, 600],
        ),
        // White runs 0.5 s into its first period and keeps it; black runs
        // 1.2 s past main time and loses one; white moves inside a period.
        "byoyomi" => g(
            "go clock, 3 s main time + byo-yomi 3 × 1 s",
            3_000,
            json!({"time_control": {"type": "byoyomi", "periods": 3, "period_ms": 1_000}}),
            &[900, 1_300, 2_600, 2_900, 600],
        ),
        // White's main time runs out 0.5 s into its first move (overtime: 2
        // moves in 2 s), and its second move in the block renews it.
        "canadian" => g(
            "go clock, 2 s main time + Canadian 2 moves in 2 s",
            2_000,
            json!({"time_control": {"type": "canadian", "moves": 2, "period_ms": 2_000}}),
            &[2_500, 900, 600],
        ),
        // What one player uses is added to the other.
        "hourglass" => g(
            "hourglass, 5 s each",
            5_000,
            json!({"time_control": {"type": "hourglass"}}),
            &[900, 1_300, 600],
        ),
        // White's second move ends its first stage: +3 s, then +1 s a move.
        "stages" => g(
            "stages: 5 s for 2 moves (+0.5 s each), then +3 s (+1 s each)",
            5_000,
            json!({"time_control": {"type": "stages", "stages": [
                {"moves": 2, "increment_ms": 500},
                {"add_ms": 3_000, "increment_ms": 1_000}]}}),
            &[900, 1_300, 600],
        ),
        other => anyhow::bail!("unknown control {other} ({USAGE})"),
    })
}

/// A participant's control fields in the state (`periods_left`,
/// `moves_left`, `stage`, `overtime`), and what the live clock adds (the
/// running byo-yomi period, a delay still to run); empty under Fischer.
fn control_fields(p: &Participant, c: &Clock) -> String {
    let mut f = Vec::new();
    if let Some(n) = p.periods_left {
        f.push(format!("periods_left {n}"));
    }
    if let Some(n) = p.stage {
        f.push(format!("stage {n}"));
    }
    if let Some(n) = p.moves_left {
        f.push(format!("moves_left {n}"));
    }
    if p.overtime {
        f.push("overtime".to_string());
    }
    // The running clock as computed now, where it says more than the last
    // checkpoint: the byo-yomi period it is in, a Canadian block begun during
    // this turn, the delay still to run.
    let mut now = Vec::new();
    if c.is_active {
        if let (Some(ms), Some(n)) = (c.period_left_ms, c.periods_left) {
            now.push(format!("{} left in a period, {n} periods", mmss(ms)));
        } else if c.moves_left != p.moves_left {
            if let Some(n) = c.moves_left {
                now.push(format!("moves_left {n}"));
            }
        }
        if c.delay_left_ms > 0 {
            now.push(format!("delay {} left", mmss(c.delay_left_ms)));
        }
    }
    if !now.is_empty() {
        f.push(format!("now: {}", now.join(", ")));
    }
    if f.is_empty() {
        String::new()
    } else {
        format!(" [{}]", f.join(", "))
    }
}

fn show(what: &str, st: &SyncState, time: &TimeEstimate) {
    let line: Vec<String> = live_clocks(st, time)
        .iter()
        .zip(&st.participants)
        .enumerate()
        .map(|(i, (c, p))| {
            let mark = if c.is_active { "▶" } else { " " };
            format!(
                "{mark} player {} {}{}",
                i + 1,
                mmss(c.remaining_ms),
                control_fields(p, c)
            )
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
    let mut control = "fischer".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--base-url" => base = args.next().context("--base-url needs a value")?,
            "--gateway" => gateway = Some(args.next().context("--gateway needs a value")?),
            "--control" => control = args.next().context("--control needs a value")?,
            "-h" | "--help" => {
                println!("{USAGE}\n\n{CONTROLS}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other} ({USAGE})"),
        }
    }
    let game = game(&control)?;
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
    let bank = game.bank_ms;
    let mut body = serde_json::json!({
        "session_id": sid, "sync_mode": "per_participant", "total_time_ms": bank,
        "metadata": {"demo": if control == "fischer" { "blitz 5+2" } else { control.as_str() }},
        "participants": [
            {"participant_id": white, "participant_index": 0, "total_time_ms": bank},
            {"participant_id": black, "participant_index": 1, "total_time_ms": bank}
        ]
    });
    if let (Some(b), Some(c)) = (body.as_object_mut(), game.control.as_object()) {
        b.extend(c.clone());
    }
    println!("session {sid}: {}", game.title);
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
    for &think_ms in game.thinks_ms {
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
