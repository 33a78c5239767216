use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::time::Duration;
use synckairos_audit_consumer::service::{self, connect_pg, shutdown_signal};
use synckairos_audit_consumer::{
    cli, db, metrics::Metrics, Connections, ConsumerConfig, RedisConn,
};

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
        /// Which incarnation of the id (1 = the first created; default: the
        /// latest), as `timeline` lists them.
        #[arg(long)]
        incarnation: Option<usize>,
        /// How long a restored (paused) session waits for a command before
        /// it ends, s: `SESSION_IDLE_TTL_SECONDS`, as the worker and the
        /// gateway name it.
        #[arg(long, env = "SESSION_IDLE_TTL_SECONDS", default_value_t = 86_400)]
        session_idle_ttl_seconds: u64,
    },
    /// The dead letters: entries the consumer could not store.
    Dlq {
        #[command(subcommand)]
        command: DlqCmd,
    },
    /// Prints a session's audit trail.
    Timeline {
        /// PostgreSQL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// The session.
        session_id: String,
        /// Which incarnation of the id (1 = the first created; default: the
        /// latest): a deleted id can be created again.
        #[arg(long)]
        incarnation: Option<usize>,
    },
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Prints dead letters, one JSON object per line: id (what `replay`
    /// takes), shard, reason, deliveries, consumer, and the original event's
    /// source_id, type, sid and version.
    List {
        #[command(flatten)]
        conns: Connections,
        /// Only this shard's.
        #[arg(long)]
        shard: Option<u16>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Stores dead letters' original events in PostgreSQL under their
    /// original event ids (a replay is idempotent) and removes each one
    /// stored; one that still fails stays. Prints one JSON object per dead
    /// letter (id, result: stored, already_stored, still_failing or
    /// not_found, reason); exits 2 unless every one was stored.
    Replay {
        #[command(flatten)]
        conns: Connections,
        /// Dead letters by name, `<shard>-<ms>-<seq>`, as `dlq list` prints them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter (of `--shard`, if given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only this shard's.
        #[arg(long, requires = "all")]
        shard: Option<u16>,
    },
}

/// Refuses a shard the deployment does not have (exit 2, `BAD_SHARD`).
fn check_shard(shard: Option<u16>, shards: u16) -> Result<(), std::process::ExitCode> {
    match shard {
        Some(s) if s >= shards => {
            eprintln!("BAD_SHARD: shard {s} does not exist (SHARDS={shards})");
            Err(std::process::ExitCode::from(2))
        }
        _ => Ok(()),
    }
}

async fn dlq(command: DlqCmd) -> anyhow::Result<std::process::ExitCode> {
    use synckairos_audit_consumer::dlq::{self, Replayed};
    match command {
        DlqCmd::List {
            conns,
            shard,
            limit,
        } => {
            if let Err(code) = check_shard(shard, conns.shards) {
                return Ok(code);
            }
            let conn = RedisConn::connect(&conns.target()?).await?;
            for d in dlq::list(&conn, conns.shards, shard, limit)
                .await
                .context("reading the dead letters")?
            {
                println!("{}", d.to_json());
            }
        }
        DlqCmd::Replay {
            conns,
            ids,
            all,
            shard,
        } => {
            if let Err(code) = check_shard(shard, conns.shards) {
                return Ok(code);
            }
            let mut targets = Vec::new();
            for name in &ids {
                match dlq::parse_name(name, conns.shards) {
                    Ok(t) => targets.push(t),
                    Err(e) => {
                        eprintln!("BAD_DEAD_LETTER_ID: {e}");
                        return Ok(std::process::ExitCode::from(2));
                    }
                }
            }
            let conn = RedisConn::connect(&conns.target()?).await?;
            let pool = connect_pg(&conns.database_url, db::pool).await?;
            if all {
                targets = dlq::list(&conn, conns.shards, shard, i64::MAX as usize)
                    .await
                    .context("reading the dead letters")?
                    .into_iter()
                    .map(|d| (d.shard, d.id))
                    .collect();
            }
            let mut failed = 0;
            for (s, id) in &targets {
                let outcome = match dlq::get(&conn, *s, id)
                    .await
                    .context("reading a dead letter")?
                {
                    Some(d) => dlq::replay(&conn, &pool, &d)
                        .await
                        .with_context(|| format!("replaying {s}-{id}"))?,
                    None => Replayed::NotFound,
                };
                let reason = match &outcome {
                    Replayed::StillFailing(why) => Some(why.as_str()),
                    _ => None,
                };
                if matches!(outcome, Replayed::StillFailing(_) | Replayed::NotFound) {
                    failed += 1;
                }
                println!(
                    "{}",
                    serde_json::json!({"id": format!("{s}-{id}"), "result": outcome.code(), "reason": reason})
                );
            }
            tracing::info!(
                dead_letters = targets.len(),
                not_stored = failed,
                "dead letters replayed"
            );
            if failed > 0 {
                eprintln!(
                    "DLQ_NOT_REPLAYED: {failed} of {} dead letters not stored",
                    targets.len()
                );
                return Ok(std::process::ExitCode::from(2));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The incarnation numbered `n` of `sid` (default: the latest), its number
/// and all of them; or the exit code after saying why there is none.
async fn incarnation_of(
    pool: &sqlx::PgPool,
    sid: &str,
    n: Option<usize>,
) -> anyhow::Result<Result<(usize, Vec<db::Incarnation>, db::Incarnation), std::process::ExitCode>>
{
    let all = db::incarnations(pool, sid)
        .await
        .context("reading the incarnations")?;
    if all.is_empty() {
        eprintln!("SESSION_NOT_FOUND: no audited event of {sid}");
        return Ok(Err(std::process::ExitCode::from(2)));
    }
    match cli::pick(&all, n) {
        Some((n, inc)) => {
            let inc = inc.clone();
            Ok(Ok((n, all, inc)))
        }
        None => {
            eprintln!(
                "INCARNATION_NOT_FOUND: {sid} has {} incarnation(s), numbered from 1",
                all.len()
            );
            Ok(Err(std::process::ExitCode::from(2)))
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service::main(real_main()).await
}

async fn real_main() -> anyhow::Result<std::process::ExitCode> {
    match Cli::parse().command {
        Cmd::Migrate { database_url } => {
            service::migrate(&database_url, db::pool).await?;
            tracing::info!("migrations applied");
        }
        Cmd::Run {
            conns,
            consumer,
            migrate,
            shutdown_grace_ms,
        } => {
            // Which Redis, before anything else is done.
            conns.target()?;
            if migrate {
                service::migrate(&conns.database_url, db::pool).await?;
            }
            let (listener, metrics_listener) =
                service::bind_ops(consumer.listen, consumer.metrics_listen).await?;
            let metrics = Arc::new(Metrics::new());
            let c = synckairos_audit_consumer::consumers(&conns, consumer, metrics.clone()).await?;
            synckairos_audit_consumer::run(
                c,
                listener,
                metrics_listener,
                metrics,
                Duration::from_millis(shutdown_grace_ms),
                shutdown_signal(),
            )
            .await?;
        }
        Cmd::Restore {
            conns,
            session_id,
            actor,
            state_ttl_seconds,
            incarnation,
            session_idle_ttl_seconds,
        } => {
            let pool = connect_pg(&conns.database_url, db::pool).await?;
            let sid = session_id.to_ascii_lowercase();
            let created_at_ms = match incarnation {
                None => None,
                Some(n) => match incarnation_of(&pool, &sid, Some(n)).await? {
                    Ok((_, _, inc)) => Some(inc.created_at_ms),
                    Err(code) => return Ok(code),
                },
            };
            let settings = synckairos_core::script::Settings {
                shards: conns.shards,
                base_ttl_s: state_ttl_seconds,
                idle_ttl_s: session_idle_ttl_seconds,
                ..Default::default()
            };
            match cli::restore(
                &pool,
                &conns.target()?,
                settings,
                &sid,
                Some(&actor),
                created_at_ms,
            )
            .await
            {
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
        Cmd::Dlq { command } => return dlq(command).await,
        Cmd::Timeline {
            database_url,
            session_id,
            incarnation,
        } => {
            let pool = connect_pg(&database_url, db::pool).await?;
            let sid = session_id.to_ascii_lowercase();
            let (n, all, inc) = match incarnation_of(&pool, &sid, incarnation).await? {
                Ok(found) => found,
                Err(code) => return Ok(code),
            };
            let t = db::timeline(&pool, &sid, Some(inc.created_at_ms))
                .await
                .context("reading the timeline")?;
            if all.len() > 1 {
                print!("{}", cli::render_incarnations(&sid, &all, n));
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
