//! The audit consumer never shows a password of `DATABASE_URL` or
//! `REDIS_URL` when it cannot use them, yet names the host it could not reach.

use std::process::Command;
use std::time::Duration;
use synckairos_audit_consumer::Connections;
use synckairos_testkit::free_port;

const PG_PASSWORD: &str = "pg-Pa55-never-shown";
const REDIS_PASSWORD: &str = "redis-Pa55-never-shown";

/// Runs `audit-consumer <args>` with `env` to its exit (it must fail within
/// 30 s) and returns stdout and stderr.
fn failed(args: &[&str], env: &[(&str, String)]) -> String {
    synckairos_testkit::run_to_failure(
        Command::new(env!("CARGO_BIN_EXE_audit-consumer"))
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("LISTEN", "127.0.0.1:0")
            .env("METRICS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info"),
        Duration::from_secs(30),
    )
}

#[test]
fn unreachable_databases_are_named_without_their_passwords() {
    let (pg, redis) = (free_port(), free_port());
    let database_url = format!("postgres://app:{PG_PASSWORD}@127.0.0.1:{pg}/audit");
    let redis_url = format!("redis://default:{REDIS_PASSWORD}@127.0.0.1:{redis}/");
    let env = [("DATABASE_URL", database_url), ("REDIS_URL", redis_url)];
    for (args, says) in [
        (
            &["migrate"][..],
            format!("connecting to PostgreSQL at postgres://app:[redacted]@127.0.0.1:{pg}/audit"),
        ),
        (
            &["run"][..],
            format!("connecting to Redis at redis://default:[redacted]@127.0.0.1:{redis}/"),
        ),
    ] {
        let out = failed(args, &env);
        for password in [PG_PASSWORD, REDIS_PASSWORD] {
            assert!(
                !out.contains(password),
                "{args:?}: a password leaked: {out}"
            );
        }
        assert!(out.contains(&says), "{args:?}: expected {says:?} in {out}");
    }
}

#[test]
fn debug_of_the_connections_hides_both_passwords() {
    let conns = Connections::new(
        &format!("postgres://app:{PG_PASSWORD}@db:5432/audit"),
        &format!("rediss://default:{REDIS_PASSWORD}@cache:6379"),
        16,
    );
    let shown = format!("{conns:?}");
    assert!(
        !shown.contains(PG_PASSWORD) && !shown.contains(REDIS_PASSWORD),
        "{shown}"
    );
    assert!(
        shown.contains("db:5432/audit") && shown.contains("cache:6379"),
        "{shown}"
    );
}
