//! The FCM client against a local server that speaks Google's OAuth token
//! endpoint and FCM HTTP v1's send endpoint as documented: every request
//! byte for byte (URL, method, headers, the form, the JWT with its
//! signature, the message), token caching and refresh, and the errors.

mod common;

use common::{fcm_error, Fake, EMAIL, KEY_ID, PROJECT, PUBLIC_KEY};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use synckairos_push::fcm::{message_body, GrantClaims, Outcome, Push, PushKind, SCOPE};
use synckairos_push::metrics::SendResult;
use synckairos_push::Metrics;
use tokio::time::Instant;

fn push(token: &str) -> Push {
    Push {
        token: token.into(),
        kind: PushKind::YourTurn,
        session_id: "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11".into(),
        version: 3,
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

const FORM_PREFIX: &str =
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";

/// The token request, byte for byte, and its JWT: header, signature and
/// every claim.
fn check_token_request(fake: &Fake, r: &common::Recorded) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, "/token");
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.header("authorization"), None);
    let jwt = r
        .text()
        .strip_prefix(FORM_PREFIX)
        .unwrap_or_else(|| panic!("form {:?}", r.text()));
    assert!(
        jwt.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
        "the assertion needs no form encoding: {jwt}"
    );
    // The header, as JSON.
    let header_b64 = jwt.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(&base64_url(header_b64)).unwrap();
    assert_eq!(
        header,
        serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": KEY_ID})
    );
    // The signature, with the public key; then every claim.
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[fake.token_uri()]);
    v.set_issuer(&[EMAIL]);
    v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
    let claims = jsonwebtoken::decode::<GrantClaims>(jwt, &key, &v)
        .expect("signed by the service account's key")
        .claims;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(claims.iat <= now && claims.iat + 30 >= now, "{claims:?}");
    assert_eq!(
        claims,
        GrantClaims {
            iss: EMAIL.into(),
            scope: SCOPE.into(),
            aud: fake.token_uri(),
            iat: claims.iat,
            exp: claims.iat + 3600,
        }
    );
    // Nothing else in the payload.
    let payload: serde_json::Value =
        serde_json::from_slice(&base64_url(jwt.split('.').nth(1).unwrap())).unwrap();
    assert_eq!(payload.as_object().unwrap().len(), 5, "{payload}");
}

fn base64_url(s: &str) -> Vec<u8> {
    // A small decoder: the test must not trust the code under test.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = alphabet.iter().position(|&a| a == c).expect("base64url") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// The send request, byte for byte.
fn check_send_request(r: &common::Recorded, access_token: &str, push: &Push) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, format!("/v1/projects/{PROJECT}/messages:send"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {access_token}").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let expected = serde_json::json!({"message": {
        "token": push.token,
        "notification": {"title": "Your turn", "body": "Your clock is running."},
        "data": {"session_id": push.session_id, "version": push.version.to_string(),
            "type": "your_turn"},
        "android": {"priority": "high", "ttl": "60s"},
        "apns": {"headers": {"apns-priority": "10"}}}});
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, expected);
    assert_eq!(r.text(), message_body(push, 60).to_string());
}

#[tokio::test]
async fn every_request_byte_for_byte_and_one_token_for_many_sends() {
    let fake = Fake::start(3600).await;
    let metrics = Arc::new(Metrics::new());
    let client = fake.client(metrics.clone());
    assert_eq!(
        client.send_url(),
        format!("http://{}/v1/projects/{PROJECT}/messages:send", fake.addr)
    );
    for i in 0..5 {
        let p = push(&format!("device-token-{i}"));
        assert_eq!(client.send(&p, 60, soon()).await, Outcome::Sent);
    }
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 6, "one token request, five sends");
    check_token_request(&fake, &reqs[0]);
    for (i, r) in reqs[1..].iter().enumerate() {
        check_send_request(r, "ya29.token-1", &push(&format!("device-token-{i}")));
    }
    assert_eq!(metrics.token_refreshes_total(), 1);
    assert_eq!(metrics.sent_total(SendResult::Sent), 5);
    assert!(metrics
        .render()
        .contains("synckairos_push_send_seconds_count 5\n"));
}

#[tokio::test]
async fn a_token_near_its_expiry_is_refreshed() {
    // Valid for exactly the refresh margin: stale at once.
    let fake = Fake::start(300).await;
    let metrics = Arc::new(Metrics::new());
    let client = fake.client(metrics.clone());
    client.send(&push("a"), 60, soon()).await;
    client.send(&push("b"), 60, soon()).await;
    let reqs = fake.requests();
    let kinds: Vec<bool> = reqs.iter().map(|r| r.is_token()).collect();
    assert_eq!(kinds, [true, false, true, false]);
    check_token_request(&fake, &reqs[2]);
    check_send_request(&reqs[1], "ya29.token-1", &push("a"));
    check_send_request(&reqs[3], "ya29.token-2", &push("b"));
    assert_eq!(metrics.token_refreshes_total(), 2);
    // Concurrent callers share one refresh.
    let fake = Fake::start(3600).await;
    let client = Arc::new(fake.client(Arc::new(Metrics::new())));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.send(&push(&format!("t{i}")), 60, soon()).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Outcome::Sent);
    }
    assert_eq!(fake.requests().iter().filter(|r| r.is_token()).count(), 1);
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries_once() {
    let fake = Fake::start(3600).await;
    let metrics = Arc::new(Metrics::new());
    let client = fake.client(metrics.clone());
    let unauthenticated = serde_json::json!({"error": {"code": 401,
        "message": "Request had invalid authentication credentials.",
        "status": "UNAUTHENTICATED"}})
    .to_string();
    fake.reply_next(vec![(401, vec![], unauthenticated.clone())]);
    assert_eq!(client.send(&push("a"), 60, soon()).await, Outcome::Sent);
    let reqs = fake.requests();
    let kinds: Vec<bool> = reqs.iter().map(|r| r.is_token()).collect();
    assert_eq!(kinds, [true, false, true, false]);
    check_send_request(&reqs[1], "ya29.token-1", &push("a"));
    check_token_request(&fake, &reqs[2]);
    check_send_request(&reqs[3], "ya29.token-2", &push("a"));
    // Refused again after the refresh: failed, no third attempt.
    fake.reply_next(vec![
        (401, vec![], unauthenticated.clone()),
        (401, vec![], unauthenticated),
    ]);
    assert!(matches!(
        client.send(&push("b"), 60, soon()).await,
        Outcome::Failed(_)
    ));
    assert_eq!(fake.requests().len(), 4 + 3);
    assert_eq!(metrics.sent_total(SendResult::Failed), 1);
}

#[tokio::test]
async fn dead_tokens_transient_errors_and_the_max_age() {
    let fake = Fake::start(3600).await;
    let metrics = Arc::new(Metrics::new());
    let client = fake.client(metrics.clone());
    fake.reply_next(vec![(
        404,
        vec![],
        fcm_error(404, "NOT_FOUND", "UNREGISTERED"),
    )]);
    assert_eq!(
        client.send(&push("gone"), 60, soon()).await,
        Outcome::Unregistered
    );
    fake.reply_next(vec![(
        400,
        vec![],
        fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    )]);
    assert_eq!(
        client.send(&push("malformed"), 60, soon()).await,
        Outcome::Unregistered
    );
    // 429 with Retry-After: waits that long, then succeeds.
    fake.reply_next(vec![(
        429,
        vec![("retry-after", "1".into())],
        fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
    )]);
    let t = Instant::now();
    assert_eq!(client.send(&push("busy"), 60, soon()).await, Outcome::Sent);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    // 503 until the push's max age: given up, not later than that.
    fake.reply_next((0..100).map(|_| (503, vec![], "{}".to_string())).collect());
    let t = Instant::now();
    let outcome = client
        .send(
            &push("down"),
            60,
            Instant::now() + Duration::from_millis(1500),
        )
        .await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1600),
        "{:?}",
        t.elapsed()
    );
    let tries = fake
        .sends()
        .iter()
        .filter(|r| r.text().contains("\"down\""))
        .count();
    assert!(tries >= 2, "{tries}");
    assert_eq!(metrics.sent_total(SendResult::Unregistered), 2);
    assert_eq!(metrics.sent_total(SendResult::Sent), 1);
    assert_eq!(metrics.sent_total(SendResult::Failed), 1);
}
