//! HTTPS: the worker speaks TLS (rustls) and verifies the endpoint's
//! certificate against the web PKI roots: a self-signed one is refused.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_failed_attempt() {
    synckairos_testkit::require_binary("openssl");
    let dir = std::env::temp_dir().join(format!("sk-wh-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(ok.success(), "openssl could not make a certificate");
    let port = synckairos_testkit::free_port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    until(
        Duration::from_secs(10),
        "the TLS server listens",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;

    let s = stack().await;
    let eps = format!(
        "[{}]",
        endpoint(
            "tls",
            &format!("https://127.0.0.1:{port}/hook"),
            &[SECRET_A],
            ALL_EVENTS
        )
    );
    let w = s
        .worker("tls", &eps, |c| c.retry_schedule = "0".into())
        .await;
    s.play(1, 1, 0).await;
    until(Duration::from_secs(30), "a dead letter", || async {
        s.dead_len().await == 1
    })
    .await;
    let conn = synckairos_webhook_worker::redis(&s.redis.url())
        .await
        .unwrap();
    let d = synckairos_webhook_worker::dlq::list(&conn, None, 1)
        .await
        .unwrap()[0]
        .to_json();
    let err = d["last_error"].as_str().unwrap();
    println!("{err}");
    assert!(err.contains("certificate"), "{err}");
    w.shutdown().await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
