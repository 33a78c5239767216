use clap::Parser;
use std::process::ExitCode;
use synckairos_audit_consumer::service::{self, shutdown_signal};
use synckairos_edge_exporter::{run, Config};

#[tokio::main]
async fn main() -> ExitCode {
    service::main(real_main()).await
}

async fn real_main() -> anyhow::Result<ExitCode> {
    let cfg = Config::parse();
    if let Err(e) = cfg.validate() {
        tracing::error!(error = e, "refusing the configuration");
        eprintln!("BAD_CONFIG: {e}");
        return Ok(ExitCode::from(2));
    }
    let (listener, metrics_listener) = service::bind_ops(cfg.listen, cfg.metrics_listen).await?;
    run(cfg, listener, metrics_listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
