//! `upstash-local`: development and test stand-in for Upstash's Redis REST
//! API in front of a local redis-server. Not for production.
//!
//! Configuration comes from flags or `UPSTASH_LOCAL_*` environment variables
//! (see `upstash-local --help`); logs are JSON lines on stdout (`RUST_LOG`
//! filters them). SIGTERM or Ctrl-C stops it gracefully.

use anyhow::Context as _;
use clap::Parser as _;
use synckairos_upstash_local::{run, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(err) => {
            let missing = err.kind() == clap::error::ErrorKind::MissingRequiredArgument;
            let _ = err.print();
            if missing {
                eprintln!(
                    "\nhint: set UPSTASH_LOCAL_TOKEN (or pass --token) to the bearer token your \
                     clients send; upstash-local has no default token."
                );
            }
            std::process::exit(err.exit_code());
        }
    };

    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (UPSTASH_LOCAL_LISTEN)", config.listen))?;
    run(listener, config, shutdown_signal()).await
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
