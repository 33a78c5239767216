//! The HTTP flow over a canned store: what reaches the store, what the
//! client gets, what the log gets. The transports' own tests cover their
//! stores (Upstash replies, Redis) and the end-to-end suite both together.

use super::*;
use futures::executor::block_on;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use synckairos_core::{record, script};

const SID: &str = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11";

/// Answers every script call with `reply` (the raw parts a script returns),
/// reads with the record in `reply[1]`, and counts calls.
struct Canned {
    reply: Result<Vec<String>, StoreError>,
    calls: Cell<u32>,
    devices_seen: RefCell<Vec<synckairos_core::devices::DeviceOp>>,
}

impl Canned {
    fn new(reply: Result<Vec<String>, StoreError>) -> Canned {
        Canned {
            reply,
            calls: Cell::new(0),
            devices_seen: RefCell::new(Vec::new()),
        }
    }

    fn answer(&self) -> Result<Vec<String>, StoreError> {
        self.calls.set(self.calls.get() + 1);
        self.reply.clone()
    }
}

impl SessionStore for Canned {
    async fn execute(&self, req: &Request, _: &CallOptions) -> Result<ScriptReply, StoreError> {
        let parts = self.answer()?;
        script::parse_reply(&parts, &req.session_id)
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    async fn get(&self, _session_id: &str) -> Result<Option<SyncState>, StoreError> {
        let parts = self.answer()?;
        parts
            .get(1)
            .map(|r| record::decode(r).map_err(|e| StoreError::Internal(e.to_string())))
            .transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.answer().map(drop)
    }

    async fn time_ms(&self) -> Result<i64, StoreError> {
        self.answer().map(|_| 1_795_455_546_123)
    }

    async fn devices(
        &self,
        op: &synckairos_core::devices::DeviceOp,
    ) -> Result<Result<synckairos_core::devices::DeviceReply, DomainError>, StoreError> {
        self.devices_seen.borrow_mut().push(op.clone());
        let parts = self.answer()?;
        synckairos_core::devices::parse_reply(&parts, op.session_id())
            .map_err(|e| StoreError::Internal(e.to_string()))
    }
}

fn down() -> StoreError {
    StoreError::Unavailable {
        reason: "redis unreachable".into(),
        cause: "ECONNREFUSED 127.0.0.1:1".into(),
    }
}

fn config(vars: &[(&str, &str)]) -> ApiConfig {
    ApiConfig::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .or_else(|| (name == "AUTH_MODE").then(|| "disabled".into()))
    })
    .expect("a valid config")
}

fn api(reply: Result<Vec<String>, StoreError>) -> Api<Canned> {
    Api::new(config(&[]), Canned::new(reply))
}

/// The response without its CORS headers (tested on their own below).
fn without_cors(mut h: Handled) -> Handled {
    h.response
        .headers
        .retain(|(k, _)| !k.starts_with("access-control-") && *k != "vary");
    h
}

fn create_body() -> String {
    serde_json::json!({"session_id": SID, "sync_mode": "per_participant", "total_time_ms": 60000,
        "participants": [
            {"participant_id": "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b12", "participant_index": 0, "total_time_ms": 60000},
            {"participant_id": "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b13", "participant_index": 1, "total_time_ms": 60000}]})
    .to_string()
}

/// The record of a freshly created session, as the script would store it.
fn record() -> String {
    let body: Value = serde_json::from_str(&create_body()).unwrap();
    let spec = synckairos_core::validate::validate_create(&body).unwrap();
    record::encode(&synckairos_core::model::initial_state(
        &spec,
        1_795_455_546_123,
    ))
}

/// A script reply: its header and, for a state, the record.
fn script_reply(header: &str, record: Option<&str>) -> Result<Vec<String>, StoreError> {
    let mut parts = vec![header.to_string()];
    parts.extend(record.map(str::to_string));
    Ok(parts)
}

fn request<'a>(method: &'a str, path: &'a str, ip: Option<&'a str>) -> Incoming<'a> {
    Incoming {
        method,
        path,
        client_ip: ip,
        local: true,
        ..Incoming::default()
    }
}

fn get(api: &Api<Canned>, path: &str) -> Handled {
    without_cors(block_on(
        api.handle(&request("GET", path, None), &Unlimited),
    ))
}

fn post(api: &Api<Canned>, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Handled {
    let h = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    without_cors(block_on(api.handle(
        &Incoming {
            method: "POST",
            path,
            authorization: h("authorization"),
            if_match: h("if-match"),
            idempotency_key: h("idempotency-key"),
            body: Body::Bytes(body),
            now_ms: 1_795_455_546_000,
            local: true,
            ..Incoming::default()
        },
        &Unlimited,
    )))
}

#[test]
fn health_needs_nothing() {
    let a: Api<Canned> = Api::misconfigured("UPSTASH_REDIS_REST_URL is not set");
    let h = get(&a, "/health");
    assert_eq!(
        h.response,
        ApiResponse {
            status: 200,
            body: r#"{"status":"ok"}"#.into(),
            headers: vec![],
        }
    );
    let r = get(&a, "/ready");
    assert_eq!(r.response.status, 503);
    assert_eq!(
        r.response.body,
        r#"{"status":"not_ready","error":"misconfigured"}"#
    );
    assert!(r
        .error
        .unwrap()
        .contains("UPSTASH_REDIS_REST_URL is not set"));
    assert_eq!(get(&a, "/v1/time").response.status, 503);
    assert_eq!(post(&a, "/v1/sessions", b"{}", &[]).response.status, 503);
}

#[test]
fn ready_pings() {
    let ok = get(&api(Ok(vec![])), "/ready");
    assert_eq!(
        ok.response,
        ApiResponse {
            status: 200,
            body: r#"{"status":"ready"}"#.into(),
            headers: vec![],
        }
    );
    let down = get(&api(Err(down())), "/ready");
    assert_eq!(down.response.status, 503);
    assert_eq!(
        down.response.body,
        r#"{"status":"not_ready","error":"redis unreachable"}"#
    );
    assert!(down.error.unwrap().contains("ECONNREFUSED"));
}

#[test]
fn time_is_redis_time() {
    let h = get(&api(Ok(vec![])), "/v1/time");
    assert_eq!(
        h.response.body,
        r#"{"timestamp_ms":1795455546123,"server_version":"2.0.0","drift_tolerance_ms":50}"#
    );
    let h = get(
        &api(Err(StoreError::Internal("HTTP 401 Unauthorized".into()))),
        "/v1/time",
    );
    assert_eq!(h.response.status, 500);
    assert!(!h.response.body.contains("Unauthorized"));
    assert!(h.error.unwrap().contains("401"));
    assert_eq!(get(&api(Err(down())), "/v1/time").response.status, 503);
}

#[test]
fn unknown_routes() {
    let a = api(Ok(vec![]));
    for (method, path) in [("GET", "/"), ("GET", "/nope")] {
        let h = without_cors(block_on(a.handle(&request(method, path, None), &Unlimited)));
        assert_eq!(h.response.status, 404, "{method} {path}");
        assert!(h.response.body.contains(r#""code":"NOT_FOUND""#));
    }
    // A known path with another method: 405 and the methods it takes.
    for (method, path, allow) in [
        ("POST", "/health", "GET"),
        ("PUT", "/v1/sessions", "POST"),
        (
            "POST",
            &format!("/v1/sessions/{SID}") as &str,
            "GET, DELETE",
        ),
        ("GET", &format!("/v1/sessions/{SID}/switch") as &str, "POST"),
    ] {
        let h = without_cors(block_on(a.handle(&request(method, path, None), &Unlimited)));
        assert_eq!(h.response.status, 405, "{method} {path}");
        assert!(h.response.body.contains(r#""code":"METHOD_NOT_ALLOWED""#));
        assert_eq!(
            h.response.headers,
            vec![("allow", allow.to_string())],
            "{method} {path}"
        );
    }
    assert_eq!(a.store().unwrap().calls.get(), 0);
}

#[test]
fn reads_are_one_get() {
    let a = api(script_reply("", Some(&record())));
    let h = get(&a, &format!("/v1/sessions/{SID}"));
    assert_eq!(h.response.status, 200);
    assert!(h.response.body.starts_with(&format!(
        r#"{{"data":{{"session_id":"{SID}","sync_mode":"per_participant","status":"pending","version":1,"#
    )));
    assert_eq!(a.store().unwrap().calls.get(), 1);
    let h = get(&api(script_reply("", None)), &format!("/v1/sessions/{SID}"));
    assert_eq!(h.response.status, 404);
    assert_eq!(
        h.response.body,
        format!(
            r#"{{"error":{{"code":"SESSION_NOT_FOUND","message":"Session {SID} not found"}}}}"#
        )
    );
    let h = get(&api(Err(down())), &format!("/v1/sessions/{SID}"));
    assert_eq!(
        (h.response.status, h.response.body.contains("ECONNREFUSED")),
        (503, false)
    );
}

#[test]
fn create_answers_201_with_the_state() {
    let a = api(script_reply(
        r#"{"replayed":false,"kind":"state","expired_participant_id":null}"#,
        Some(&record()),
    ));
    let h = post(&a, "/v1/sessions", create_body().as_bytes(), &[]);
    assert_eq!(h.response.status, 201);
    assert!(h.response.body.starts_with(&format!(
        r#"{{"data":{{"session_id":"{SID}","sync_mode":"per_participant","status":"pending","version":1,"#
    )));
    assert!(h.response.headers.is_empty());
}

#[test]
fn switch_answers_the_switch_shape_with_rate_and_replay_headers() {
    let header = r#"{"replayed":true,"rate":{"limit":10,"remaining":7,"reset_seconds":1},"kind":"state","expired_participant_id":null}"#;
    let a = api(script_reply(header, Some(&record())));
    let h = post(
        &a,
        &format!("/v1/sessions/{SID}/switch"),
        b"",
        &[("idempotency-key", "k1")],
    );
    assert_eq!(h.response.status, 200);
    assert!(h.response.body.starts_with(&format!(
        r#"{{"data":{{"session_id":"{SID}","active_participant_id":null,"cycle_started_at":null,"participants":["#
    )));
    assert!(h.response.body.ends_with(
        r#""status":"pending","version":1,"server_time_ms":1795455546123,"expires_at":null}}"#
    ));
    for (k, v) in [
        ("ratelimit-policy", "10;w=1"),
        ("ratelimit-limit", "10"),
        ("ratelimit-remaining", "7"),
        ("ratelimit-reset", "1"),
        ("idempotent-replayed", "true"),
    ] {
        assert!(h.response.headers.contains(&(k, v.to_string())), "{k}");
    }
}

#[test]
fn domain_refusals_become_their_status_and_headers() {
    let limited = r#"{"replayed":false,"rate":{"limit":10,"remaining":0,"reset_seconds":1},"kind":"error","code":"RATE_LIMIT_EXCEEDED","retry_after_seconds":1}"#;
    let h = post(
        &api(script_reply(limited, None)),
        &format!("/v1/sessions/{SID}/switch"),
        b"{}",
        &[],
    );
    assert_eq!(h.response.status, 429);
    assert!(h.response.headers.contains(&("retry-after", "1".into())));
    assert!(h
        .response
        .headers
        .contains(&("ratelimit-remaining", "0".into())));
    let missing = r#"{"replayed":false,"kind":"error","code":"SESSION_NOT_FOUND"}"#;
    let h = post(
        &api(script_reply(missing, None)),
        &format!("/v1/sessions/{SID}/pause"),
        b"",
        &[],
    );
    assert_eq!(h.response.status, 404);
    let exists = r#"{"replayed":false,"kind":"error","code":"SESSION_EXISTS"}"#;
    let h = post(
        &api(script_reply(exists, None)),
        "/v1/sessions",
        create_body().as_bytes(),
        &[],
    );
    assert_eq!((h.response.status, h.error), (409, None));
    let h = post(
        &api(Ok(vec!["not json".into()])),
        &format!("/v1/sessions/{SID}/pause"),
        b"",
        &[],
    );
    assert_eq!(h.response.status, 500);
    assert!(h.error.unwrap().contains("not json"));
    assert!(!h.response.body.contains("not json"));
}

/// Path, body, headers, expected status, expected code.
type Case<'a> = (&'a str, &'a [u8], &'a [(&'a str, &'a str)], u16, &'a str);

#[test]
fn bad_requests_never_reach_the_store() {
    let a = api(Err(StoreError::Internal("must not be called".into())));
    let cases: [Case; 6] = [
        ("/v1/sessions", b"{nope", &[], 400, "INVALID_JSON"),
        ("/v1/sessions", b"{}", &[], 400, "VALIDATION_ERROR"),
        (
            "/v1/sessions/not-a-uuid/start",
            b"",
            &[],
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1/sessions/0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11/switch",
            b"{\"next_participant_id\":5}",
            &[],
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1/sessions/0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11/pause",
            b"",
            &[("if-match", "abc")],
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1/sessions/0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11/pause",
            b"",
            &[("idempotency-key", "has space")],
            400,
            "VALIDATION_ERROR",
        ),
    ];
    for (path, body, headers, status, code) in cases {
        let h = post(&a, path, body, headers);
        assert_eq!(h.response.status, status, "{path}");
        assert!(
            h.response.body.contains(code),
            "{path}: {}",
            h.response.body
        );
    }
    let big = vec![b' '; wire::MAX_BODY_BYTES + 1];
    assert_eq!(post(&a, "/v1/sessions", &big, &[]).response.status, 413);
    for (body, status, code) in [
        (Body::TooLarge, 413, "PAYLOAD_TOO_LARGE"),
        (Body::Unreadable, 400, "INVALID_BODY"),
    ] {
        let h = block_on(a.handle(
            &Incoming {
                method: "POST",
                path: &format!("/v1/sessions/{SID}/switch"),
                body,
                local: true,
                ..Incoming::default()
            },
            &Unlimited,
        ));
        assert_eq!(h.response.status, status);
        assert!(h.response.body.contains(code), "{}", h.response.body);
        assert!(h
            .response
            .headers
            .contains(&("access-control-allow-origin", "*".into())));
    }
    assert_eq!(a.store().unwrap().calls.get(), 0);
}

#[test]
fn disabled_auth_serves_only_loopback() {
    let a = api(script_reply("", Some(&record())));
    let path = format!("/v1/sessions/{SID}");
    let remote = block_on(a.handle(
        &Incoming {
            method: "GET",
            path: &path,
            ..Incoming::default()
        },
        &Unlimited,
    ));
    assert_eq!(remote.response.status, 500);
    assert!(remote.response.body.contains("AUTH_NOT_CONFIGURED"));
    assert_eq!(a.store().unwrap().calls.get(), 0);
    assert_eq!(
        get(&a, &path).response.status,
        200,
        "over loopback it is open"
    );
}

#[test]
fn auth_fails_closed_and_checks_roles() {
    let with = |vars: &[(&str, &str)]| {
        let config = ApiConfig::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        Api::new(
            config,
            Canned::new(Err(StoreError::Internal("not called".into()))),
        )
    };
    let path = format!("/v1/sessions/{SID}/pause");
    let h = post(&with(&[]), &path, b"", &[]);
    assert_eq!(
        (
            h.response.status,
            h.response.body.contains("AUTH_NOT_CONFIGURED")
        ),
        (500, true)
    );
    let a = with(&[("JWT_SECRET", "api-test-secret-of-at-least-32-bytes")]);
    assert_eq!(post(&a, &path, b"", &[]).response.status, 401);
    assert_eq!(
        post(&a, &path, b"", &[("authorization", "Bearer x.y.z")])
            .response
            .status,
        401
    );
    // A well-signed viewer token may not pause: 403 before any store call.
    let claims = serde_json::json!({"sub": "v", "role": "viewer", "exp": 4_102_444_800u64});
    let viewer = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"api-test-secret-of-at-least-32-bytes"),
    )
    .unwrap();
    let h = post(
        &a,
        &path,
        b"",
        &[("authorization", &format!("Bearer {viewer}"))],
    );
    assert_eq!(h.response.status, 403, "{}", h.response.body);
    assert_eq!(a.store().unwrap().calls.get(), 0);
}

/// Allows `n` requests, then refuses; or always fails.
struct Counting {
    left: Cell<u32>,
    keys: RefCell<Vec<String>>,
    broken: bool,
}

impl Counting {
    fn new(n: u32, broken: bool) -> Counting {
        Counting {
            left: n.into(),
            keys: Default::default(),
            broken,
        }
    }
}

impl IpLimiter for Counting {
    async fn allow(&self, key: &str) -> Result<bool, String> {
        self.keys.borrow_mut().push(key.to_string());
        if self.broken {
            return Err("binding threw".into());
        }
        let left = self.left.get();
        self.left.set(left.saturating_sub(1));
        Ok(left > 0)
    }
}

#[test]
fn the_general_limit_counts_v1_requests_per_client_ip() {
    let a = api(Ok(vec![]));
    let limiter = Counting::new(1, false);
    let ok = block_on(a.handle(&request("GET", "/v1/time", Some("203.0.113.7")), &limiter));
    assert_eq!(ok.response.status, 200);
    let refused = block_on(a.handle(&request("GET", "/v1/time", Some("203.0.113.7")), &limiter));
    assert_eq!(refused.response.status, 429);
    assert!(refused
        .response
        .body
        .contains(r#""code":"RATE_LIMIT_EXCEEDED""#));
    assert!(refused
        .response
        .body
        .contains(r#""retry_after_seconds":60"#));
    for (k, v) in [
        ("retry-after", "60"),
        ("ratelimit-policy", "600;w=60"),
        ("ratelimit-limit", "600"),
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "60"),
    ] {
        assert!(
            refused.response.headers.contains(&(k, v.to_string())),
            "{k}"
        );
    }
    // Probes and preflights are never counted; a request without a client
    // address shares the "unknown" bucket.
    for (m, p) in [
        ("GET", "/health"),
        ("GET", "/ready"),
        ("OPTIONS", "/v1/sessions"),
    ] {
        assert_ne!(
            block_on(a.handle(&request(m, p, None), &limiter))
                .response
                .status,
            429
        );
    }
    block_on(a.handle(&request("GET", "/v1/nope", None), &limiter));
    assert_eq!(
        *limiter.keys.borrow(),
        ["203.0.113.7", "203.0.113.7", "unknown"]
    );
}

#[test]
fn ip_rate_limit_zero_turns_the_general_limit_off() {
    let a = Api::new(config(&[("IP_RATE_LIMIT", "0")]), Canned::new(Ok(vec![])));
    let limiter = Counting::new(0, false);
    let h = block_on(a.handle(&request("GET", "/v1/time", None), &limiter));
    assert_eq!(h.response.status, 200);
    assert!(limiter.keys.borrow().is_empty());
}

#[test]
fn a_broken_limiter_lets_requests_through_and_says_so() {
    let a = api(Ok(vec![]));
    let h = block_on(a.handle(&request("GET", "/v1/time", None), &Counting::new(0, true)));
    assert_eq!(h.response.status, 200);
    assert!(h.error.unwrap().contains("binding threw"));
}

#[test]
fn cors_headers() {
    let header = |h: &Handled, name: &str| {
        h.response
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let any = api(Ok(vec![]));
    let pre = block_on(any.handle(&request("OPTIONS", "/v1/sessions", None), &Unlimited));
    assert_eq!(pre.response.status, 204);
    assert_eq!(
        header(&pre, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(header(&pre, "access-control-allow-headers")
        .unwrap()
        .contains("idempotency-key"));
    let plain = block_on(any.handle(&request("GET", "/health", None), &Unlimited));
    assert_eq!(
        header(&plain, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(header(&plain, "access-control-expose-headers")
        .unwrap()
        .contains("ratelimit-remaining"));
    assert_eq!(header(&plain, "access-control-allow-methods"), None);

    let listed = Api::new(
        config(&[("CORS_ALLOWED_ORIGINS", "https://app.example")]),
        Canned::new(Ok(vec![])),
    );
    let from = |origin| {
        block_on(listed.handle(
            &Incoming {
                method: "GET",
                path: "/health",
                origin: Some(origin),
                local: true,
                ..Incoming::default()
            },
            &Unlimited,
        ))
    };
    let ok = from("https://app.example");
    assert_eq!(
        header(&ok, "access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(header(&ok, "vary").as_deref(), Some("origin"));
    let other = from("https://evil.example");
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    assert_eq!(
        other.response.status, 200,
        "CORS is the browser's to enforce"
    );
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"api-test-secret-of-at-least-32-bytes"),
    )
    .unwrap()
}

fn delete(api: &Api<Canned>, path: &str, authorization: Option<&str>) -> Handled {
    without_cors(block_on(api.handle(
        &Incoming {
            method: "DELETE",
            path,
            authorization,
            now_ms: 1_795_455_546_000,
            local: true,
            ..Incoming::default()
        },
        &Unlimited,
    )))
}

/// `POST …/devices` and `DELETE …/devices/:token`: validation, who may,
/// the one script call, and the reply, which never carries the token.
#[test]
fn devices_register_and_remove() {
    use synckairos_core::devices::{DeviceOp, Platform, Registration};
    const P1: &str = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b12";
    const P2: &str = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b13";
    let token = "fcm:APA91b-x_Y";
    let path = format!("/v1/sessions/{SID}/devices");
    let body = |pid: &str| {
        serde_json::json!({"participant_id": pid, "token": token, "platform": "android"})
            .to_string()
    };
    let registered = |created: bool| {
        script_reply(
            &format!(
                r#"{{"kind":"registered","created":{created},"expires_at_ms":1798047546123}}"#
            ),
            None,
        )
    };
    // New: 201; refreshed: 200; the body names no token.
    for (created, status) in [(true, 201), (false, 200)] {
        let a = api(registered(created));
        let h = post(&a, &path, body(&P1.to_uppercase()).as_bytes(), &[]);
        assert_eq!(h.response.status, status, "{}", h.response.body);
        assert_eq!(
            h.response.body,
            format!(
                r#"{{"data":{{"participant_id":"{P1}","platform":"android","expires_at":"2026-12-23T17:39:06.123Z"}}}}"#
            )
        );
        assert!(!h.response.body.contains(token));
        assert_eq!(
            a.store().unwrap().devices_seen.borrow().as_slice(),
            [DeviceOp::Register {
                session_id: SID.into(),
                registration: Registration {
                    participant_id: P1.into(),
                    token: token.into(),
                    platform: Platform::Android
                }
            }]
        );
    }
    // Refusals of the script.
    let a = api(script_reply(
        r#"{"kind":"error","code":"SESSION_NOT_FOUND"}"#,
        None,
    ));
    let h = post(&a, &path, body(P1).as_bytes(), &[]);
    assert_eq!(h.response.status, 404);
    assert!(h.response.body.contains("SESSION_NOT_FOUND"));
    let a = api(script_reply(
        &format!(r#"{{"kind":"error","code":"PARTICIPANT_NOT_FOUND","participant_id":"{P1}"}}"#),
        None,
    ));
    let h = post(&a, &path, body(P1).as_bytes(), &[]);
    assert_eq!(h.response.status, 400);
    assert!(h
        .response
        .body
        .contains(&format!("Participant {P1} not found in session")));
    // Validation: before any store call.
    let a = api(registered(true));
    let h = post(
        &a,
        &path,
        br#"{"participant_id":"x","token":"a b","platform":"fax"}"#,
        &[],
    );
    assert_eq!(h.response.status, 400);
    for field in ["participant_id", "token", "platform"] {
        assert!(h.response.body.contains(&format!(r#""field":"{field}""#)));
    }
    assert_eq!(a.store().unwrap().calls.get(), 0);

    // Remove: 204 (also when absent), the token percent-decoded.
    let a = api(script_reply(r#"{"kind":"removed","existed":false}"#, None));
    let h = delete(&a, &format!("{path}/fcm%3AAPA91b-x_Y"), None);
    assert_eq!(h.response.status, 204);
    assert_eq!(
        a.store().unwrap().devices_seen.borrow().as_slice(),
        [DeviceOp::Remove {
            session_id: SID.into(),
            token: token.into(),
            participant_id: None
        }]
    );
    let h = delete(&a, &format!("{path}/a%20b"), None);
    assert_eq!(h.response.status, 400);
    assert!(h.response.body.contains(r#""field":"token""#));
    let h = delete(&a, &format!("{path}/{}", "a".repeat(4097)), None);
    assert_eq!(h.response.status, 400);
    // Methods.
    let h = get(&a, &path);
    assert_eq!(h.response.status, 405);
    assert!(h.response.headers.contains(&("allow", "POST".into())));

    // Roles, with auth on: a participant registers and removes only its own
    // devices; a host anyone's; a viewer none.
    let secret = [("JWT_SECRET", "api-test-secret-of-at-least-32-bytes")];
    let with_auth = |reply| {
        let mut config = config(&secret);
        config.auth = synckairos_auth::AuthConfig::from_vars(|n: &str| {
            secret
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        Api::new(config, Canned::new(reply))
    };
    let bearer = |role: &str, sub: &str| {
        format!(
            "Bearer {}",
            jwt(serde_json::json!({"sub": sub, "role": role, "sid": SID, "exp": 4_102_444_800u64}))
        )
    };
    let a = with_auth(registered(true));
    let me = bearer("participant", &P1.to_uppercase());
    let h = post(&a, &path, body(P1).as_bytes(), &[("authorization", &me)]);
    assert_eq!(h.response.status, 201, "{}", h.response.body);
    let h = post(&a, &path, body(P2).as_bytes(), &[("authorization", &me)]);
    assert_eq!(h.response.status, 403);
    assert!(h.response.body.contains("only its own devices"));
    let viewer = bearer("viewer", P1);
    let h = post(
        &a,
        &path,
        body(P1).as_bytes(),
        &[("authorization", &viewer)],
    );
    assert_eq!(h.response.status, 403);
    let host = bearer("host", "h");
    let h = post(&a, &path, body(P2).as_bytes(), &[("authorization", &host)]);
    assert_eq!(h.response.status, 201);
    assert_eq!(a.store().unwrap().calls.get(), 2);

    let a = with_auth(script_reply(r#"{"kind":"removed","existed":true}"#, None));
    let h = delete(&a, &format!("{path}/{token}"), Some(&me));
    assert_eq!(h.response.status, 204);
    let h = delete(&a, &format!("{path}/{token}"), Some(&host));
    assert_eq!(h.response.status, 204);
    let h = delete(&a, &format!("{path}/{token}"), Some(&viewer));
    assert_eq!(h.response.status, 403);
    let seen = a.store().unwrap().devices_seen.borrow().clone();
    let filters: Vec<Option<String>> = seen
        .into_iter()
        .map(|op| match op {
            DeviceOp::Remove { participant_id, .. } => participant_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(filters, [Some(P1.to_string()), None]);
}
