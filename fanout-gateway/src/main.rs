//! `fanout-gateway`: reads its configuration from the environment (see
//! `Config`), logs JSON lines, and serves until SIGTERM or ctrl-c.

use anyhow::Context as _;
use synckairos_fanout_gateway::{run, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = Config::from_env()?;
    // A reconnect storm (every client of a restarted instance at once)
    // overflows the default backlog of 128: each dropped SYN waits a second
    // for TCP's retry. The kernel caps this at net.core.somaxconn.
    let socket = match config.listen {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(config.listen)?;
    let listener = socket.listen(config.listen_backlog)?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding METRICS_LISTEN {}", config.metrics_listen))?;
    run(listener, metrics_listener, config, async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown signal received");
    })
    .await
}
