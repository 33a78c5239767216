use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::time::Duration;
use synckairos_audit_consumer::{cli, db, metrics::Metrics, Connections, ConsumerConfig};
use tracing_subscriber::EnvFilter;

/// The SyncKairos audit consumer: shard streams into PostgreSQL, and the
/// operator's restore and timeline.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Applies the database migrations.
    Migrate {
        /// PostgreSQL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Drains the audit streams into PostgreSQL until SIGTERM.
    Run {
        #[command(flatten)]
        conns: Connections,
        #[command(flatten)]
        consumer: ConsumerConfig,
        /// Also apply the migrations before starting.
        #[arg(long, env = "MIGRATE_ON_START")]
        migrate: bool,
        /// How long the last batch may take to finish on shutdown, ms.
        #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
        shutdown_grace_ms: u64,
    },
    /// Rebuilds a session Redis lost from its latest audited snapshot.
    Restore {
        #[command(flatten)]
        conns: Connections,
        /// The session.
        session_id: String,
        /// Recorded as the actor of the `session_restored` event.
        #[arg(long, env = "RESTORE_ACTOR", default_value = "operator")]
        actor: String,
        /// The state TTL floor, s: `STATE_TTL_SECONDS`, as the worker and
        /// the gateway name it.
        #[arg(long, env = "STATE_TTL_SECONDS", default_value_t = 3600)]
        state_ttl_seconds: u64,
    },
    /// Prints a session's audit trail.
    Timeline {
        /// PostgreSQL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// The session.
        session_id: String,
    },
}

fn logs() {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}

async fn connect_pg(url: &str) -> anyhow::Result<sqlx::PgPool> {
    let shown = synckairos_core::redact::redact_url(url);
    let pool = db::pool(url, 2)
        .with_context(|| format!("DATABASE_URL {shown} is not a PostgreSQL URL"))?;
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {shown}"))?;
    Ok(pool)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    logs();
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn real_main() -> anyhow::Result<std::process::ExitCode> {
    match Cli::parse().command {
        Cmd::Migrate { database_url } => {
            let pool = connect_pg(&database_url).await?;
            db::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
        }
        Cmd::Run {
            conns,
            consumer,
            migrate,
            shutdown_grace_ms,
        } => {
            if migrate {
                let pool = connect_pg(&conns.database_url).await?;
                db::migrate(&pool).await.context("applying migrations")?;
            }
            let listener = tokio::net::TcpListener::bind(consumer.listen)
                .await
                .with_context(|| format!("binding {}", consumer.listen))?;
            let metrics = Arc::new(Metrics::new());
            let c = synckairos_audit_consumer::consumers(&conns, consumer, metrics.clone()).await?;
            synckairos_audit_consumer::run(
                c,
                listener,
                metrics,
                Duration::from_millis(shutdown_grace_ms),
                async {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .expect("a SIGTERM handler");
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                    tracing::info!("shutdown signal received");
                },
            )
            .await?;
        }
        Cmd::Restore {
            conns,
            session_id,
            actor,
            state_ttl_seconds,
        } => {
            let pool = connect_pg(&conns.database_url).await?;
            let settings = synckairos_core::script::Settings {
                shards: conns.shards,
                base_ttl_s: state_ttl_seconds,
                ..Default::default()
            };
            match cli::restore(&pool, &conns.redis_url, settings, &session_id, Some(&actor)).await {
                Ok(st) => println!(
                    "restored {} at version {} as {}",
                    st.session_id,
                    st.version,
                    st.status.as_str()
                ),
                Err(e) => {
                    eprintln!("{}: {e}", e.code());
                    return Ok(std::process::ExitCode::from(2));
                }
            }
        }
        Cmd::Timeline {
            database_url,
            session_id,
        } => {
            let pool = connect_pg(&database_url).await?;
            let sid = session_id.to_ascii_lowercase();
            let t = db::timeline(&pool, &sid)
                .await
                .context("reading the timeline")?;
            if t.is_empty() {
                eprintln!("SESSION_NOT_FOUND: no audited event of {sid}");
                return Ok(std::process::ExitCode::from(2));
            }
            print!("{}", cli::render_timeline(&sid, &t));
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_state_ttl_has_the_name_every_service_reads() {
        let cli = Cli::command();
        let restore = cli
            .get_subcommands()
            .find(|c| c.get_name() == "restore")
            .expect("restore");
        let ttl = restore
            .get_arguments()
            .find(|a| a.get_id() == "state_ttl_seconds")
            .expect("the TTL argument");
        assert_eq!(
            ttl.get_env().and_then(|e| e.to_str()),
            Some("STATE_TTL_SECONDS")
        );
    }
}
