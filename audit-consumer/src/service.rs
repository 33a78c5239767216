//! What every stream-consuming service of the workspace runs the same way:
//! its logs, its shutdown signal, its PostgreSQL connection check and
//! migrations, its ops ports, and the loop that drives a consumer's steps until that signal.
//!
//! These live here, in the audit consumer's library, because it is the
//! first such service and the others (the webhook worker, the push sender
//! it runs) already depend on it for [`crate::stream::Streams`]: one home,
//! no new crate, no dependency the others did not have. The stream intake
//! itself is [`crate::intake`], the ops endpoints [`crate::ops::serve`].
//!
//! The push sender (`synckairos-push`) keeps its own loop: it holds no
//! batch across steps (a failed batch is left pending and read again), so
//! neither [`drive`] nor the intake's queue fits it.

use anyhow::Context as _;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// JSON logs on stderr, filtered by `RUST_LOG` (`info` without it).
pub fn logs() {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}

/// A binary's `main`: [`logs`], then `real_main`; an error is logged and
/// printed, and exits 1.
pub async fn main(
    real_main: impl Future<Output = anyhow::Result<std::process::ExitCode>>,
) -> std::process::ExitCode {
    logs();
    match real_main.await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Resolves on SIGTERM or ctrl-c (and logs it).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received");
}

/// A pool of 2 for `url` made by `pool` (a service's own, for its
/// application name), checked with one query. Errors show the URL redacted.
pub async fn connect_pg(
    url: &str,
    pool: impl FnOnce(&str, u32) -> Result<PgPool, sqlx::Error>,
) -> anyhow::Result<PgPool> {
    let shown = synckairos_core::redact::redact_url(url);
    let pool =
        pool(url, 2).with_context(|| format!("DATABASE_URL {shown} is not a PostgreSQL URL"))?;
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {shown}"))?;
    Ok(pool)
}

/// Applies every migration not yet applied (`migrations/`, the one set all
/// the services share) to the PostgreSQL at `url`, through a pool made by
/// `pool` ([`connect_pg`]).
pub async fn migrate(
    url: &str,
    pool: impl FnOnce(&str, u32) -> Result<PgPool, sqlx::Error>,
) -> anyhow::Result<()> {
    let pool = connect_pg(url, pool).await?;
    crate::db::migrate(&pool)
        .await
        .context("applying migrations")
}

/// Binds the public ops port (`LISTEN`) and the internal metrics port
/// (`METRICS_LISTEN`).
pub async fn bind_ops(
    listen: SocketAddr,
    metrics_listen: SocketAddr,
) -> anyhow::Result<(TcpListener, TcpListener)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding LISTEN {listen}"))?;
    let metrics_listener = TcpListener::bind(metrics_listen)
        .await
        .with_context(|| format!("binding METRICS_LISTEN {metrics_listen}"))?;
    Ok((listener, metrics_listener))
}

/// A consumer [`drive`] can run: one batch per step, a batch in hand kept
/// across failed steps.
pub trait Steps: Send {
    /// What a step did.
    type Outcome: Send;
    /// Why a step failed (nothing acknowledged, the batch in hand kept).
    type Error: Send;
    /// One batch; with `block`, waits for entries when there are none.
    fn step(
        &mut self,
        block: bool,
    ) -> impl Future<Output = Result<Self::Outcome, Self::Error>> + Send;
    /// Whether a batch is in hand (read, not yet acknowledged).
    fn has_batch(&self) -> bool;
    /// A blocking read ends as soon as `stop` turns true.
    fn stop_on(&mut self, stop: watch::Receiver<bool>);
}

/// What [`drive`] tells its caller (who logs and counts it).
pub enum Event<'a, O, E> {
    /// A step failed; the next is tried in `retry_in`.
    StepFailed {
        /// Why.
        error: &'a E,
        /// The backoff before the next step.
        retry_in: Duration,
    },
    /// The step in progress at the signal did not finish within the grace.
    GraceExceeded,
    /// The loop ended; the batch in hand (if any) is finished next.
    ShuttingDown,
    /// After the signal, the batch in hand was finished.
    LastBatchDone(&'a O),
    /// After the signal, finishing the batch in hand failed (retried until
    /// the deadline).
    LastBatchFailed(&'a E),
    /// Stopping with a batch unacknowledged (it stays pending).
    LeftPending,
}

/// The backoff between failed steps: `min`, doubling up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// After the first failure (and after any success).
    pub min: Duration,
    /// At most.
    pub max: Duration,
}

/// One consumer's loop: steps with backoff until the signal, then the batch
/// in hand is finished. A step is never cut short by the signal while it
/// holds a batch: it finishes within `grace`, so the batch read is the batch
/// stored and acknowledged. A blocking read with nothing in hand ends at once
/// ([`Steps::stop_on`]). `report` hears of failures and of the shutdown.
pub async fn drive<S: Steps>(
    mut consumer: S,
    backoff: Backoff,
    grace: Duration,
    mut signal: watch::Receiver<bool>,
    report: impl Fn(&S, Event<'_, S::Outcome, S::Error>),
) {
    consumer.stop_on(signal.clone());
    let mut wait = backoff.min;
    let mut deadline = None;
    loop {
        if *signal.borrow() {
            break;
        }
        let r = {
            let step = consumer.step(true);
            tokio::pin!(step);
            let signalled = tokio::select! {
                r = &mut step => Err(r),
                _ = signal.wait_for(|s| *s) => Ok(()),
            };
            match signalled {
                Err(r) => Some(r),
                Ok(()) => {
                    let d = Instant::now() + grace;
                    deadline = Some(d);
                    tokio::time::timeout_at(d.into(), &mut step).await.ok()
                }
            }
        };
        let Some(r) = r else {
            report(&consumer, Event::GraceExceeded);
            break;
        };
        match r {
            Ok(_) => wait = backoff.min,
            Err(e) => {
                report(
                    &consumer,
                    Event::StepFailed {
                        error: &e,
                        retry_in: wait,
                    },
                );
                if *signal.borrow() {
                    break;
                }
                tokio::select! {
                    _ = signal.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(backoff.max);
            }
        }
    }
    report(&consumer, Event::ShuttingDown);
    let deadline = deadline.unwrap_or_else(|| Instant::now() + grace);
    while consumer.has_batch() && Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), consumer.step(false)).await {
            Ok(Ok(o)) => report(&consumer, Event::LastBatchDone(&o)),
            Ok(Err(e)) => {
                report(&consumer, Event::LastBatchFailed(&e));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => break,
        }
    }
    if consumer.has_batch() {
        report(&consumer, Event::LeftPending);
    }
}

/// The TLS configuration of the services' outbound HTTPS clients (webhook
/// endpoints, the Analytics Engine SQL API): rustls with ring, as everywhere
/// in the workspace, and the webpki roots; given to reqwest preconfigured.
pub fn webpki_tls_config() -> anyhow::Result<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
