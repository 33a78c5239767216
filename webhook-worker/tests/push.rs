//! The binary runs mobile push when FCM is configured: a real session with
//! two registered devices, a real low-time warning, and the local FCM
//! stand-in of the push crate's tests. Each push reaches only the token of
//! the participant whose turn it is; the push metrics are on `/metrics`.

mod common;
#[path = "../../push/tests/common/mod.rs"]
mod fake_fcm;

use common::*;
use fake_fcm::{sent, Fake};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use synckairos_core::devices::{DeviceOp, Platform, Registration};
use synckairos_core::script::CallOptions;
use synckairos_core::{Command as Cmd, Request};
use synckairos_engine::fixtures::{body, create, uuid};
use synckairos_testkit::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_pushes_your_turn_and_low_time_to_the_right_device() {
    let s = stack().await;
    let fake = Fake::start(3600).await;
    let account = fake.account_file("webhook-worker-bin");

    // Two players, 60 s each, a 59.5 s warning: white's warning is due half a
    // second after the start.
    let sid = uuid(0xf00d);
    let mut b = body(&sid, "per_participant", 2, 60_000);
    b["low_time_warning_ms"] = 59_500.into();
    let opts = CallOptions::default();
    s.engine.execute(&create(&b).unwrap(), &opts).await.unwrap();
    let (white, black) = (uuid(0xa000), uuid(0xa001));
    for (pid, token) in [(&white, "token-white"), (&black, "token-black")] {
        let op = DeviceOp::Register {
            session_id: sid.clone(),
            registration: Registration {
                participant_id: pid.clone(),
                token: token.into(),
                platform: Platform::Android,
            },
        };
        s.engine.devices(&op, None).await.unwrap().unwrap();
    }

    let bin = env!("CARGO_BIN_EXE_webhook-worker");
    let (port, metrics_port) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("wh-push-{}.log", std::process::id()));
    let mut child = Command::new(bin)
        .arg("run")
        .env("DATABASE_URL", s.db.url())
        .env("REDIS_URL", s.redis.url())
        .env("SHARDS", SHARDS.to_string())
        .env("WEBHOOK_ENDPOINTS", "[]")
        .env("FCM_SERVICE_ACCOUNT_FILE", &account)
        .env("FCM_SEND_URL", fake.send_url())
        .env("PUSH_BLOCK_MS", "200")
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_ready(port, &log).await;

    // The start: white's turn. Half a second later the scheduler would fire
    // the warning; here the test is the scheduler.
    s.engine
        .execute(&Request::new(&sid, Cmd::Start), &opts)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.engine
        .execute(&Request::new(&sid, Cmd::Expire), &opts)
        .await
        .unwrap();
    // The switch: black's turn.
    let switch = Cmd::Switch {
        next_participant_id: None,
    };
    s.engine
        .execute(&Request::new(&sid, switch), &opts)
        .await
        .unwrap();

    until(Duration::from_secs(30), "three pushes", || async {
        fake.sends().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = sent(&fake);
    let want: Vec<(String, String, String)> = [
        ("token-white", "your_turn", "2"),
        ("token-white", "low_time", "2"),
        ("token-black", "your_turn", "3"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);

    let m = http_get(metrics_port, "/metrics").await;
    assert!(
        m.contains("synckairos_push_sent_total{result=\"sent\"} 3"),
        "{m}"
    );
    assert!(m.contains("synckairos_webhook_dead_letters"), "{m}");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
