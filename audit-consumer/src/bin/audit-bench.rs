//! `audit-bench`: how fast the consumer drains the audit streams into
//! PostgreSQL, and the end-to-end audit lag under a steady command rate.
//!
//! - `drain`: fills the shard streams with `--events` real events (sessions
//!   of two participants run through the Rust model: create, start, switches),
//!   then times one in-process consumer storing them with `--batch-size`.
//! - `lag`: issues `--rate` real commands per second through the engine
//!   (one EVALSHA each) for `--duration-secs`, while one consumer drains;
//!   the lag of an event is its commit time minus its command's Redis time.
//!
//! It uses a Redis logical database of its own (default `/15`, its shard
//! streams emptied first) and a throw-away PostgreSQL database created on
//! `--pg-admin-url`, so it never touches a running stack's data. One JSON
//! object is printed on stdout.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synckairos_audit_consumer::{db, metrics::Metrics, Connections, ConsumerConfig};
use synckairos_core::audit::AuditEvent;
use synckairos_core::model::{self, Ctx};
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::{keys, Command, Request};
use synckairos_engine::fixtures::{body, create, uuid};
use synckairos_engine::Engine;

#[derive(Parser)]
struct Args {
    /// Redis, a logical database of the bench's own.
    #[arg(long, default_value = "redis://127.0.0.1:6379/15")]
    redis_url: String,
    /// A PostgreSQL URL allowed to create and drop databases.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_admin_url: String,
    #[arg(long, default_value_t = 16)]
    shards: u16,
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Consumers draining side by side (`drain`; the consumer's WORKERS).
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Drain rate of a pre-filled backlog.
    Drain {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
    },
    /// Lag at a steady command rate.
    Lag {
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        duration_secs: u64,
    },
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

/// The events of one session: create, start, then switches.
fn session_events(n: u128, switches: usize, now: i64) -> Vec<AuditEvent> {
    let id = uuid(0xb000_0000 + n);
    let req = create(&body(&id, "per_participant", 2, 86_400_000)).expect("valid body");
    let ctx = Ctx::at;
    let mut out = model::apply(None, None, &req, &ctx(now));
    let mut events = std::mem::take(&mut out.events);
    let mut st = out.state;
    let mut cmds = vec![Command::Start];
    cmds.extend((0..switches).map(|_| Command::Switch {
        next_participant_id: None,
    }));
    for (i, c) in cmds.into_iter().enumerate() {
        let mut o = model::apply(
            st.as_ref(),
            None,
            &Request::new(&id, c),
            &ctx(now + 1 + i as i64),
        );
        events.append(&mut o.events);
        st = o.state;
    }
    events
}

async fn fill(
    conn: &mut synckairos_audit_consumer::RedisConn,
    shards: u16,
    n: usize,
) -> anyhow::Result<()> {
    let now = wall_ms();
    let mut pipe = redis::pipe();
    let (mut queued, mut done, mut s) = (0, 0, 0u128);
    while done < n {
        for e in session_events(s, 8, now) {
            if done == n {
                break;
            }
            let key = keys::audit_stream(keys::shard_of(&e.session_id, shards));
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg(e.to_fields())
                .ignore();
            queued += 1;
            done += 1;
        }
        s += 1;
        if queued >= 2000 || done == n {
            pipe.query_async::<()>(conn).await?;
            pipe = redis::pipe();
            queued = 0;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dbname = format!("sk_bench_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&args.pg_admin_url)
        .await
        .context("PostgreSQL admin connection")?;
    sqlx::query(&format!("CREATE DATABASE {dbname}"))
        .execute(&admin)
        .await?;
    let base = args.pg_admin_url.rsplit_once('/').context("admin url")?.0;
    let url = format!("{base}/{dbname}");
    let result = bench(&args, &url).await;
    sqlx::query(&format!("DROP DATABASE {dbname} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    println!("{}", result?);
    Ok(())
}

async fn bench(args: &Args, url: &str) -> anyhow::Result<serde_json::Value> {
    let pool = sqlx::PgPool::connect(url).await?;
    db::migrate(&pool).await?;
    let mut conn = synckairos_audit_consumer::redis(&args.redis_url).await?;
    for s in 0..args.shards {
        redis::cmd("DEL")
            .arg(keys::audit_stream(s))
            .arg(keys::dead_letter_stream(s))
            .query_async::<()>(&mut conn)
            .await?;
    }
    let conns = Connections::new(url, &args.redis_url, args.shards);
    let cfg = ConsumerConfig {
        batch_size: args.batch_size,
        consumer_name: Some("bench".into()),
        block_ms: 50,
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::new());
    let mut c = synckairos_audit_consumer::consumer(&conns, cfg.clone(), metrics.clone()).await?;
    match args.mode {
        Mode::Drain { events } => {
            let t = Instant::now();
            fill(&mut conn, args.shards, events).await?;
            eprintln!(
                "filled {events} events in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            let workers = synckairos_audit_consumer::consumers(
                &conns,
                ConsumerConfig {
                    workers: args.consumers,
                    ..cfg.clone()
                },
                metrics.clone(),
            )
            .await?;
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for mut w in workers {
                set.spawn(async move {
                    let (mut stored, mut batches) = (0u64, 0u64);
                    let mut commit = Histogram::<u64>::new(3)?;
                    loop {
                        let o = w.step(false).await?;
                        if o.batch == 0 {
                            break;
                        }
                        stored += o.inserted;
                        batches += 1;
                        if let Some(d) = o.commit {
                            commit.record(d.as_micros() as u64)?;
                        }
                    }
                    Ok::<_, anyhow::Error>((stored, batches, commit))
                });
            }
            let (mut stored, mut batches) = (0u64, 0u64);
            let mut commit = Histogram::<u64>::new(3)?;
            while let Some(r) = set.join_next().await {
                let (s, b, h) = r??;
                stored += s;
                batches += b;
                commit.add(&h)?;
            }
            if stored != events as u64 {
                anyhow::bail!("stored {stored} of {events}");
            }
            let secs = t.elapsed().as_secs_f64();
            Ok(json!({
                "mode": "drain", "batch_size": args.batch_size, "consumers": args.consumers,
                "events": stored,
                "seconds": (secs * 100.0).round() / 100.0,
                "events_per_second": (stored as f64 / secs).round(),
                "batches": batches,
                "commit_ms_p50": commit.value_at_quantile(0.5) as f64 / 1000.0,
                "commit_ms_p99": commit.value_at_quantile(0.99) as f64 / 1000.0,
            }))
        }
        Mode::Lag {
            rate,
            duration_secs,
        } => {
            let settings = Settings {
                shards: args.shards,
                switch_limit: 0,
                ..Default::default()
            };
            let engine = Engine::connect(&args.redis_url, settings).await?;
            // 1000 running sessions; the load switches them round-robin.
            let n = 1000u128;
            for i in 0..n {
                let id = uuid(0xc000_0000 + i);
                let _ = engine
                    .execute(&Request::new(&id, Command::Delete), &CallOptions::default())
                    .await?;
                engine
                    .execute(
                        &create(&body(&id, "per_participant", 2, 86_400_000)).expect("body"),
                        &CallOptions::default(),
                    )
                    .await?;
                engine
                    .execute(&Request::new(&id, Command::Start), &CallOptions::default())
                    .await?;
            }
            // Drain the set-up before measuring.
            while c.step(false).await?.batch > 0 {}
            let load = tokio::spawn(async move {
                let period = Duration::from_secs_f64(1.0 / rate as f64);
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let end = Instant::now() + Duration::from_secs(duration_secs);
                let mut tasks = tokio::task::JoinSet::new();
                let mut i = 0u128;
                while Instant::now() < end {
                    tick.tick().await;
                    let e = engine.clone();
                    let id = uuid(0xc000_0000 + i % n);
                    i += 1;
                    tasks.spawn(async move {
                        e.execute(
                            &Request::new(
                                &id,
                                Command::Switch {
                                    next_participant_id: None,
                                },
                            ),
                            &CallOptions::default(),
                        )
                        .await
                        .map(|_| ())
                    });
                    while let Some(r) = tasks.try_join_next() {
                        r??;
                    }
                }
                while let Some(r) = tasks.join_next().await {
                    r??;
                }
                Ok::<u128, anyhow::Error>(i)
            });
            let mut lag = Histogram::<u64>::new(3)?;
            let mut batch = Histogram::<u64>::new(3)?;
            let t = Instant::now();
            let sent = loop {
                let o = c.step(true).await?;
                for at in &o.occurred_at_ms {
                    lag.record((o.committed_at_ms - at).max(0) as u64)?;
                }
                if o.batch > 0 {
                    batch.record(o.batch as u64)?;
                }
                if load.is_finished() && o.batch == 0 {
                    break load.await??;
                }
            };
            let secs = t.elapsed().as_secs_f64();
            Ok(json!({
                "mode": "lag", "batch_size": args.batch_size, "rate": rate,
                "commands": sent as u64, "events": lag.len(),
                "achieved_per_second": (sent as f64 / duration_secs as f64).round(),
                "seconds": (secs * 10.0).round() / 10.0,
                "lag_ms_p50": lag.value_at_quantile(0.5), "lag_ms_p99": lag.value_at_quantile(0.99),
                "lag_ms_max": lag.max(), "batch_p50": batch.value_at_quantile(0.5),
            }))
        }
    }
}
