//! `--mode scale`: the scale run on a Redis Cluster behind several gateways.
//!
//! Against `--redis-url redis+cluster://…` (sessions are created straight in
//! the cluster through the engine) and `--gateway ws://a,ws://b,ws://c`
//! (native servers, `REST_API=on`: switches go to their REST API, watchers
//! to their `/ws`), with `--gateway-metrics` listing their internal
//! `/metrics` URLs in the same order, it:
//!
//! 1. measures the primaries' `used_memory`, creates and starts
//!    `--sessions` × (1 − `--expiring-fraction`) clocks with 24 h banks,
//!    waits until the audit consumer has drained and trimmed their entries,
//!    and reports Redis bytes per session (the `INFO memory` delta, and
//!    `MEMORY USAGE` of a sample of records and of the deadline ZSETs);
//! 2. connects `--watchers` WebSockets, two per watched session, each pair
//!    on two different gateways;
//! 3. counts, with `MONITOR` on every primary for `--window-secs`, the Redis
//!    commands per second of each process named in `--process name=pid` at
//!    rest;
//! 4. creates the expiring sessions (the rest of `--sessions`), whose banks
//!    run out spread over the switch phase, and switches the watched
//!    sessions at `--rate` per second (open loop) for `--duration-secs`,
//!    counting commands per process again in the middle of it;
//! 5. waits until the gateways flagged every expiring session (the sum of
//!    their expiry-lag histograms) and reports its p50/p99;
//! 6. switches closed loop at `--concurrency` for `--max-secs`: the
//!    maximum rate reached.
//!
//! Fan-out latency is from sending each switch to each watcher's receipt of
//! its `STATE_UPDATE`, per phase.

use crate::ws::{ms, sessions};
use crate::{Args, Client};
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synckairos_core::keys;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

/// A watched session's switches: (session index, version) → when sent.
type Sent = Arc<Mutex<HashMap<(usize, u64), Instant>>>;

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The cluster's primaries (`host:port`), from `CLUSTER NODES` on a seed.
async fn primaries(url: &str) -> anyhow::Result<Vec<String>> {
    let seeds = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .context("--redis-url redis+cluster://host:port,…")?;
    for seed in seeds.split(',') {
        let Ok(client) = redis::Client::open(format!("redis://{}/", seed.trim_end_matches('/')))
        else {
            continue;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await?;
        let mut out: Vec<String> = nodes
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() > 2 && f[2].contains("master") && !f[2].contains("fail"))
                    .then(|| f[1].split('@').next().unwrap_or(f[1]).to_string())
            })
            .collect();
        out.sort();
        if out.is_empty() {
            bail!("{seed}: CLUSTER NODES lists no primary");
        }
        return Ok(out);
    }
    bail!("no seed of {url} answered")
}

struct Nodes {
    conns: Vec<redis::aio::MultiplexedConnection>,
}

impl Nodes {
    async fn connect(addrs: Vec<String>) -> anyhow::Result<Nodes> {
        let mut conns = Vec::new();
        for a in &addrs {
            conns.push(
                redis::Client::open(format!("redis://{a}/"))?
                    .get_multiplexed_async_connection()
                    .await
                    .with_context(|| format!("connecting to {a}"))?,
            );
        }
        Ok(Nodes { conns })
    }

    /// `used_memory` summed over the primaries.
    async fn used_memory(&mut self) -> anyhow::Result<u64> {
        let mut sum = 0;
        for c in &mut self.conns {
            let info: String = redis::cmd("INFO").arg("memory").query_async(c).await?;
            sum += info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .context("used_memory")?
                .trim()
                .parse::<u64>()?;
        }
        Ok(sum)
    }

    /// Runs a one-key command on whichever primary owns the key (the others
    /// answer `MOVED`).
    async fn on_owner<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        let mut last = None;
        for c in &mut self.conns {
            match cmd.query_async::<T>(c).await {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) => {
                    last = Some(e)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("no primary"), Into::into))
    }

    /// `MEMORY USAGE key SAMPLES 0` (every element counted), on its owner.
    async fn memory_usage(&mut self, key: &str) -> anyhow::Result<Option<u64>> {
        self.on_owner(
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0),
        )
        .await
    }

    /// Entries in the shards' audit streams, and their `MEMORY USAGE`.
    async fn streams(&mut self, shards: u16) -> anyhow::Result<(u64, u64)> {
        let (mut len, mut bytes) = (0u64, 0u64);
        for s in 0..shards {
            let k = keys::audit_stream(s);
            len += self.on_owner::<u64>(redis::cmd("XLEN").arg(&k)).await?;
            bytes += self.memory_usage(&k).await?.unwrap_or(0);
        }
        Ok((len, bytes))
    }
}

/// Which process (by name) holds each TCP socket, by (local port, remote
/// port): from `/proc/<pid>/fd` and `/proc/net/tcp{,6}`. Both ports, since
/// Linux gives one local port to several connections to different peers.
fn port_owners(processes: &[(String, u32)]) -> HashMap<(u16, u16), String> {
    let mut inode_owner = HashMap::new();
    for (name, pid) in processes {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in dir.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inode_owner.insert(inode.to_string(), name.clone());
                }
            }
        }
    }
    let mut owners = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |a: &str| {
                a.rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            };
            if let (Some(l), Some(r), Some(name)) = (port(f[1]), port(f[2]), inode_owner.get(f[9]))
            {
                owners.insert((l, r), name.clone());
            }
        }
    }
    owners
}

/// `MONITOR` on every primary for `secs`: client commands (not the ones
/// scripts run) per second per process of `processes` (by the client's
/// port), the rest as `other`.
async fn commands_per_process(
    nodes: &[String],
    processes: &[(String, u32)],
    secs: u64,
) -> anyhow::Result<Value> {
    let owners = Arc::new(port_owners(processes));
    let mut tasks = tokio::task::JoinSet::new();
    for addr in nodes {
        let (addr, owners) = (addr.clone(), owners.clone());
        let node_port: u16 = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .context("a node's port")?;
        tasks.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await?;
            s.write_all(b"MONITOR\r\n").await?;
            let mut r = BufReader::new(s);
            let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
            let stop = Instant::now() + Duration::from_secs(secs);
            let mut line = String::new();
            loop {
                line.clear();
                match tokio::time::timeout_at(stop, r.read_line(&mut line)).await {
                    Err(_) => break,
                    Ok(Ok(0)) => bail!("{addr}: MONITOR closed"),
                    Ok(r) => {
                        r?;
                    }
                }
                let Some((client, cmd)) = line.split_once(" [").and_then(|(_, rest)| {
                    let (inside, after) = rest.split_once("] ")?;
                    let client = inside.split_once(' ')?.1;
                    let cmd = after.split('"').nth(1)?.to_ascii_lowercase();
                    Some((client.to_string(), cmd))
                }) else {
                    continue;
                };
                if client == "lua" {
                    continue;
                }
                let port = client
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok());
                let who = port
                    .and_then(|p| owners.get(&(p, node_port)).cloned())
                    .unwrap_or_else(|| "other".into());
                *counts.entry(who).or_default().entry(cmd).or_default() += 1;
            }
            anyhow::Ok(counts)
        });
    }
    let mut all: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        for (who, cmds) in r?? {
            for (c, n) in cmds {
                *all.entry(who.clone()).or_default().entry(c).or_default() += n;
            }
        }
    }
    let per_s = |n: u64| (n as f64 / secs as f64 * 100.0).round() / 100.0;
    let mut out = serde_json::Map::new();
    for (name, _) in processes {
        all.entry(name.clone()).or_default();
    }
    for (who, cmds) in all {
        let total: u64 = cmds.values().sum();
        let by: serde_json::Map<String, Value> = cmds
            .into_iter()
            .map(|(c, n)| (c, json!(per_s(n))))
            .collect();
        out.insert(who, json!({"per_s": per_s(total), "by_command": by}));
    }
    Ok(json!({"window_s": secs, "processes": out}))
}

/// The gateways' expiry-lag histograms, summed: cumulative `(le_ms, count)`
/// and the total.
async fn lag(http: &reqwest::Client, urls: &[String]) -> anyhow::Result<(Vec<(f64, u64)>, u64)> {
    let mut sum: Vec<(f64, u64)> = Vec::new();
    let mut total = 0;
    for u in urls {
        let (b, c) = crate::ws::lag_buckets(http, u).await?;
        if sum.is_empty() {
            sum = b;
        } else {
            for (s, (_, n)) in sum.iter_mut().zip(b) {
                s.1 += n;
            }
        }
        total += c;
    }
    Ok((sum, total))
}

/// Failed switches by HTTP status (`0`: no answer), from `Client::must`'s
/// `"<path>: <status> <body>"`.
#[derive(Default)]
struct Errors(Mutex<BTreeMap<u16, u64>>);

impl Errors {
    fn add(&self, e: &anyhow::Error) {
        let text = format!("{e:#}");
        let status = text
            .split_once(": ")
            .and_then(|(_, r)| r.get(..3))
            .and_then(|d| d.parse().ok())
            .unwrap_or(0u16);
        let mut m = self.0.lock().expect("lock");
        if m.values().sum::<u64>() < 3 {
            eprintln!("loadgen: switch failed: {text}");
        }
        *m.entry(status).or_default() += 1;
    }

    fn json(&self) -> Value {
        let m = self.0.lock().expect("lock");
        json!({"total": m.values().sum::<u64>(),
            "by_status": m.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()})
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

fn hist_json(h: &Histogram<u64>) -> Value {
    json!({"count": h.len(), "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)), "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max())})
}

pub async fn run(args: &Args, _c: Arc<Client>, run: u64) -> anyhow::Result<Value> {
    let redis_url = args
        .redis_url
        .clone()
        .context("--redis-url redis+cluster://… is required")?;
    let gateways = split(
        args.gateway
            .as_deref()
            .context("--gateway ws://a,ws://b,… is required")?,
    );
    let metrics = split(
        args.gateway_metrics
            .as_deref()
            .context("--gateway-metrics (the gateways' internal /metrics URLs) is required")?,
    );
    if metrics.len() != gateways.len() {
        bail!("--gateway-metrics must list one URL per gateway");
    }
    let processes: Vec<(String, u32)> = args
        .process
        .iter()
        .map(|p| {
            let (n, pid) = p.split_once('=').context("--process name=pid")?;
            Ok((n.to_string(), pid.parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut processes = processes;
    processes.push(("loadgen".into(), std::process::id()));
    let http = reqwest::Client::new();
    let rest: Vec<Arc<Client>> = gateways
        .iter()
        .map(|g| {
            Ok(Arc::new(Client {
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(args.concurrency)
                    .timeout(Duration::from_secs(10))
                    .build()?,
                base: g.replacen("ws://", "http://", 1),
                token: args.token.clone(),
            }))
        })
        .collect::<anyhow::Result<_>>()?;

    let primaries = primaries(&redis_url).await?;
    let mut nodes = Nodes::connect(primaries.clone()).await?;
    let total = args.sessions();
    let expiring = ((total as f64) * args.expiring_fraction).ceil() as usize;
    let long = total - expiring;
    let watched = (args.watchers / 2).min(long);

    // 1. Memory per session.
    let mem0 = nodes.used_memory().await?;
    let t = Instant::now();
    let ids = sessions(args, &rest[0], run, long, args.concurrency, |_| 86_400_000).await?;
    let create_s = t.elapsed().as_secs_f64();
    eprintln!("loadgen: {long} sessions created and started in {create_s:.1}s");
    // The consumer acknowledges, then trims; wait for the streams to empty.
    let drain_until = Instant::now() + Duration::from_secs(120);
    let (len, stream_bytes) = loop {
        let (len, bytes) = nodes.streams(args.shards).await?;
        if len < 100 || Instant::now() > drain_until {
            break (len, bytes);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mem1 = nodes.used_memory().await?;
    let mut record_bytes = 0u64;
    let sample = ids.len().min(1000);
    for id in ids.iter().step_by((ids.len() / sample).max(1)).take(sample) {
        let k = keys::SessionKeys::new(id, args.shards).state;
        record_bytes += nodes
            .memory_usage(&k)
            .await?
            .context("a sampled record is missing")?;
    }
    let (mut zset_bytes, mut zset_members) = (0u64, 0u64);
    for s in 0..args.shards {
        let k = keys::deadlines(s);
        zset_bytes += nodes.memory_usage(&k).await?.unwrap_or(0);
        zset_members += nodes.on_owner::<u64>(redis::cmd("ZCARD").arg(&k)).await?;
    }
    let memory = json!({
        "sessions": long, "used_memory_before": mem0, "used_memory_after": mem1,
        "audit_entries_left": len, "audit_stream_bytes": stream_bytes,
        "bytes_per_session_info_delta": ((mem1 as f64 - mem0 as f64) / long as f64).round(),
        "bytes_per_session_without_streams": ((mem1 as f64 - mem0 as f64 - stream_bytes as f64) / long as f64).round(),
        "record_memory_usage_avg": (record_bytes as f64 / sample as f64).round(),
        "deadline_zset_bytes_per_member": (zset_bytes as f64 / zset_members.max(1) as f64).round(),
    });
    eprintln!("loadgen: memory {memory}");

    // 2. Watchers: two per watched session, on two gateways.
    let sent: Sent = Default::default();
    let phase = Arc::new(AtomicU8::new(0));
    // Fan-out per phase: 0 before switching, 1 the switch phase, 2 the
    // maximum, 3 the switch phase while MONITOR counts commands (which
    // costs the primaries and is reported apart).
    let hists: Arc<[Mutex<Histogram<u64>>; 4]> = Arc::new([
        Mutex::new(new_hist()),
        Mutex::new(new_hist()),
        Mutex::new(new_hist()),
        Mutex::new(new_hist()),
    ]);
    let mut readers = tokio::task::JoinSet::new();
    let connected = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let g = gateways.len();
    for s in 0..watched {
        for k in 0..2 {
            let gw = &gateways[(s + k) % g];
            let url = format!("{gw}/ws?sessionId={}", ids[s]);
            let (sent, phase, hists, connected) = (
                sent.clone(),
                phase.clone(),
                hists.clone(),
                connected.clone(),
            );
            let ws = tokio_tungstenite::connect_async(url)
                .await
                .with_context(|| format!("watcher {s}/{k} on {gw}"))?
                .0;
            connected.fetch_add(1, Ordering::Relaxed);
            readers.spawn(crate::ws::watch(ws, move |version, now| {
                let now = Instant::from_std(now);
                let at = sent.lock().expect("lock").get(&(s, version)).copied();
                if let Some(at) = at {
                    let p = phase.load(Ordering::Relaxed) as usize;
                    let _ = hists[p.min(3)]
                        .lock()
                        .expect("lock")
                        .record((now - at).as_micros().max(1) as u64);
                }
            }));
        }
    }
    let sockets = connected.load(Ordering::Relaxed);
    eprintln!(
        "loadgen: {sockets} watchers connected in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3. Commands at rest.
    let at_rest = commands_per_process(&primaries, &processes, args.window_secs).await?;
    eprintln!("loadgen: at rest {at_rest}");

    // 4. Expiring sessions, then switches at --rate.
    let (lag0, count0) = lag(&http, &metrics).await?;
    let phase_ms = args.duration_secs * 1000;
    let head_ms = 10_000u64;
    let spread_ms = phase_ms * 8 / 10;
    let t = Instant::now();
    let exp_ids = sessions(
        args,
        &rest[0],
        run ^ 0x5ca1e,
        expiring,
        args.concurrency,
        |i| head_ms + spread_ms * i as u64 / expiring.max(1) as u64,
    )
    .await?;
    eprintln!(
        "loadgen: {} expiring sessions created in {:.1}s (banks {}–{} s)",
        exp_ids.len(),
        t.elapsed().as_secs_f64(),
        head_ms / 1000,
        (head_ms + spread_ms) / 1000
    );
    let mut versions = vec![2u64; watched];
    let per_second: Arc<Vec<AtomicU64>> = Arc::new(
        (0..args.duration_secs + 60)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let errors = Arc::new(Errors::default());
    phase.store(1, Ordering::Relaxed);
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.duration_secs);
    let monitor = {
        let (p, procs, w) = (primaries.clone(), processes.clone(), args.window_secs);
        let delay = Duration::from_secs(args.duration_secs.saturating_sub(w) / 2);
        let phase = phase.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = phase.compare_exchange(1, 3, Ordering::Relaxed, Ordering::Relaxed);
            let r = commands_per_process(&p, &procs, w).await;
            let _ = phase.compare_exchange(3, 1, Ordering::Relaxed, Ordering::Relaxed);
            r
        })
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    let (mut switches, mut i) = (0u64, 0usize);
    while Instant::now() < stop_at {
        tick.tick().await;
        let s = i % watched;
        i += 1;
        versions[s] += 1;
        sent.lock()
            .expect("lock")
            .insert((s, versions[s]), Instant::now());
        let c = rest[s % rest.len()].clone();
        let path = format!("/v1/sessions/{}/switch", ids[s]);
        let (per_second, errors) = (per_second.clone(), errors.clone());
        inflight.spawn(async move {
            match c.must(reqwest::Method::POST, &path, None).await {
                Ok(()) => {
                    let sec = started.elapsed().as_secs() as usize;
                    if let Some(n) = per_second.get(sec) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => errors.add(&e),
            }
        });
        switches += 1;
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let secs: Vec<u64> = per_second[..args.duration_secs as usize]
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect();
    let under_load = monitor.await??;
    eprintln!("loadgen: under load {under_load}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 5. Every expiring session flagged?
    let give_up = started + Duration::from_millis(head_ms + spread_ms + 60_000);
    let (lag1, count1) = loop {
        let (b, c) = lag(&http, &metrics).await?;
        if c - count0 >= expiring as u64 || Instant::now() > give_up {
            break (b, c);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let flagged = count1 - count0;
    let (delta, p) = crate::ws::lag_between(&lag0, &lag1, flagged);
    let expiry = json!({"expiring_sessions": expiring, "flagged": flagged,
        "lag_p50_ms_at_most": p(0.5), "lag_p99_ms_at_most": p(0.99), "buckets_ms": delta});

    // 6. The maximum: closed loop.
    phase.store(2, Ordering::Relaxed);
    let versions = Arc::new(Mutex::new(versions));
    let max_done = Arc::new(AtomicU64::new(0));
    let max_errors = Arc::new(Errors::default());
    let t = Instant::now();
    let max_stop = t + Duration::from_secs(args.max_secs);
    let ids = Arc::new(ids);
    let mut workers = tokio::task::JoinSet::new();
    let concurrency = args.concurrency.min(watched);
    for w in 0..concurrency {
        let (ids, versions, sent, rest, done, errors) = (
            ids.clone(),
            versions.clone(),
            sent.clone(),
            rest.clone(),
            max_done.clone(),
            max_errors.clone(),
        );
        workers.spawn(async move {
            // Worker w owns the watched sessions w, w + C, …: one switch
            // in flight per session, so versions stay exact.
            let mut s = w % watched;
            while Instant::now() < max_stop {
                let s_now = s;
                s += concurrency;
                if s >= watched {
                    s = w % watched;
                }
                let v = {
                    let mut v = versions.lock().expect("lock");
                    v[s_now] += 1;
                    v[s_now]
                };
                sent.lock()
                    .expect("lock")
                    .insert((s_now, v), Instant::now());
                let c = &rest[s_now % rest.len()];
                match c
                    .must(
                        reqwest::Method::POST,
                        &format!("/v1/sessions/{}/switch", ids[s_now]),
                        None,
                    )
                    .await
                {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.add(&e),
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let max_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    readers.abort_all();
    let max_done = max_done.load(Ordering::Relaxed);

    let min_s = secs.iter().copied().min().unwrap_or(0);
    let fixed = json!({
        "target_per_s": args.rate, "switches": switches, "seconds": elapsed,
        "per_s": (switches as f64 / elapsed).round(), "min_per_s_in_any_second": min_s,
        "max_per_s_in_any_second": secs.iter().copied().max().unwrap_or(0),
        "fanout": hist_json(&hists[1].lock().expect("lock")),
        "fanout_while_monitored": hist_json(&hists[3].lock().expect("lock")),
        "expected_deliveries": switches * 2, "errors": errors.json(),
    });
    let max = json!({
        "concurrency": concurrency, "switches": max_done, "seconds": max_s,
        "per_s": (max_done as f64 / max_s).round(),
        "fanout": hist_json(&hists[2].lock().expect("lock")), "errors": max_errors.json(),
    });
    let complete = flagged >= expiring as u64 && min_s >= args.rate * 9 / 10;
    Ok(json!({
        "mode": "scale", "primaries": primaries, "gateways": gateways,
        "sessions": total, "long_sessions": long, "expiring_sessions": expiring,
        "watched_sessions": watched, "watchers": sockets, "create_s": create_s,
        "memory": memory, "switch_phase": fixed, "max_phase": max, "expiry": expiry,
        "redis_commands": {"at_rest": at_rest, "under_load": under_load},
        "complete": complete,
    }))
}
