//! # synckairos-edge-exporter
//!
//! The edge Worker writes one Workers Analytics Engine data point per
//! request (`edge-worker/src/observe.rs`); Prometheus cannot read them.
//! This service queries the Analytics Engine SQL API every
//! `SCRAPE_INTERVAL_SECONDS` for the window since its last counted one,
//! ending `LAG_SECONDS` ago (the data arrives late), and adds what it reads
//! to monotonically increasing counters on `/metrics`:
//! `synckairos_edge_requests_total{route,code}` and the histogram
//! `synckairos_edge_duration_seconds{route}`, the shape of the native
//! server's series, so the burn-rate rules of the native SLOs apply to the
//! edge as written (docs/RUNBOOK.md, "The edge's SLOs").
//!
//! Each second of data is counted once: the windows follow each other, and
//! a failed query leaves its window's start where it was, so the next query
//! covers it (up to `MAX_WINDOW_SECONDS` back). A restart starts a fresh set
//! of counters (Prometheus reads that as a reset) from one interval before
//! the lagged now: what the process had not counted yet is not counted.
#![deny(missing_docs)]

pub mod config;
pub mod metrics;
pub mod query;

pub use config::Config;

use metrics::{Metrics, QueryResult};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use synckairos_audit_consumer::ops::{self, Endpoints};

/// The `user-agent` of every query.
pub const USER_AGENT: &str = concat!("SyncKairos-EdgeExporter/", env!("CARGO_PKG_VERSION"));

/// The ops endpoints' view of the exporter.
#[derive(Clone)]
struct Ops(Arc<Metrics>);

impl Endpoints for Ops {
    async fn readiness(&self) -> Result<(), &'static str> {
        if self.0.ready() {
            Ok(())
        } else {
            Err("no query has succeeded yet")
        }
    }

    async fn render(&self) -> String {
        self.0.render()
    }

    fn ready_metric(&self) -> &'static str {
        "synckairos_edge_exporter_ready"
    }

    fn ready_help(&self) -> &'static str {
        "1 when /ready answers ready (a query to the Analytics Engine SQL API has succeeded since the start), 0 when not."
    }
}

/// Why a query failed.
#[derive(Debug)]
pub struct QueryError {
    /// How (the label it is counted under).
    pub kind: QueryResult,
    /// What happened, for the log (never the token).
    pub detail: String,
}

/// The HTTP client of the SQL API: its timeout, no redirects (the token
/// goes to the configured host only), rustls with the webpki roots.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let tls = synckairos_audit_consumer::service::webpki_tls_config()?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(USER_AGENT)
        .build()?)
}

/// Sends `sql` to the SQL API at `url` with `token` and reads the rows.
pub async fn query(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    sql: String,
) -> Result<Vec<query::Row>, QueryError> {
    let unreachable = |e: reqwest::Error| QueryError {
        kind: QueryResult::Unreachable,
        detail: chain(&e),
    };
    let response = client
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(sql)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(QueryError {
            kind: QueryResult::Refused,
            detail: format!("status {}: {}", status.as_u16(), excerpt(&body)),
        });
    }
    query::parse(&body).map_err(|e| QueryError {
        kind: QueryResult::Invalid,
        detail: format!("{e}; the answer began: {}", excerpt(&body)),
    })
}

fn excerpt(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    one_line.trim().to_string()
}

use synckairos_core::error::chain;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Queries every interval and serves `/health` and `/ready` on `listener`,
/// `/metrics` on `metrics_listener` (an internal port), until `shutdown`
/// resolves; then the servers get `SHUTDOWN_GRACE_MS` to finish.
pub async fn run(
    cfg: Config,
    listener: tokio::net::TcpListener,
    metrics_listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = client(Duration::from_secs(cfg.query_timeout_seconds))?;
    let url = cfg.url();
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(ops::serve_endpoints(
        listener,
        metrics_listener,
        Ops(metrics.clone()),
        stop_rx,
    ));
    if url.starts_with("http://") {
        tracing::warn!(
            url,
            "ANALYTICS_SQL_URL is not https: the API token is sent in clear"
        );
    }
    tracing::info!(
        dataset = cfg.dataset,
        url,
        interval_s = cfg.interval_seconds,
        lag_s = cfg.lag_seconds,
        max_window_s = cfg.max_window_seconds,
        "edge exporter started"
    );

    let mut start = (unix_now() as u64)
        .saturating_sub(cfg.lag_seconds)
        .saturating_sub(cfg.first_window_seconds());
    let mut ticks = tokio::time::interval(cfg.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let Some((window, skipped)) = query::next_window(
            start,
            unix_now() as u64,
            cfg.lag_seconds,
            cfg.max_window_seconds,
        ) else {
            continue;
        };
        if skipped > 0 {
            metrics.skipped(skipped);
            tracing::warn!(
                from = start,
                to = window.start,
                skipped_s = skipped,
                "queries failed for longer than MAX_WINDOW_SECONDS; the oldest data is not counted"
            );
            start = window.start;
        }
        let sql = query::sql(&cfg.dataset, window);
        let result = tokio::select! {
            _ = &mut shutdown => break,
            r = query(&client, &url, &cfg.api_token, sql) => r,
        };
        match result {
            Ok(rows) => {
                metrics.counted(&rows, window, unix_now());
                tracing::debug!(
                    window_start = window.start,
                    window_end = window.end,
                    rows = rows.len(),
                    "window counted"
                );
                start = window.end;
            }
            Err(e) => {
                metrics.failed(e.kind);
                tracing::warn!(
                    result = e.kind.label(),
                    error = e.detail,
                    window_start = window.start,
                    window_end = window.end,
                    "query failed; its window is queried again next time"
                );
            }
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    if tokio::time::timeout(grace, http).await.is_err() {
        tracing::warn!("the ops servers did not finish within SHUTDOWN_GRACE_MS");
    }
    tracing::info!("stopped");
    Ok(())
}
