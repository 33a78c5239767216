//! The WebSocket modes (`--mode ws-fanout | ws-idle | expiry`), against a
//! gateway (`--gateway ws://…`) in front of the same Redis as `--base-url`
//! (or `--redis-url`), and the helpers `reconnect-storm` shares with them.

use crate::{uuid, Args, Client};
use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::{Command, Request};
use synckairos_engine::{fixtures, Engine};

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(gateway: &str, sid: &str, token: Option<&str>) -> anyhow::Result<Ws> {
    let mut url = format!("{gateway}/ws?sessionId={sid}");
    if let Some(t) = token {
        url.push_str(&format!("&token={t}"));
    }
    Ok(tokio_tungstenite::connect_async(url)
        .await
        .context("websocket connect")?
        .0)
}

/// Where sessions are made: the REST API (`--base-url`), or, with
/// `--redis-url`, straight in Redis through the engine (for a gateway with no
/// REST API in front of its Redis).
/// Each created session gets `control`'s `time_control` (none for fischer).
struct Creator {
    via: Via,
    control: Option<Value>,
}

enum Via {
    Rest(Arc<Client>),
    Redis(Engine),
}

impl Creator {
    async fn new(args: &Args, c: &Arc<Client>) -> anyhow::Result<Creator> {
        let control = args.control.body();
        let Some(url) = &args.redis_url else {
            return Ok(Creator {
                via: Via::Rest(c.clone()),
                control,
            });
        };
        let settings = Settings {
            shards: args.shards,
            ..Settings::default()
        };
        let engine = Engine::connect(url, settings)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Creator {
            via: Via::Redis(engine),
            control,
        })
    }

    /// Creates `id`, a 2-player chess clock with `bank` ms each (under the
    /// run's `--control`), and starts it.
    async fn create_started(&self, id: &str, run: u64, bank: u64) -> anyhow::Result<()> {
        match &self.via {
            Via::Rest(c) => {
                let players: Vec<_> = (0..2)
                    .map(|p| json!({"participant_id": uuid(run ^ 0xffff, p), "participant_index": p, "total_time_ms": bank}))
                    .collect();
                let mut body = json!({"session_id": id, "sync_mode": "per_participant",
                    "total_time_ms": bank, "participants": players});
                if let Some(tc) = &self.control {
                    body["time_control"] = tc.clone();
                }
                c.must(reqwest::Method::POST, "/v1/sessions", Some(body))
                    .await?;
                let start = format!("/v1/sessions/{id}/start");
                c.must(reqwest::Method::POST, &start, None).await
            }
            Via::Redis(engine) => {
                let mut body = fixtures::body(id, "per_participant", 2, bank as i64);
                if let Some(tc) = &self.control {
                    body["time_control"] = tc.clone();
                }
                let create = fixtures::create(&body)
                    .map_err(|issues| anyhow!("create body rejected: {issues:?}"))?;
                for req in [create, Request::new(id, Command::Start)] {
                    let name = req.command.name();
                    let reply = engine
                        .execute(&req, &CallOptions::default())
                        .await
                        .with_context(|| format!("{name} {id}"))?;
                    if let Err(e) = reply.result {
                        bail!("{name} {id} refused: {} ({e})", e.code());
                    }
                }
                Ok(())
            }
        }
    }
}

/// Creates and starts `n` chess clocks, `concurrency` at a time, through the
/// REST API or (`--redis-url`) the engine; `bank_ms(i)` is session i's bank.
pub(crate) async fn sessions(
    args: &Args,
    c: &Arc<Client>,
    run: u64,
    n: usize,
    concurrency: usize,
    bank_ms: impl Fn(usize) -> u64,
) -> anyhow::Result<Vec<String>> {
    let creator = Arc::new(Creator::new(args, c).await?);
    let ids: Vec<String> = (0..n as u64).map(|i| uuid(run, i)).collect();
    for (k, chunk) in ids.chunks(concurrency).enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        for (j, id) in chunk.iter().enumerate() {
            let (creator, id, bank) = (creator.clone(), id.clone(), bank_ms(k * concurrency + j));
            tasks.spawn(async move { creator.create_started(&id, run, bank).await });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
    }
    Ok(ids)
}

pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the gateway's /proc status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

pub(crate) fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

/// `ws-idle`: `--connections` idle sockets on one session; the gateway's RSS
/// before and after, per connection.
pub async fn idle(args: &Args, c: Arc<Client>, run: u64) -> anyhow::Result<Value> {
    let gateway = args.gateway.as_deref().context("--gateway is required")?;
    let pid = args
        .gateway_pid
        .context("--gateway-pid is required (its RSS is measured)")?;
    let ids = sessions(args, &c, run, 1, 1, |_| 86_400_000).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let mut sockets = Vec::with_capacity(args.connections);
    let started = Instant::now();
    for i in 0..args.connections {
        let mut ws = connect(gateway, &ids[0], args.token.as_deref())
            .await
            .with_context(|| format!("connection {i}"))?;
        // CONNECTED and STATE_SYNC, then idle.
        for _ in 0..2 {
            ws.next().await.context("a first message")??;
        }
        sockets.push(ws);
        if i % 1000 == 999 {
            tokio::time::sleep(Duration::from_millis(20)).await; // within the per-address rate
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    Ok(
        json!({"mode": "ws-idle", "connections": sockets.len(), "connect_s": started.elapsed().as_secs_f64(),
        "gateway_rss_kib_before": before, "gateway_rss_kib_after": after,
        "rss_kib_per_connection": (after.saturating_sub(before)) as f64 / sockets.len() as f64}),
    )
}

/// Reads `ws` until it ends, calling `on_update(version, received at)` for
/// each `STATE_UPDATE`.
pub(crate) async fn watch<Ws2, F>(mut ws: Ws2, on_update: F)
where
    Ws2: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
    F: Fn(u64, Instant),
{
    while let Some(Ok(m)) = ws.next().await {
        let now = Instant::now();
        let tokio_tungstenite::tungstenite::Message::Text(t) = m else {
            continue;
        };
        if !t.contains("\"STATE_UPDATE\"") {
            continue;
        }
        // The first "version" is the state's (the envelope has none):
        // cheaper than parsing 10,000 sockets' JSON.
        let version = t
            .split_once("\"version\":")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0u64);
        on_update(version, now);
    }
}

/// `ws-fanout`: `--sessions` running clocks, `--clients-per-session`
/// watchers each, switches at `--rate` per second for `--duration-secs`;
/// latency from sending each switch to each watcher's receipt of it.
pub async fn fanout(args: &Args, c: Arc<Client>, run: u64) -> anyhow::Result<Value> {
    let gateway = args.gateway.clone().context("--gateway is required")?;
    let ids = sessions(args, &c, run, args.sessions(), args.concurrency, |_| {
        86_400_000
    })
    .await?;
    // (session index, version) -> when its switch was sent.
    let sent: Arc<Mutex<HashMap<(usize, u64), Instant>>> = Default::default();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for (s, id) in ids.iter().enumerate() {
        for _ in 0..args.clients_per_session {
            let ws = connect(&gateway, id, args.token.as_deref()).await?;
            let (sent, hist, received) = (sent.clone(), hist.clone(), received.clone());
            readers.spawn(watch(ws, move |version, now| {
                let at = sent.lock().expect("lock").get(&(s, version)).copied();
                if let Some(at) = at {
                    let _ = hist
                        .lock()
                        .expect("lock")
                        .record((now - at).as_micros().max(1) as u64);
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        if s % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(60)).await; // within the per-address rate
        }
    }
    eprintln!(
        "loadgen: {} sessions x {} watchers connected",
        ids.len(),
        args.clients_per_session
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut versions = vec![2u64; ids.len()];
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let stop_at = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut inflight = tokio::task::JoinSet::new();
    let (mut switches, mut i) = (0u64, 0usize);
    while Instant::now() < stop_at {
        tick.tick().await;
        let s = i % ids.len();
        i += 1;
        versions[s] += 1;
        sent.lock()
            .expect("lock")
            .insert((s, versions[s]), Instant::now());
        let (c, path) = (c.clone(), format!("/v1/sessions/{}/switch", ids[s]));
        inflight.spawn(async move { c.must(reqwest::Method::POST, &path, None).await });
        switches += 1;
        while let Some(r) = inflight.try_join_next() {
            r??;
        }
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    readers.abort_all();
    let h = hist.lock().expect("lock");
    let expected = switches * args.clients_per_session as u64;
    Ok(
        json!({"mode": "ws-fanout", "sessions": ids.len(), "clients_per_session": args.clients_per_session,
        "switches": switches, "switches_per_s": switches as f64 / args.duration_secs as f64,
        "deliveries": received.load(std::sync::atomic::Ordering::Relaxed), "expected_deliveries": expected,
        "deliveries_per_s": h.len() as f64 / args.duration_secs as f64,
        "p50_ms": ms(h.value_at_quantile(0.5)), "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)), "max_ms": ms(h.max())}),
    )
}

/// The gateway's expiry-lag histogram: cumulative `(le_ms, count)` and the
/// total.
pub(crate) async fn lag_buckets(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<(Vec<(f64, u64)>, u64)> {
    let text = http.get(url).send().await?.text().await?;
    let (mut buckets, mut count) = (Vec::new(), 0u64);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("synckairos_gateway_expiry_lag_seconds_bucket{le=\"")
        {
            let (le, n) = rest.split_once("\"} ").context("bucket line")?;
            let n: u64 = n.trim().parse()?;
            if le == "+Inf" {
                count = n;
            } else {
                buckets.push((le.parse::<f64>()? * 1000.0, n));
            }
        }
    }
    Ok((buckets, count))
}

/// The expiry-lag histogram between two readings: its buckets' counts, and
/// the upper bound of the bucket holding quantile `q` of `flagged` (the
/// histogram gives no finer answer).
pub(crate) fn lag_between(
    before: &[(f64, u64)],
    after: &[(f64, u64)],
    flagged: u64,
) -> (Vec<(f64, u64)>, impl Fn(f64) -> Option<f64>) {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let at = delta.clone();
    let p = move |q: f64| {
        at.iter()
            .find(|(_, c)| *c as f64 >= q * flagged as f64)
            .map(|(le, _)| *le)
    };
    (delta, p)
}

/// `expiry`: `--sessions` running clocks whose deadlines fall over about
/// `--duration-secs` after a 10 s head start; the gateway's expiry lag (its
/// `/metrics` histogram on its internal port, before and after) for exactly
/// those.
pub async fn expiry(args: &Args, c: Arc<Client>, run: u64) -> anyhow::Result<Value> {
    let url = args
        .gateway_metrics
        .clone()
        .context("--gateway-metrics is required (the internal port: http://host:9091/metrics)")?;
    // TLS is rustls; when another crate of the same build enables reqwest's
    // rustls without a crypto provider, the client needs the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let (before, count0) = lag_buckets(&http, &url).await?;
    let spread = args.duration_secs.max(1) * 1000;
    let n = args.sessions();
    let started = Instant::now();
    let ids = sessions(args, &c, run, n, args.concurrency, |i| {
        10_000 + spread * i as u64 / n as u64
    })
    .await?;
    eprintln!(
        "loadgen: {} running sessions in {:.1}s; waiting for their deadlines",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    let give_up = Instant::now() + Duration::from_millis(10_000 + spread + 30_000);
    let (after, count) = loop {
        let (b, c) = lag_buckets(&http, &url).await?;
        if c - count0 >= n as u64 || Instant::now() > give_up {
            break (b, c);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let flagged = count - count0;
    if flagged < n as u64 {
        bail!("only {flagged} of {n} sessions were flagged expired");
    }
    let (delta, p) = lag_between(&before, &after, flagged);
    Ok(
        json!({"mode": "expiry", "running_sessions": n, "expired": flagged,
        "lag_p50_ms_at_most": p(0.5), "lag_p99_ms_at_most": p(0.99), "buckets_ms": delta}),
    )
}
