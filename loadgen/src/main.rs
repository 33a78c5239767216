//! `loadgen`: creates N sessions through the REST API of any SyncKairos
//! deployment, starts them, then runs a closed loop of `switch` and `get`
//! requests at a given concurrency for a given time and prints one JSON
//! object with throughput and latency percentiles per operation.
//!
//! ```text
//! loadgen --base-url http://127.0.0.1:8787 --sessions 1000 --concurrency 16 --duration-secs 20
//! ```
//!
//! The other modes (`--mode`) measure the fan-out gateway: see `ws.rs` and
//! `storm.rs`.

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod scale;
mod storm;
mod ws;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Closed-loop REST requests (`--mix`).
    Rest,
    /// Switches at `--rate` while `--clients-per-session` WebSocket clients
    /// watch each session on `--gateway`: fan-out latency.
    WsFanout,
    /// `--connections` idle WebSockets on `--gateway`: its RSS per connection.
    WsIdle,
    /// `--sessions` running clocks that all run out: the gateway's expiry lag.
    Expiry,
    /// `--clients` WebSockets over `--sessions` (default 100) sessions all
    /// connecting at once, as after a gateway restart: the time until every
    /// one holds its `STATE_SYNC` (see `--batch-size`, `--batch-wait`).
    ReconnectStorm,
    /// The scale run on a Redis Cluster (`--redis-url redis+cluster://…`)
    /// behind several native servers (`--gateway ws://a,ws://b,…`): Redis
    /// bytes per session, watchers over every gateway, switches at `--rate`
    /// while `--expiring-fraction` of the sessions run out, then the
    /// maximum rate; Redis commands per process at rest and under load. See
    /// `scale.rs`.
    Scale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mix {
    /// Only `POST …/switch`.
    Switch,
    /// Only `GET /v1/sessions/:id`.
    Get,
    /// Alternate switch and get.
    Both,
}

/// The time control of every session a run creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Control {
    /// No `time_control`: Fischer with `increment_ms` 0, the body of every
    /// run before time controls.
    Fischer,
    /// `{"type":"bronstein","delay_ms":2000}`.
    Bronstein,
    /// `{"type":"byoyomi","periods":5,"period_ms":30000}`.
    Byoyomi,
}

impl Control {
    /// The create body's `time_control`, or `None` for today's body.
    pub(crate) fn body(self) -> Option<serde_json::Value> {
        match self {
            Control::Fischer => None,
            Control::Bronstein => Some(json!({"type": "bronstein", "delay_ms": 2000})),
            Control::Byoyomi => Some(json!({"type": "byoyomi", "periods": 5, "period_ms": 30000})),
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "Closed-loop load generator for the SyncKairos REST API")]
struct Args {
    /// Base URL of the API (no trailing slash).
    #[arg(
        long,
        env = "LOADGEN_BASE_URL",
        default_value = "http://127.0.0.1:8787"
    )]
    base_url: String,
    /// Sessions to create (each a 2-player chess clock with 24 h banks);
    /// default 1000 (100 in reconnect-storm). Worker w uses sessions w, w+C,
    /// w+2C…, so keep sessions/concurrency × the per-session switch limit
    /// above the rate you want.
    #[arg(long, env = "LOADGEN_SESSIONS")]
    sessions: Option<usize>,
    /// Requests in flight (closed loop: each worker waits for its reply).
    #[arg(long, env = "LOADGEN_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Measured time.
    #[arg(long, env = "LOADGEN_DURATION_SECS", default_value_t = 10)]
    duration_secs: u64,
    /// Unmeasured warm-up before it.
    #[arg(long, env = "LOADGEN_WARMUP_SECS", default_value_t = 1)]
    warmup_secs: u64,
    /// Which requests.
    #[arg(long, value_enum, default_value_t = Mix::Switch)]
    mix: Mix,
    /// The time control of every session created, in every mode (each
    /// switch then runs it; expiry: a byoyomi clock falls only after its
    /// periods, 150 s later).
    #[arg(long, value_enum, default_value_t = Control::Fischer)]
    control: Control,
    /// `Authorization: Bearer <token>` on every request (an admin or host token).
    #[arg(long, env = "LOADGEN_TOKEN")]
    token: Option<String>,
    /// Delete the sessions at the end (rest mode).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cleanup: bool,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Rest)]
    mode: Mode,
    /// The gateway (`ws://host:port`) for the WebSocket modes.
    #[arg(long)]
    gateway: Option<String>,
    /// The gateway's `/metrics` URL on its internal port (`METRICS_LISTEN`,
    /// default 9091: `http://host:9091/metrics`), for the expiry mode.
    #[arg(long)]
    gateway_metrics: Option<String>,
    /// The gateway's pid, whose RSS ws-idle and reconnect-storm read
    /// (reconnect-storm: and its CPU time).
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// WebSocket watchers per session (ws-fanout).
    #[arg(long, default_value_t = 10)]
    clients_per_session: usize,
    /// Switches per second, open loop (ws-fanout).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Idle connections (ws-idle).
    #[arg(long, default_value_t = 15_000)]
    connections: usize,
    /// Create the sessions straight in this Redis through the engine instead
    /// of through `--base-url` (a gateway without a REST API in front of it).
    #[arg(long, env = "LOADGEN_REDIS_URL")]
    redis_url: Option<String>,
    /// The deployment's `SHARDS` (key layout), for `--redis-url`.
    #[arg(long, env = "SHARDS", default_value_t = synckairos_core::keys::DEFAULT_SHARDS)]
    shards: u16,
    /// WebSocket clients (reconnect-storm); client i watches session i mod
    /// `--sessions`.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Connection attempts started together (reconnect-storm).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// When the next batch starts (reconnect-storm).
    #[arg(long, value_enum, default_value_t = storm::BatchWait::Issued)]
    batch_wait: storm::BatchWait,
    /// Reconnect-storm gives up after this long, reports what it got and
    /// exits non-zero.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// The share of `--sessions` whose banks run out during the switch
    /// phase (scale).
    #[arg(long, default_value_t = 0.12)]
    expiring_fraction: f64,
    /// WebSocket watchers, two per watched session (scale).
    #[arg(long, default_value_t = 10_200)]
    watchers: usize,
    /// The `MONITOR` windows that count Redis commands per process (scale).
    #[arg(long, default_value_t = 10)]
    window_secs: u64,
    /// The closed-loop phase that finds the maximum switch rate (scale).
    #[arg(long, default_value_t = 15)]
    max_secs: u64,
    /// A process whose Redis commands are counted, `name=pid` (scale;
    /// repeatable).
    #[arg(long)]
    process: Vec<String>,
}

impl Args {
    /// `--sessions`, or the mode's default.
    fn sessions(&self) -> usize {
        self.sessions.unwrap_or(match self.mode {
            Mode::ReconnectStorm => 100,
            Mode::Scale => 50_000,
            _ => 1000,
        })
    }
}

fn uuid(prefix: u64, n: u64) -> String {
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        prefix >> 32,
        prefix & 0xffff,
        n
    )
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn must(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.with_context(|| format!("request {path}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("{path}: {status} {}", resp.text().await.unwrap_or_default());
        }
        Ok(())
    }
}

#[derive(Default)]
struct Stats {
    hist: Option<Histogram<u64>>,
    errors: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

impl Stats {
    fn record(&mut self, us: u64, status: Option<u16>) {
        let h = self
            .hist
            .get_or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"));
        match status {
            Some(s) if (200..300).contains(&s) => {
                let _ = h.record(us.max(1));
            }
            Some(s) => {
                self.errors += 1;
                *self.statuses.entry(s).or_default() += 1;
            }
            None => {
                self.errors += 1;
                *self.statuses.entry(0).or_default() += 1;
            }
        }
    }

    fn merge(&mut self, other: Stats) {
        if let Some(h) = other.hist {
            match &mut self.hist {
                Some(mine) => mine.add(&h).expect("same bounds"),
                None => self.hist = Some(h),
            }
        }
        self.errors += other.errors;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
    }

    fn report(&self, seconds: f64) -> serde_json::Value {
        let ms = |us: u64| us as f64 / 1000.0;
        match &self.hist {
            Some(h) => json!({
                "ok": h.len(), "errors": self.errors, "error_statuses": self.statuses,
                "per_s": (h.len() as f64 / seconds).round(),
                "p50_ms": ms(h.value_at_quantile(0.50)), "p90_ms": ms(h.value_at_quantile(0.90)),
                "p99_ms": ms(h.value_at_quantile(0.99)), "max_ms": ms(h.max()),
            }),
            None => json!({"ok": 0, "errors": self.errors, "error_statuses": self.statuses}),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.sessions() == 0 || args.concurrency == 0 {
        bail!("--sessions and --concurrency must be at least 1");
    }
    // Thousands of sockets: as many descriptors as the hard limit allows.
    let nofile = storm::raise_nofile_limit()?;
    // TLS is rustls; when another crate of the same build enables reqwest's
    // rustls without a crypto provider, the client needs the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .timeout(Duration::from_secs(10))
            .build()?,
        base: args.base_url.trim_end_matches('/').to_string(),
        token: args.token.clone(),
    });
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let report = match args.mode {
        Mode::Rest => None,
        Mode::WsFanout => Some(ws::fanout(&args, client.clone(), run).await?),
        Mode::WsIdle => Some(ws::idle(&args, client.clone(), run).await?),
        Mode::Expiry => Some(ws::expiry(&args, client.clone(), run).await?),
        Mode::ReconnectStorm => Some(storm::run(&args, client.clone(), run, nofile).await?),
        Mode::Scale => Some(scale::run(&args, client.clone(), run).await?),
    };
    if let Some(r) = report {
        println!("{r}");
        if r["complete"] == false {
            bail!("incomplete: see the report");
        }
        return Ok(());
    }
    let setup = Instant::now();
    let ids = ws::sessions(
        &args,
        &client,
        run,
        args.sessions(),
        args.concurrency,
        |_| 86_400_000,
    )
    .await?;
    eprintln!(
        "loadgen: {} sessions created and started in {:.2}s",
        ids.len(),
        setup.elapsed().as_secs_f64()
    );

    let ids = Arc::new(ids);
    let warm_until = Instant::now() + Duration::from_secs(args.warmup_secs);
    let stop_at = warm_until + Duration::from_secs(args.duration_secs);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (c, ids, mix, concurrency) = (client.clone(), ids.clone(), args.mix, args.concurrency);
        workers.spawn(async move {
            let (mut switch, mut get) = (Stats::default(), Stats::default());
            let mut i = w;
            let mut n = 0u64;
            while Instant::now() < stop_at {
                let id = &ids[i % ids.len()];
                i += concurrency;
                let do_switch = match mix {
                    Mix::Switch => true,
                    Mix::Get => false,
                    Mix::Both => n.is_multiple_of(2),
                };
                n += 1;
                let started = Instant::now();
                let result = if do_switch {
                    c.req(reqwest::Method::POST, &format!("/v1/sessions/{id}/switch"))
                        .header("content-type", "application/json")
                        .body("{}")
                        .send()
                        .await
                } else {
                    c.req(reqwest::Method::GET, &format!("/v1/sessions/{id}"))
                        .send()
                        .await
                };
                let status = match result {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        Some(s)
                    }
                    Err(_) => None,
                };
                if started >= warm_until {
                    let us = started.elapsed().as_micros() as u64;
                    if do_switch { &mut switch } else { &mut get }.record(us, status);
                }
            }
            (switch, get)
        });
    }
    let (mut switch, mut get) = (Stats::default(), Stats::default());
    while let Some(r) = workers.join_next().await {
        let (s, g) = r?;
        switch.merge(s);
        get.merge(g);
    }
    let seconds = args.duration_secs as f64;
    println!(
        "{}",
        json!({
            "base_url": args.base_url, "sessions": ids.len(), "concurrency": args.concurrency,
            "duration_s": args.duration_secs, "mix": format!("{:?}", args.mix).to_lowercase(),
            "control": format!("{:?}", args.control).to_lowercase(),
            "switch": switch.report(seconds), "get": get.report(seconds),
        })
    );
    if args.cleanup {
        for id in ids.iter() {
            let _ = client
                .req(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"))
                .send()
                .await;
        }
    }
    Ok(())
}
