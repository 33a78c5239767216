//! `--mode reconnect-storm`: every client of a gateway comes back at once, as
//! after a gateway restart. `--clients` WebSockets spread over `--sessions`
//! (client i watches session i mod S) connect in batches of `--batch-size`;
//! the result is the time until every one is connected and holds its
//! session's `STATE_SYNC`, per-client latencies, failures by kind and, with
//! `--gateway-pid`, the gateway's RSS per socket and its CPU time.

use crate::ws::{connect, ms, rss_kib, sessions, Ws};
use crate::{Args, Client};
use anyhow::{bail, Context};
use clap::ValueEnum;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

/// When the next batch of connection attempts starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BatchWait {
    /// The default: as soon as this batch's attempts are issued (each has
    /// sent its TCP SYN), without waiting for any to complete. Nearly every
    /// client is in flight at once, as after a restart, when nothing
    /// coordinates the clients; the batches only pace the spawning.
    Issued,
    /// Once this batch's attempts have completed the TCP + HTTP upgrade
    /// handshake (or failed): at most `--batch-size` handshakes in flight.
    /// Each batch then waits for its slowest handshake, so one dropped SYN
    /// (a 1 s retransmit) per batch costs a second per batch.
    Handshake,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit in force.
pub fn raise_nofile_limit() -> anyhow::Result<libc::rlim_t> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl = raised;
        } else {
            eprintln!(
                "loadgen: could not raise RLIMIT_NOFILE to {}: {}",
                rl.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(rl.rlim_cur)
}

/// CPU time (user + system) of a process so far, ms (`/proc/<pid>/stat`).
fn cpu_ms(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field
    // 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("/proc stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .context("/proc stat times")
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok((ticks(14)? + ticks(15)?) * 1000 / hz)
}

/// The gateway's RSS (KiB) and CPU time (ms), if its pid is known.
fn gateway_sample(pid: Option<u32>) -> anyhow::Result<Option<(u64, u64)>> {
    pid.map(|p| Ok((rss_kib(p)?, cpu_ms(&p.to_string())?)))
        .transpose()
}

/// One client's attempt; times are from the storm's start.
struct Attempt {
    began: Duration,
    upgraded: Option<Duration>,
    synced: Option<Duration>,
    failure: Option<String>,
    ws: Option<Ws>,
}

/// A failed handshake, by kind: `http_<status>` (429, 503…), `io_<kind>`
/// (refused, reset, too many open files…), or `handshake`.
fn connect_failure(e: &anyhow::Error) -> String {
    match e.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Http(r)) => format!("http_{}", r.status().as_u16()),
        Some(tungstenite::Error::Io(io)) => match io.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => "io_too_many_open_files".into(),
            _ => format!("io_{:?}", io.kind()),
        },
        _ => "handshake".into(),
    }
}

/// Reads until `STATE_SYNC` (`None`), or the reason it never came.
async fn await_sync(ws: &mut Ws, deadline: Instant) -> Option<String> {
    loop {
        let frame = match timeout_at(deadline, ws.next()).await {
            Err(_) => return Some("timeout_before_sync".into()),
            Ok(None) => return Some("closed_before_sync".into()),
            Ok(Some(Err(_))) => return Some("read_error".into()),
            Ok(Some(Ok(f))) => f,
        };
        match frame {
            // The gateway's own serialization: no spaces, `type` first.
            Message::Text(t) if t.starts_with(r#"{"type":"STATE_SYNC""#) => return None,
            Message::Text(t) if t.starts_with(r#"{"type":"ERROR""#) => {
                let v: Value = serde_json::from_str(&t).unwrap_or_default();
                return Some(format!("error_{}", v["code"].as_str().unwrap_or("?")));
            }
            Message::Close(f) => {
                return Some(format!("closed_{}", f.map_or(1005, |f| u16::from(f.code))))
            }
            _ => {} // CONNECTED, pings
        }
    }
}

struct Plan {
    gateway: String,
    token: Option<String>,
    wait: BatchWait,
    start: Instant,
    deadline: Instant,
    /// One permit per attempt issued (or, with `BatchWait::Handshake`,
    /// handshaken).
    issued: Arc<Semaphore>,
}

async fn attempt(plan: Arc<Plan>, sid: String) -> Attempt {
    let began = plan.start.elapsed();
    if plan.wait == BatchWait::Issued {
        // The connect below sends its SYN in this same poll.
        plan.issued.add_permits(1);
    }
    let conn = timeout_at(
        plan.deadline,
        connect(&plan.gateway, &sid, plan.token.as_deref()),
    )
    .await;
    if plan.wait == BatchWait::Handshake {
        plan.issued.add_permits(1);
    }
    let mut a = Attempt {
        began,
        upgraded: None,
        synced: None,
        failure: None,
        ws: None,
    };
    let mut ws = match conn {
        Err(_) => {
            a.failure = Some("timeout_connect".into());
            return a;
        }
        Ok(Err(e)) => {
            a.failure = Some(connect_failure(&e));
            return a;
        }
        Ok(Ok(ws)) => ws,
    };
    a.upgraded = Some(plan.start.elapsed());
    a.failure = await_sync(&mut ws, plan.deadline).await;
    if a.failure.is_none() {
        a.synced = Some(plan.start.elapsed());
    }
    a.ws = Some(ws);
    a
}

fn quantiles(h: &Histogram<u64>, name: &str, out: &mut serde_json::Map<String, Value>) {
    for (q, label) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
        let v = (!h.is_empty()).then(|| ms(h.value_at_quantile(q)));
        out.insert(format!("{name}_{label}_ms"), json!(v));
    }
}

/// Runs the storm; the report's `complete` is false unless every client got
/// its `STATE_SYNC` within `--timeout-secs`.
pub async fn run(
    args: &Args,
    c: Arc<Client>,
    run: u64,
    nofile: libc::rlim_t,
) -> anyhow::Result<Value> {
    let gateway = args.gateway.clone().context("--gateway is required")?;
    let (n, batch) = (args.clients, args.batch_size);
    if n == 0 || batch == 0 {
        bail!("--clients and --batch-size must be at least 1");
    }
    if (n + 64) as libc::rlim_t > nofile {
        eprintln!("loadgen: {n} sockets on an open-file limit of {nofile}: expect failures");
    }
    let ids = sessions(args, &c, run, args.sessions(), args.concurrency, |_| {
        86_400_000
    })
    .await?;
    eprintln!(
        "loadgen: {} sessions ready; {n} clients connecting",
        ids.len()
    );
    let before = gateway_sample(args.gateway_pid)?;
    let own_cpu = cpu_ms("self")?;

    let start = Instant::now();
    let plan = Arc::new(Plan {
        gateway,
        token: args.token.clone(),
        wait: args.batch_wait,
        start,
        deadline: start + Duration::from_secs(args.timeout_secs),
        issued: Arc::new(Semaphore::new(0)),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut started = 0;
    while started < n {
        let end = (started + batch).min(n);
        for i in started..end {
            tasks.spawn(attempt(plan.clone(), ids[i % ids.len()].clone()));
        }
        let waited = timeout_at(
            plan.deadline,
            plan.issued.acquire_many((end - started) as u32),
        );
        started = end;
        match waited.await {
            Ok(Ok(permits)) => permits.forget(),
            _ => break,
        }
    }
    let issued_ms = start.elapsed().as_secs_f64() * 1000.0;

    let mut attempts = Vec::with_capacity(n);
    // Every attempt ends by the deadline; the margin only guards against a bug.
    let give_up = plan.deadline + Duration::from_secs(2);
    while let Ok(Some(r)) = timeout_at(give_up, tasks.join_next()).await {
        attempts.push(r?);
    }
    let after = gateway_sample(args.gateway_pid)?;
    let own_cpu = cpu_ms("self")? - own_cpu;

    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    if attempts.len() < n {
        failures.insert("not_finished".into(), (n - attempts.len()) as u64);
    }
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
    let (mut upgrade, mut to_sync, mut total) = (new_hist()?, new_hist()?, new_hist()?);
    let seconds = args.timeout_secs as usize + 1;
    let (mut connected_by_s, mut synced_by_s) = (vec![0u64; seconds], vec![0u64; seconds]);
    let (mut last_up, mut last_sync) = (Duration::ZERO, Duration::ZERO);
    let us = |d: Duration| (d.as_micros() as u64).max(1);
    for a in &attempts {
        if let Some(f) = &a.failure {
            *failures.entry(f.clone()).or_default() += 1;
        }
        if let Some(up) = a.upgraded {
            upgrade.record(us(up - a.began))?;
            connected_by_s[(up.as_secs() as usize).min(seconds - 1)] += 1;
            last_up = last_up.max(up);
            if let Some(s) = a.synced {
                to_sync.record(us(s - up))?;
                total.record(us(s - a.began))?;
                synced_by_s[(s.as_secs() as usize).min(seconds - 1)] += 1;
                last_sync = last_sync.max(s);
            }
        }
    }
    let connected = upgrade.len();
    let synced = total.len();
    let all = |count: u64, last: Duration| (count == n as u64).then(|| ms(last.as_micros() as u64));
    let trim = |mut v: Vec<u64>| {
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    };
    let mut report = json!({
        "mode": "reconnect-storm", "clients": n, "sessions": ids.len(), "batch_size": batch,
        "batch_wait": format!("{:?}", args.batch_wait).to_lowercase(), "nofile_limit": nofile,
        "connected": connected, "synced": synced, "failures": failures,
        "complete": synced == n as u64,
        "all_issued_ms": (issued_ms * 100.0).round() / 100.0,
        "all_connected_ms": all(connected, last_up), "all_synced_ms": all(synced, last_sync),
        "connected_per_second": trim(connected_by_s), "synced_per_second": trim(synced_by_s),
        "loadgen_cpu_ms": own_cpu,
    });
    let out = report.as_object_mut().expect("an object");
    quantiles(&total, "connect_to_sync", out);
    quantiles(&upgrade, "upgrade", out);
    quantiles(&to_sync, "upgrade_to_sync", out);
    if let (Some((rss0, cpu0)), Some((rss1, cpu1))) = (before, after) {
        out.insert("gateway_rss_kib_before".into(), json!(rss0));
        out.insert("gateway_rss_kib_after".into(), json!(rss1));
        let per = rss1.saturating_sub(rss0) as f64 / connected.max(1) as f64;
        out.insert(
            "rss_kib_per_socket".into(),
            json!((per * 100.0).round() / 100.0),
        );
        out.insert("gateway_cpu_ms".into(), json!(cpu1 - cpu0));
    }

    // Held until here (all synced, RSS read); now a close frame each.
    let closing = attempts
        .into_iter()
        .filter_map(|a| a.ws)
        .map(|mut ws| async move {
            let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
        });
    futures::future::join_all(closing).await;
    Ok(report)
}
