use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::time::Duration;
use synckairos_audit_consumer::service::{self, connect_pg, shutdown_signal};
use synckairos_audit_consumer::RedisConn;
use synckairos_webhook_worker::{dlq, metrics::Metrics, queue, Connections, WorkerConfig};

/// The SyncKairos webhook worker: session events to HTTPS endpoints as
/// Standard Webhooks, with retries, dead letters and replay.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Applies the database migrations (the audit consumer's set).
    Migrate {
        /// PostgreSQL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Delivers events until SIGTERM.
    Run {
        #[command(flatten)]
        conns: Connections,
        #[command(flatten)]
        worker: WorkerConfig,
        /// Also apply the migrations before starting.
        #[arg(long, env = "MIGRATE_ON_START")]
        migrate: bool,
        /// How long the attempts in flight and the batch in hand may take
        /// to finish on shutdown, ms.
        #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
        shutdown_grace_ms: u64,
    },
    /// The dead letters: deliveries whose last attempt failed.
    Dlq {
        #[command(subcommand)]
        command: DlqCmd,
    },
}

// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum DlqCmd {
    /// Prints dead letters, one JSON object per line: id (what `replay`
    /// takes), endpoint, event_id, webhook_id, session_id, type, attempts,
    /// last_error, last_status, payload.
    List {
        #[command(flatten)]
        conns: Connections,
        /// Only this endpoint's.
        #[arg(long)]
        endpoint: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Queues dead letters again (attempts from 0, the same webhook-id) and
    /// removes each one queued. Prints one JSON object per dead letter (id,
    /// result: queued, already_queued, unknown_endpoint or not_found); exits
    /// 2 unless every one was queued.
    Replay {
        #[command(flatten)]
        conns: Connections,
        #[command(flatten)]
        worker: WorkerConfig,
        /// Dead letters by id, as `dlq list` prints them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter (of `--endpoint`, if given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only this endpoint's.
        #[arg(long, requires = "all")]
        endpoint: Option<String>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service::main(real_main()).await
}

async fn real_main() -> anyhow::Result<std::process::ExitCode> {
    match Cli::parse().command {
        Cmd::Migrate { database_url } => {
            service::migrate(&database_url, queue::pool).await?;
            tracing::info!("migrations applied");
        }
        Cmd::Run {
            conns,
            worker,
            migrate,
            shutdown_grace_ms,
        } => {
            // Which Redis, before anything else is done.
            conns.target()?;
            let endpoints = match worker.load_endpoints() {
                Ok(e) => e,
                Err(why) => {
                    eprintln!("BAD_CONFIG: {why}");
                    return Ok(std::process::ExitCode::from(2));
                }
            };
            if endpoints.is_empty() {
                tracing::warn!(
                    "no endpoint configured (WEBHOOK_ENDPOINTS): events are read and skipped"
                );
            }
            for e in &endpoints {
                tracing::info!(endpoint = %e.id, url = %synckairos_core::redact::redact_url(e.url.as_str()),
                    events = ?e.events, secrets = ?e.secrets, "endpoint");
            }
            if migrate {
                service::migrate(&conns.database_url, queue::pool).await?;
            }
            let (listener, metrics_listener) =
                service::bind_ops(worker.listen, worker.metrics_listen).await?;
            let metrics = Arc::new(Metrics::new(endpoints.iter().map(|e| e.id.as_str())));
            // Mobile push runs in this process when FCM is configured: its
            // own consumer group, its own task, the same shutdown.
            let push = match std::env::var("FCM_SERVICE_ACCOUNT_FILE") {
                Ok(f) if !f.trim().is_empty() => {
                    let cfg = synckairos_push::PushConfig::from_lookup(|n| std::env::var(n).ok())
                        .context("the push settings")?;
                    let pm = Arc::new(synckairos_push::Metrics::new());
                    let _ = metrics.push.set(pm.clone());
                    Some(
                        synckairos_push::pusher(cfg, pm)
                            .await
                            .context("starting the push sender")?,
                    )
                }
                _ => {
                    tracing::info!("no FCM_SERVICE_ACCOUNT_FILE: mobile push is off");
                    None
                }
            };
            let w = synckairos_webhook_worker::worker(&conns, &worker, endpoints, metrics).await?;
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let push = push.map(|p| tokio::spawn(p.run(stopped(stop.clone()))));
            synckairos_webhook_worker::run(
                w,
                listener,
                metrics_listener,
                Duration::from_millis(shutdown_grace_ms),
                stopped(stop),
            )
            .await?;
            if let Some(p) = push {
                match p.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = format!("{e:#}"), "the push sender failed")
                    }
                    Err(e) => tracing::error!(error = %e, "the push sender panicked"),
                }
            }
        }
        Cmd::Dlq { command } => return dlq_cmd(command).await,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn dlq_cmd(command: DlqCmd) -> anyhow::Result<std::process::ExitCode> {
    match command {
        DlqCmd::List {
            conns,
            endpoint,
            limit,
        } => {
            let conn = RedisConn::connect(&conns.target()?).await?;
            for d in dlq::list(&conn, endpoint.as_deref(), limit)
                .await
                .context("reading the dead letters")?
            {
                println!("{}", d.to_json());
            }
        }
        DlqCmd::Replay {
            conns,
            worker,
            ids,
            all,
            endpoint,
        } => {
            let endpoints: Vec<String> = match worker.load_endpoints() {
                Ok(e) => e.into_iter().map(|e| e.id).collect(),
                Err(why) => {
                    eprintln!("BAD_CONFIG: {why}");
                    return Ok(std::process::ExitCode::from(2));
                }
            };
            if let Some(bad) = ids.iter().find(|id| !dlq::valid_id(id)) {
                eprintln!("BAD_ID: {bad:?} is not a dead letter's id (<ms>-<seq>, as `dlq list` prints it)");
                return Ok(std::process::ExitCode::from(2));
            }
            let conn = RedisConn::connect(&conns.target()?).await?;
            let pool = connect_pg(&conns.database_url, queue::pool).await?;
            let targets: Vec<String> = if all {
                dlq::list(&conn, endpoint.as_deref(), usize::MAX)
                    .await
                    .context("reading the dead letters")?
                    .into_iter()
                    .map(|d| d.id)
                    .collect()
            } else {
                ids
            };
            let mut failed = 0usize;
            for id in &targets {
                let outcome = match dlq::get(&conn, id).await.context("reading a dead letter")? {
                    Some(d) => dlq::replay(&conn, &pool, &d, &endpoints)
                        .await
                        .with_context(|| format!("replaying {id}"))?,
                    None => dlq::Replayed::NotFound,
                };
                if matches!(
                    outcome,
                    dlq::Replayed::NotFound | dlq::Replayed::UnknownEndpoint
                ) {
                    failed += 1;
                }
                println!(
                    "{}",
                    serde_json::json!({"id": id, "result": outcome.code()})
                );
            }
            tracing::info!(
                dead_letters = targets.len(),
                not_queued = failed,
                "dead letters replayed"
            );
            if failed > 0 {
                eprintln!(
                    "DLQ_NOT_REPLAYED: {failed} of {} dead letters not queued",
                    targets.len()
                );
                return Ok(std::process::ExitCode::from(2));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
