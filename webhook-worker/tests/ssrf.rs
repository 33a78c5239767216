//! The SSRF guard: with it on, private and loopback targets (literal, or a
//! name resolving to one) are refused without a connection; a redirect is
//! never followed, guard on or off.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A TCP listener on 127.0.0.1 that only counts the connections it gets.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, n)
}

async fn dead_letters(s: &Stack) -> Vec<serde_json::Value> {
    let conn = synckairos_webhook_worker::redis(&s.redis.url())
        .await
        .unwrap();
    synckairos_webhook_worker::dlq::list(&conn, None, 100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.to_json())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_without_a_connection() {
    let s = stack().await;
    let (port, connections) = counting_listener().await;
    let targets = [
        ("literal10", "https://10.0.0.1/hook".to_string()),
        ("loopback", format!("https://127.0.0.1:{port}/")),
        ("mapped", format!("https://[::ffff:127.0.0.1]:{port}/")),
        ("name", format!("https://localhost:{port}/")),
    ];
    let eps: Vec<String> = targets
        .iter()
        .map(|(id, url)| endpoint(id, url, &[SECRET_A], ALL_EVENTS))
        .collect();
    // The endpoints are read with the guard off (the configuration check
    // would refuse the literals at start); the worker runs with it on, so
    // each attempt meets the guard.
    let w = s
        .worker("guard", &format!("[{}]", eps.join(",")), |c| {
            c.allow_local = false;
            c.retry_schedule = "0,20ms".into();
        })
        .await;
    s.play(1, 1, 0).await; // one session_completed
    until(Duration::from_secs(30), "4 dead letters", || async {
        s.dead_len().await == 4
    })
    .await;
    for d in dead_letters(&s).await {
        let err = d["last_error"].as_str().unwrap();
        assert!(err.contains("refused by the SSRF guard"), "{d}");
        assert!(d["last_status"].is_null(), "{d}");
        assert_eq!(d["attempts"], 2);
        println!("{}: {err}", d["endpoint"]);
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a refused target was connected to"
    );
    let m = http_get(w.metrics_port, "/metrics").await;
    for (id, _) in &targets {
        assert!(
            m.contains(&format!(
                "synckairos_webhook_deliveries_total{{endpoint=\"{id}\",result=\"failed\"}} 1"
            )),
            "{m}"
        );
        assert!(m.contains(&format!(
            "synckairos_webhook_deliveries_total{{endpoint=\"{id}\",result=\"dead\"}} 1"
        )));
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_attempt_and_is_not_followed() {
    let s = stack().await;
    let inner = Receiver::start(|_| Answer::Ok).await;
    let to = inner.url();
    let outer = Receiver::start(move |_| Answer::Redirect(to.clone())).await;
    let eps = format!(
        "[{}]",
        endpoint("bouncer", &outer.url(), &[SECRET_A], ALL_EVENTS)
    );
    // Local targets allowed (the receivers are on 127.0.0.1): redirects are
    // refused all the same.
    let w = s
        .worker("redir", &eps, |c| c.retry_schedule = "0".into())
        .await;
    s.play(1, 1, 0).await;
    until(Duration::from_secs(30), "a dead letter", || async {
        s.dead_len().await == 1
    })
    .await;
    let d = &dead_letters(&s).await[0];
    assert_eq!(d["last_status"], 302);
    let err = d["last_error"].as_str().unwrap();
    assert!(
        err.contains("redirect") && err.contains(&inner.url()),
        "{err}"
    );
    assert_eq!(outer.hits().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(inner.hits().is_empty(), "the redirect was followed");
    w.shutdown().await;
}
