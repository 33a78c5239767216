//! `engine-bench`: closed-loop throughput and latency of the engine's commands
//! against a real Redis.
//!
//! It creates `--sessions` `per_participant` sessions (2 participants, 24 h
//! banks, so nothing expires during a run), starts them, then runs
//! `--concurrency` tokio tasks that each own a slice of the sessions and issue
//! the chosen command back-to-back, round-robin over their slice, for
//! `--duration-secs` seconds after a warm-up that is not recorded. Every call's
//! latency goes into an HDR histogram (µs); domain refusals and engine errors
//! are counted as errors and reported. One JSON object is printed on stdout;
//! progress and warnings go to stderr.
//!
//! Each command is one `EVALSHA` (`get` is one `GET`). `--connections` opens
//! that many independent [`Engine`]s (each one multiplexed connection) which
//! the tasks share round-robin.

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Map};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synckairos_core::script::{self, CallOptions, Settings};

use synckairos_core::{Command, Request};
use synckairos_engine::fixtures::{body, create, uuid};
use synckairos_engine::{Engine, EngineError};
use tokio::task::JoinSet;

/// 24 h, the largest bank a create body accepts.
const BANK_MS: i64 = 86_400_000;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `switch` (no explicit next participant).
    Switch,
    /// `Engine::get` (one `GET` plus parsing the state).
    Get,
    /// `pause` and `resume`, alternating per session.
    PauseResume,
    /// `switch`, `get`, `pause`, `resume` in turn per session.
    All,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Switch => "switch",
            Mode::Get => "get",
            Mode::PauseResume => "pause-resume",
            Mode::All => "all",
        }
    }

    /// The operation for the `step`-th call on one session.
    fn op(self, step: u64) -> Op {
        match self {
            Mode::Switch => Op::Switch,
            Mode::Get => Op::Get,
            Mode::PauseResume => [Op::Pause, Op::Resume][(step % 2) as usize],
            Mode::All => [Op::Switch, Op::Get, Op::Pause, Op::Resume][(step % 4) as usize],
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Op {
    Switch,
    Get,
    Pause,
    Resume,
}

impl Op {
    const ALL: [Op; 4] = [Op::Switch, Op::Get, Op::Pause, Op::Resume];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Op::Switch => "switch",
            Op::Get => "get",
            Op::Pause => "pause",
            Op::Resume => "resume",
        }
    }
}

/// Closed-loop benchmark of the SyncKairos engine against Redis.
#[derive(Parser, Debug)]
#[command(name = "engine-bench", version)]
struct Args {
    /// Redis to run against (it gets sessions written to it).
    #[arg(
        long,
        env = "ENGINE_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
    /// Sessions created before the run (spread over the tasks).
    #[arg(long, env = "ENGINE_BENCH_SESSIONS", default_value_t = 1000)]
    sessions: usize,
    /// Concurrent tasks, each with one call in flight.
    #[arg(long, env = "ENGINE_BENCH_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Independent engine connections shared round-robin by the tasks
    /// (default: one per task).
    #[arg(long, env = "ENGINE_BENCH_CONNECTIONS")]
    connections: Option<usize>,
    /// Measured seconds (after the warm-up).
    #[arg(long, env = "ENGINE_BENCH_DURATION_SECS", default_value_t = 10)]
    duration_secs: u64,
    /// Unrecorded warm-up seconds before the measurement.
    #[arg(long, env = "ENGINE_BENCH_WARMUP_SECS", default_value_t = 1)]
    warmup_secs: u64,
    /// What to issue.
    #[arg(
        long,
        value_enum,
        env = "ENGINE_BENCH_COMMAND",
        default_value = "switch"
    )]
    command: Mode,
    /// Switches per session per second the scripts allow (0 = unlimited).
    #[arg(long, env = "ENGINE_BENCH_SWITCH_LIMIT", default_value_t = 0)]
    switch_limit: u64,
    /// Keep the sessions instead of deleting them at the end.
    #[arg(long, env = "ENGINE_BENCH_KEEP")]
    keep: bool,
    /// Do not benchmark: create and start one session (kept), then print the
    /// exact `EVALSHA` argv of one switch on it, one argument per line (for
    /// replaying the real script with `redis-benchmark`).
    #[arg(long)]
    print_switch_call: bool,
}

/// The validated create command of `session_id`.
fn create_request(session_id: &str) -> anyhow::Result<Request> {
    create(&body(session_id, "per_participant", 2, BANK_MS))
        .map_err(|issues| anyhow::anyhow!("create body rejected: {issues:?}"))
}

/// Runs `cmd` and fails unless the engine and the domain both accepted it.
async fn must(engine: &Engine, session_id: &str, cmd: Command) -> anyhow::Result<()> {
    let name = cmd.name();
    let reply = engine
        .execute(&Request::new(session_id, cmd), &CallOptions::default())
        .await
        .with_context(|| format!("{name} {session_id}"))?;
    if let Err(e) = reply.result {
        bail!("{name} {session_id} refused: {} ({e})", e.code());
    }
    Ok(())
}

/// Runs `per_session` on every session, `parallel` at a time.
async fn for_all_sessions<F, Fut>(
    engines: &[Engine],
    ids: &[String],
    parallel: usize,
    per_session: F,
) -> anyhow::Result<()>
where
    F: Fn(Engine, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let mut set = JoinSet::new();
    for t in 0..parallel.max(1) {
        let engine = engines[t % engines.len()].clone();
        let mine: Vec<String> = ids
            .iter()
            .skip(t)
            .step_by(parallel.max(1))
            .cloned()
            .collect();
        let f = per_session.clone();
        set.spawn(async move {
            for id in mine {
                f(engine.clone(), id).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// What one task measured.
struct TaskResult {
    /// Per [`Op::index`]: latency (µs) of every recorded call.
    hist: Vec<Histogram<u64>>,
    /// Per [`Op::index`]: recorded calls that failed.
    errors: Vec<u64>,
    /// Failure kind → count (recorded calls only).
    error_kinds: BTreeMap<String, u64>,
    /// The first few failure messages (any phase).
    samples: Vec<String>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One call; `Err((kind, message))` when it failed.
async fn run_op(engine: &Engine, session_id: &str, op: Op) -> Result<(), (String, String)> {
    let engine_err = |e: EngineError| {
        let kind = match &e {
            EngineError::Redis(_) => "engine:redis",
            EngineError::BadReply(_) => "engine:bad_reply",
            EngineError::BadState { .. } => "engine:bad_state",
            EngineError::Target(_) => "engine:target",
        };
        (kind.to_string(), e.to_string())
    };
    let cmd = match op {
        Op::Get => {
            return match engine.get(session_id).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(("get:missing".into(), format!("no state for {session_id}"))),
                Err(e) => Err(engine_err(e)),
            };
        }
        Op::Switch => Command::Switch {
            next_participant_id: None,
        },
        Op::Pause => Command::Pause,
        Op::Resume => Command::Resume,
    };
    let reply = engine
        .execute(&Request::new(session_id, cmd), &CallOptions::default())
        .await
        .map_err(engine_err)?;
    match reply.result {
        Ok(_) => Ok(()),
        Err(e) => Err((
            format!("{}:{}", op.name(), e.code()),
            format!("{} {session_id}: {e}", op.name()),
        )),
    }
}

/// The closed loop of one task.
async fn worker(
    engine: Engine,
    ids: Vec<String>,
    mode: Mode,
    record_from: Instant,
    stop_at: Instant,
) -> TaskResult {
    let mut res = TaskResult {
        hist: Op::ALL.iter().map(|_| new_hist()).collect(),
        errors: vec![0; Op::ALL.len()],
        error_kinds: BTreeMap::new(),
        samples: Vec::new(),
    };
    let mut steps = vec![0u64; ids.len()];
    let mut i = 0usize;
    loop {
        let t0 = Instant::now();
        if t0 >= stop_at {
            break;
        }
        let k = i % ids.len();
        i += 1;
        let op = mode.op(steps[k]);
        steps[k] += 1;
        let outcome = run_op(&engine, &ids[k], op).await;
        let us = t0.elapsed().as_micros() as u64;
        if let Err((kind, msg)) = &outcome {
            if res.samples.len() < 3 {
                res.samples.push(msg.clone());
            }
            if t0 >= record_from {
                res.errors[op.index()] += 1;
                *res.error_kinds.entry(kind.clone()).or_default() += 1;
            }
        }
        if t0 >= record_from {
            res.hist[op.index()].saturating_record(us.max(1));
        }
    }
    res
}

/// CPU seconds (user + system) this process has used so far, from
/// `/proc/self/stat` (Linux; `USER_HZ` = 100).
fn own_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // After the command name: state ppid pgrp session tty_nr tpgid flags
    // minflt cminflt majflt cmajflt utime stime.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds (user + system) the Redis server has used so far (`INFO cpu`).
async fn server_cpu_s(engine: &Engine) -> Option<f64> {
    let mut conn = engine.connection();
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .parse()
            .ok()
    };
    Some(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// Both CPU counters, taken together.
async fn cpu_sample(engine: &Engine) -> (Option<f64>, Option<f64>) {
    (own_cpu_s(), server_cpu_s(engine).await)
}

fn summary(h: &Histogram<u64>) -> [u64; 4] {
    if h.is_empty() {
        return [0; 4];
    }
    [
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.max(),
    ]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings {
        switch_limit: args.switch_limit,
        ..Settings::default()
    };
    // A per-run id prefix, so that runs with --keep never collide.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let base = ((nanos as u64 as u128) << 64) | ((std::process::id() as u128) << 32);

    if args.print_switch_call {
        let engine = Engine::connect(&args.redis_url, settings.clone())
            .await
            .context("connecting to redis")?;
        let id = uuid(base);
        engine
            .execute(&create_request(&id)?, &CallOptions::default())
            .await?
            .result?;
        must(&engine, &id, Command::Start).await?;
        let req = Request::new(
            id,
            Command::Switch {
                next_participant_id: None,
            },
        );
        let call = script::call(&req, &settings, &CallOptions::default());
        println!("EVALSHA");
        println!("{}", call.script.sha1());
        println!("{}", call.keys.len());
        for a in call.keys.iter().chain(call.args.iter()) {
            println!("{a}");
        }
        return Ok(());
    }

    if args.concurrency == 0 || args.sessions < args.concurrency {
        bail!(
            "need --sessions ({}) >= --concurrency ({}) >= 1: every task owns its own sessions",
            args.sessions,
            args.concurrency
        );
    }
    let connections = args.connections.unwrap_or(args.concurrency).max(1);
    let mut engines = Vec::with_capacity(connections);
    for _ in 0..connections {
        engines.push(
            Engine::connect(&args.redis_url, settings.clone())
                .await
                .with_context(|| format!("connecting to {}", args.redis_url))?,
        );
    }

    let ids: Vec<String> = (0..args.sessions as u128).map(|i| uuid(base | i)).collect();
    let setup = Instant::now();
    for_all_sessions(&engines, &ids, args.concurrency, |engine, id| async move {
        let reply = engine
            .execute(&create_request(&id)?, &CallOptions::default())
            .await
            .with_context(|| format!("create {id}"))?;
        if let Err(e) = reply.result {
            bail!("create {id} refused: {e}");
        }
        must(&engine, &id, Command::Start).await
    })
    .await?;
    eprintln!(
        "engine-bench: created and started {} sessions in {:.2}s over {} connection(s); \
         {} for {}s after {}s warm-up, {} tasks",
        ids.len(),
        setup.elapsed().as_secs_f64(),
        connections,
        args.command.name(),
        args.duration_secs,
        args.warmup_secs,
        args.concurrency
    );

    let begin = Instant::now();
    let record_from = begin + Duration::from_secs(args.warmup_secs);
    let stop_at = record_from + Duration::from_secs(args.duration_secs);
    let mut set = JoinSet::new();
    for t in 0..args.concurrency {
        let engine = engines[t % connections].clone();
        let mine: Vec<String> = ids
            .iter()
            .skip(t)
            .step_by(args.concurrency)
            .cloned()
            .collect();
        set.spawn(worker(engine, mine, args.command, record_from, stop_at));
    }
    tokio::time::sleep_until(record_from.into()).await;
    let cpu_before = cpu_sample(&engines[0]).await;
    let mut hist: Vec<Histogram<u64>> = Op::ALL.iter().map(|_| new_hist()).collect();
    let mut errors = vec![0u64; Op::ALL.len()];
    let mut error_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut samples = Vec::new();
    while let Some(r) = set.join_next().await {
        let r = r.context("benchmark task panicked")?;
        for (total, h) in hist.iter_mut().zip(&r.hist) {
            total.add(h).expect("same histogram bounds");
        }
        for (total, e) in errors.iter_mut().zip(&r.errors) {
            *total += e;
        }
        for (k, n) in r.error_kinds {
            *error_kinds.entry(k).or_default() += n;
        }
        samples.extend(r.samples);
    }
    // Calls started before `stop_at` finish after it: measure to the last one.
    let measured_s = record_from.elapsed().as_secs_f64();
    let cpu_after = cpu_sample(&engines[0]).await;
    let delta = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let client_cpu = delta(cpu_before.0, cpu_after.0);
    let server_cpu = delta(cpu_before.1, cpu_after.1);
    let pct = |c: Option<f64>| c.map(|c| (c / measured_s * 1000.0).round() / 10.0);
    let r3 = |c: Option<f64>| c.map(|c| (c * 1000.0).round() / 1000.0);

    let mut all = new_hist();
    let mut by_command = Map::new();
    for op in Op::ALL {
        let h = &hist[op.index()];
        all.add(h).expect("same histogram bounds");
        if h.is_empty() {
            continue;
        }
        let [p50, p90, p99, max] = summary(h);
        by_command.insert(
            op.name().into(),
            json!({"calls": h.len(), "errors": errors[op.index()], "p50_us": p50,
                   "p90_us": p90, "p99_us": p99, "max_us": max}),
        );
    }
    let calls = all.len();
    let total_errors: u64 = errors.iter().sum();
    let [p50, p90, p99, max] = summary(&all);

    if !args.keep {
        let t = Instant::now();
        for_all_sessions(&engines, &ids, args.concurrency, |engine, id| async move {
            must(&engine, &id, Command::Delete).await
        })
        .await
        .context("deleting the sessions")?;
        eprintln!(
            "engine-bench: deleted {} sessions in {:.2}s",
            ids.len(),
            t.elapsed().as_secs_f64()
        );
    }
    if total_errors > 0 {
        eprintln!("engine-bench: WARNING: {total_errors} of {calls} calls failed: {error_kinds:?}");
        for s in samples.iter().take(5) {
            eprintln!("engine-bench:   e.g. {s}");
        }
    }

    let out = json!({
        "command": args.command.name(),
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "connections": connections,
        "duration_s": (measured_s * 1000.0).round() / 1000.0,
        "calls": calls,
        "errors": total_errors,
        "error_kinds": error_kinds,
        "calls_per_s": (calls as f64 / measured_s).round(),
        "p50_us": p50,
        "p90_us": p90,
        "p99_us": p99,
        "max_us": max,
        "by_command": by_command,
        // CPU used during the measured window; percent of one core.
        "cpu": {
            "client_s": r3(client_cpu),
            "server_s": r3(server_cpu),
            "client_pct": pct(client_cpu),
            "server_pct": pct(server_cpu),
        },
    });
    println!("{out}");
    Ok(())
}
