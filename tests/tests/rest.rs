//! The REST API end to end, the same tests for both transports: HTTP into
//! the built worker under workerd, through upstash-local, into a real
//! redis-server; and HTTP into the native server on the same redis-server
//! kind. Each test is a function of the [`Transport`]; `both!` makes one
//! `#[tokio::test]` per transport of it.

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};
use synckairos_core::audit::AuditEvent;
use synckairos_core::keys::SessionKeys;
use synckairos_e2e::{token, uuid, Stack, Transport, SWITCH_LIMIT};

struct Api {
    http: Client,
    base: String,
    stack: Stack,
}

impl Api {
    fn new(t: Transport) -> Api {
        Api::with(t, &[])
    }

    fn with(t: Transport, env: &[(&str, &str)]) -> Api {
        let stack = Stack::start_with(t, env);
        Api {
            http: Client::new(),
            base: stack.base.clone(),
            stack,
        }
    }

    /// A request with a token and no extra headers or body.
    async fn send(&self, method: Method, path: &str, auth: &str) -> Response {
        self.call(method, path, Some(auth), &[], None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Response {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.expect("the server answers")
    }
}

fn admin() -> String {
    token("admin", "ops", None)
}

fn create_body(sid: &str, p1: &str, p2: &str) -> Value {
    json!({"session_id": sid, "sync_mode": "per_participant", "total_time_ms": 60000,
        "participants": [
            {"participant_id": p1, "participant_index": 0, "total_time_ms": 60000},
            {"participant_id": p2, "participant_index": 1, "total_time_ms": 60000}]})
}

async fn body(r: Response) -> Value {
    r.json().await.expect("JSON body")
}

async fn audit_types(api: &Api, sid: &str) -> Vec<String> {
    let keys = SessionKeys::new(sid, synckairos_core::keys::DEFAULT_SHARDS);
    let entries = api.stack.redis.stream_entries(&keys.audit);
    entries
        .iter()
        .map(|(_, f)| {
            AuditEvent::from_fields(f.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
        })
        .filter(|e| e.session_id == sid)
        .map(|e| e.event_type.as_str().to_string())
        .collect()
}

async fn a_session_lives_its_whole_life_over_http_and_every_command_is_audited(t: Transport) {
    let api = Api::new(t);
    let (sid, p1, p2) = (uuid(), uuid(), uuid());
    let t = admin();
    let r = api
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&t),
            &[],
            Some(create_body(&sid, &p1, &p2)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let created = body(r).await;
    assert_eq!(
        (
            created["data"]["status"].as_str(),
            created["data"]["version"].as_u64()
        ),
        (Some("pending"), Some(1))
    );

    let r = api
        .send(Method::POST, &format!("/v1/sessions/{sid}/start"), &t)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["data"]["active_participant_id"], json!(p1));

    let r = api
        .call(
            Method::POST,
            &format!("/v1/sessions/{sid}/switch"),
            Some(&t),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["ratelimit-limit"],
        SWITCH_LIMIT.to_string().as_str()
    );
    assert_eq!(
        r.headers()["ratelimit-policy"],
        format!("{SWITCH_LIMIT};w=1").as_str()
    );
    let switched = body(r).await["data"].clone();
    assert_eq!(switched["active_participant_id"], json!(p2));
    assert_eq!(switched["version"], json!(3));
    assert!(switched["expires_at"].is_string());

    for (action, status) in [
        ("pause", "paused"),
        ("resume", "running"),
        ("complete", "completed"),
    ] {
        let r = api
            .send(Method::POST, &format!("/v1/sessions/{sid}/{action}"), &t)
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{action}");
        assert_eq!(body(r).await["data"]["status"], json!(status));
    }
    let r = api
        .send(Method::GET, &format!("/v1/sessions/{sid}"), &t)
        .await;
    assert_eq!(body(r).await["data"]["version"], json!(6));
    let r = api
        .send(Method::POST, &format!("/v1/sessions/{sid}/pause"), &t)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(r).await["error"]["message"],
        json!(format!(
            "Session {sid} cannot be paused (current status: completed)"
        ))
    );

    let r = api
        .send(Method::DELETE, &format!("/v1/sessions/{sid}"), &t)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = api
        .send(Method::GET, &format!("/v1/sessions/{sid}"), &t)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(r).await["error"]["code"], json!("SESSION_NOT_FOUND"));
    assert_eq!(
        audit_types(&api, &sid).await,
        [
            "session_created",
            "session_started",
            "participant_switched",
            "session_paused",
            "session_resumed",
            "session_completed",
            "session_deleted"
        ]
    );
}

async fn roles_are_enforced(t: Transport) {
    let api = Api::new(t);
    let (sid, p1, p2) = (uuid(), uuid(), uuid());
    let path = |a: &str| format!("/v1/sessions/{sid}/{a}");
    assert_eq!(
        api.call(
            Method::POST,
            "/v1/sessions",
            None,
            &[],
            Some(create_body(&sid, &p1, &p2))
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED
    );
    let host = token("host", "h", Some(&sid));
    assert_eq!(
        api.call(
            Method::POST,
            "/v1/sessions",
            Some(&host),
            &[],
            Some(create_body(&sid, &p1, &p2))
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    let other_host = token("host", "h2", Some(&uuid()));
    assert_eq!(
        api.send(Method::POST, &path("start"), &other_host)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.send(Method::POST, &path("start"), &host).await.status(),
        StatusCode::OK
    );
    let viewer = token("viewer", "v", Some(&sid));
    assert_eq!(
        api.send(Method::GET, &format!("/v1/sessions/{sid}"), &viewer)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        api.send(Method::POST, &path("switch"), &viewer)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // A participant may end only its own turn.
    let second = token("participant", &p2, Some(&sid));
    let r = api.send(Method::POST, &path("switch"), &second).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(r).await["error"]["code"], json!("FORBIDDEN"));
    let first = token("participant", &p1, Some(&sid));
    assert_eq!(
        api.send(Method::POST, &path("switch"), &first)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        api.send(Method::POST, &path("switch"), &second)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        api.send(Method::POST, &path("pause"), &first)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

async fn limits_versions_and_retries(t: Transport) {
    let api = Api::new(t);
    let t = admin();
    let (sid, p1, p2) = (uuid(), uuid(), uuid());
    api.call(
        Method::POST,
        "/v1/sessions",
        Some(&t),
        &[],
        Some(create_body(&sid, &p1, &p2)),
    )
    .await;
    api.send(Method::POST, &format!("/v1/sessions/{sid}/start"), &t)
        .await;

    let r = api
        .call(
            Method::POST,
            &format!("/v1/sessions/{sid}/pause"),
            Some(&t),
            &[("If-Match", "1")],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        body(r).await["error"]["details"],
        json!({"expected_version": 1, "actual_version": 2})
    );

    let switch = format!("/v1/sessions/{sid}/switch");
    let first = api
        .call(
            Method::POST,
            &switch,
            Some(&t),
            &[("Idempotency-Key", "retry-1")],
            None,
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let retry = api
        .call(
            Method::POST,
            &switch,
            Some(&t),
            &[("Idempotency-Key", "retry-1")],
            None,
        )
        .await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(body(first).await, body(retry).await);

    // The per-session switch limit: within one second, the excess gets 429.
    let mut limited = None;
    for _ in 0..(SWITCH_LIMIT * 3) {
        let r = api.send(Method::POST, &switch, &t).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("a 429 within 3x the limit");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    let e = body(r).await;
    assert_eq!(
        (
            e["error"]["code"].as_str(),
            e["error"]["retry_after_seconds"].as_u64()
        ),
        (Some("RATE_LIMIT_EXCEEDED"), Some(1))
    );
}

async fn malformed_requests_get_their_codes(t: Transport) {
    let api = Api::new(t);
    let t = admin();
    let raw = |path: &str, body: Vec<u8>| {
        api.http
            .post(format!("{}{path}", api.base))
            .bearer_auth(admin())
            .body(body)
            .send()
    };
    let r = raw("/v1/sessions", b"{nope".to_vec()).await.unwrap();
    assert_eq!(
        (r.status(), body(r).await["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("INVALID_JSON"))
    );
    // On a connection of its own: the server answers 413 without reading
    // the rest of the body and closes that connection, which a pooled client
    // could otherwise pick for the next request.
    let r = Client::new()
        .post(format!("{}/v1/sessions", api.base))
        .bearer_auth(admin())
        .body(vec![b' '; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status(), body(r).await["error"]["code"].clone()),
        (StatusCode::PAYLOAD_TOO_LARGE, json!("PAYLOAD_TOO_LARGE"))
    );
    let r = api
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&t),
            &[],
            Some(json!({"sync_mode": "nope", "participants": []})),
        )
        .await;
    let e = body(r).await;
    assert_eq!(e["error"]["message"], json!("Request validation failed"));
    assert!(e["error"]["details"].as_array().unwrap().len() >= 4, "{e}");
    let r = api.send(Method::GET, "/v1/sessions/not-a-uuid", &t).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api.send(Method::GET, "/v1/nothing", &t).await;
    assert_eq!(
        (r.status(), body(r).await["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("NOT_FOUND"))
    );
    let (sid, p1, p2) = (uuid(), uuid(), uuid());
    api.call(
        Method::POST,
        "/v1/sessions",
        Some(&t),
        &[],
        Some(create_body(&sid, &p1, &p2)),
    )
    .await;
    let r = api
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&t),
            &[],
            Some(create_body(&sid, &p1, &p2)),
        )
        .await;
    assert_eq!(
        (r.status(), body(r).await["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("SESSION_EXISTS"))
    );
    let r = api
        .call(Method::OPTIONS, "/v1/sessions", None, &[], None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = api.call(Method::GET, "/v1/time", None, &[], None).await;
    assert!(body(r).await["timestamp_ms"].as_i64().unwrap() > 1_700_000_000_000);
    let r = api
        .call(Method::GET, "/v1/openapi.json", None, &[], None)
        .await;
    assert_eq!(body(r).await["openapi"], json!("3.0.3"));
}

async fn the_general_limit_is_per_client_ip(t: Transport) {
    let api = Api::with(
        t,
        &[("IP_RATE_LIMIT", "3"), ("IP_RATE_PERIOD_SECONDS", "10")],
    );
    let t = admin();
    let from = |ip: &'static str| {
        let t = t.clone();
        let api = &api;
        async move {
            api.call(
                Method::GET,
                "/v1/time",
                Some(&t),
                &[("CF-Connecting-IP", ip)],
                None,
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(from("203.0.113.1").await.status(), StatusCode::OK);
    }
    let r = from("203.0.113.1").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    for (k, v) in [
        ("retry-after", "10"),
        ("ratelimit-policy", "3;w=10"),
        ("ratelimit-limit", "3"),
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "10"),
    ] {
        assert_eq!(r.headers()[k], v, "{k}");
    }
    assert_eq!(body(r).await["error"]["code"], json!("RATE_LIMIT_EXCEEDED"));
    // Another client is unaffected; probes are never counted.
    assert_eq!(from("203.0.113.2").await.status(), StatusCode::OK);
    let health = api
        .call(
            Method::GET,
            "/health",
            None,
            &[("CF-Connecting-IP", "203.0.113.1")],
            None,
        )
        .await;
    assert_eq!(health.status(), StatusCode::OK);
}

async fn auth_fails_closed_without_a_key(t: Transport) {
    let api = Api::with(t, &[("JWT_SECRET", "")]);
    let r = api
        .call(
            Method::GET,
            &format!("/v1/sessions/{}", uuid()),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body(r).await["error"]["code"], json!("AUTH_NOT_CONFIGURED"));
    // Probes stay open.
    let r = api.call(Method::GET, "/health", None, &[], None).await;
    assert_eq!(r.status(), StatusCode::OK);
}

async fn the_rest_of_the_routes_and_refusals(t: Transport) {
    let api = Api::new(t);
    let t = admin();
    let (sid, p1, p2) = (uuid(), uuid(), uuid());
    let path = |a: &str| format!("/v1/sessions/{sid}/{a}");

    // Unknown session: every action is 404 SESSION_NOT_FOUND.
    for action in ["start", "switch", "pause", "resume", "complete", "cancel"] {
        let r = api.send(Method::POST, &path(action), &t).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{action}");
        assert_eq!(
            body(r).await["error"]["message"],
            json!(format!("Session {sid} not found"))
        );
    }
    // A bad token is 401, a token for another session 403.
    let r = api
        .send(Method::GET, &format!("/v1/sessions/{sid}"), "not.a.jwt")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(r).await["error"]["code"], json!("UNAUTHORIZED"));

    api.call(
        Method::POST,
        "/v1/sessions",
        Some(&t),
        &[],
        Some(create_body(&sid, &p1, &p2)),
    )
    .await;
    // If-Match that matches goes through; the body's expected_version too.
    let r = api
        .call(
            Method::POST,
            &path("start"),
            Some(&t),
            &[("If-Match", "1")],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .call(
            Method::POST,
            &path("switch"),
            Some(&t),
            &[],
            Some(json!({"expected_version": 2, "next_participant_id": p2})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["data"]["active_participant_id"], json!(p2));
    // An unknown next participant.
    let stranger = uuid();
    let r = api
        .call(
            Method::POST,
            &path("switch"),
            Some(&t),
            &[],
            Some(json!({"next_participant_id": stranger})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(r).await["error"]["message"],
        json!(format!("Participant {stranger} not found in session"))
    );
    // An Idempotency-Key reused for another command.
    let r = api
        .call(
            Method::POST,
            &path("pause"),
            Some(&t),
            &[("Idempotency-Key", "k-1")],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .call(
            Method::POST,
            &path("resume"),
            Some(&t),
            &[("Idempotency-Key", "k-1")],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body(r).await["error"]["code"],
        json!("IDEMPOTENCY_KEY_REUSED")
    );
    // ...and for the same command with another body; the same body replays.
    api.send(Method::POST, &path("resume"), &t).await;
    let switch_to = |p: &str, key: &'static str| {
        let p = p.to_string();
        let api = &api;
        let t = t.clone();
        let path = path("switch");
        async move {
            api.call(
                Method::POST,
                &path,
                Some(&t),
                &[("Idempotency-Key", key)],
                Some(json!({ "next_participant_id": p })),
            )
            .await
        }
    };
    let first = switch_to(&p1, "k-2").await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = body(first).await;
    let other = switch_to(&p2, "k-2").await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body(other).await["error"]["code"],
        json!("IDEMPOTENCY_KEY_REUSED")
    );
    let replay = switch_to(&p1, "k-2").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(body(replay).await, first, "the first response, exactly");
    // Cancel, then nothing more; DELETE is idempotent, also for unknown ids.
    let r = api.send(Method::POST, &path("cancel"), &t).await;
    assert_eq!(body(r).await["data"]["status"], json!("cancelled"));
    let r = api.send(Method::POST, &path("resume"), &t).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(r).await["error"]["code"],
        json!("INVALID_STATE_TRANSITION")
    );
    for _ in 0..2 {
        let r = api
            .send(Method::DELETE, &format!("/v1/sessions/{sid}"), &t)
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let r = api
        .send(Method::DELETE, &format!("/v1/sessions/{}", uuid()), &t)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The deleted id cannot be created again while its tombstone lives.
    let r = api
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&t),
            &[],
            Some(create_body(&sid, &p1, &p2)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(body(r).await["error"]["code"], json!("SESSION_DELETED"));
    // One audit event per accepted command, refusals leave none.
    assert_eq!(
        audit_types(&api, &sid).await,
        [
            "session_created",
            "session_started",
            "participant_switched",
            "session_paused",
            "session_resumed",
            "participant_switched",
            "session_cancelled",
            "session_deleted"
        ]
    );

    // CORS preflight and probes.
    let r = api
        .call(
            Method::OPTIONS,
            "/v1/sessions",
            None,
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("if-match"));
    let r = api.call(Method::GET, "/ready", None, &[], None).await;
    assert_eq!(
        (r.status(), body(r).await),
        (StatusCode::OK, json!({"status": "ready"}))
    );
}

async fn every_rest_command_is_one_redis_call(t: Transport) {
    let api = Api::new(t);
    let t = admin();
    let run = |sid: String| {
        let (p1, p2) = (uuid(), uuid());
        let t = t.clone();
        let api = &api;
        async move {
            let ok = |r: Response| assert!(r.status().is_success(), "{}", r.status());
            ok(api
                .call(
                    Method::POST,
                    "/v1/sessions",
                    Some(&t),
                    &[],
                    Some(create_body(&sid, &p1, &p2)),
                )
                .await);
            for action in ["start", "switch", "pause", "resume", "complete"] {
                ok(api
                    .send(Method::POST, &format!("/v1/sessions/{sid}/{action}"), &t)
                    .await);
            }
            ok(api
                .send(Method::GET, &format!("/v1/sessions/{sid}"), &t)
                .await);
            ok(api
                .send(Method::DELETE, &format!("/v1/sessions/{sid}"), &t)
                .await);
        }
    };
    // The first round loads the scripts (EVALSHA answers NOSCRIPT, then EVAL).
    run(uuid()).await;
    // MONITOR, not INFO commandstats: the stack's background scripts (the
    // expiry lease, the audit trim, clock reads) run EVALSHA too, whenever
    // their timers fire, and must not be counted as the commands' calls.
    let monitor = api.stack.redis.monitor();
    run(uuid()).await;
    let counts = monitor.counts();
    let commands: Vec<&str> = synckairos_core::script::all()
        .iter()
        .filter(|s| s.name != "expire" && s.name != "cancel")
        .map(|s| s.sha1())
        .collect();
    // 7 commands, one EVALSHA of its own script each; the read is one GET
    // (GETs by other clients are counted too, so only its lower bound is
    // exact); nothing else.
    let per_script: Vec<u64> = commands.iter().map(|sha| counts.evalsha_of(sha)).collect();
    assert_eq!(
        per_script, [1; 7],
        "EVALSHA per command, by script\n{counts}"
    );
    assert_eq!(
        counts.of("eval"),
        0,
        "no EVAL once the scripts are loaded\n{counts}"
    );
    assert!(counts.of("get") >= 1, "the read is a GET\n{counts}");
    assert_eq!(counts.of("ping"), 0, "no health-check PINGs\n{counts}");
}

/// One `#[tokio::test]` per transport of each test.
/// Time controls and lag compensation over HTTP: a byo-yomi session keeps
/// its periods in the state, a switch's lag is credited from the mover's
/// quota and audited, and the rules of a control are refused with the field.
async fn time_controls_and_lag_over_http(t: Transport) {
    let api = Api::new(t);
    let auth = admin();
    let (sid, p1, p2) = (uuid(), uuid(), uuid());
    let mut b = create_body(&sid, &p1, &p2);
    b["time_control"] = json!({"type": "byoyomi", "periods": 5, "period_ms": 30000});
    b["lag_compensation"] = json!({"initial_ms": 400, "gain_ms": 100, "max_ms": 1000});
    let r = api
        .call(Method::POST, "/v1/sessions", Some(&auth), &[], Some(b))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let st = body(r).await["data"].clone();
    assert_eq!(
        st["time_control"],
        json!({"type": "byoyomi", "periods": 5, "period_ms": 30000})
    );
    assert_eq!(st["participants"][0]["periods_left"], 5);
    assert_eq!(st["participants"][0]["lag_quota_ms"], 400);
    let r = api
        .send(Method::POST, &format!("/v1/sessions/{sid}/start"), &auth)
        .await;
    let started = body(r).await["data"].clone();
    // The deadline counts every period: 60 s of main time + 5 × 30 s.
    let cs =
        synckairos_core::time::parse_iso(started["cycle_started_at"].as_str().unwrap()).unwrap();
    let exp = synckairos_core::time::parse_iso(started["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(exp - cs, 60_000 + 150_000);
    let path = format!("/v1/sessions/{sid}/switch");
    let r = api
        .call(
            Method::POST,
            &path,
            Some(&auth),
            &[],
            Some(json!({"lag_ms": 10000})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let st = body(
        api.send(Method::GET, &format!("/v1/sessions/{sid}"), &auth)
            .await,
    )
    .await["data"]
        .clone();
    // A huge claim gets the quota (400) and no more: 400 + 100 − 400.
    assert_eq!(st["participants"][0]["lag_quota_ms"], 100);
    let keys = SessionKeys::new(&sid, synckairos_core::keys::DEFAULT_SHARDS);
    let lags: Vec<Option<(i64, i64)>> = api
        .stack
        .redis
        .stream_entries(&keys.audit)
        .iter()
        .map(|(_, f)| {
            AuditEvent::from_fields(f.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
        })
        .filter(|e| e.session_id == sid)
        .map(|e| e.lag)
        .collect();
    assert_eq!(lags, vec![None, None, Some((10_000, 400))]);
    // Refusals name the field.
    let r = api
        .call(
            Method::POST,
            &path,
            Some(&auth),
            &[],
            Some(json!({"lag_ms": -1})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"]["details"][0]["field"], "lag_ms");
    for (control, field) in [
        (
            json!({"type": "byoyomi", "periods": 0, "period_ms": 30000}),
            "time_control.periods",
        ),
        (
            json!({"type": "stages", "stages": [{"moves": 40}, {"moves": 1}]}),
            "time_control.stages.1.moves",
        ),
        (json!({"type": "hourglass", "increment": 1}), ""),
    ] {
        let mut b = create_body(&uuid(), &p1, &p2);
        b["time_control"] = control.clone();
        if field.is_empty() {
            b["increment_ms"] = json!(1000);
        }
        let r = api
            .call(Method::POST, "/v1/sessions", Some(&auth), &[], Some(b))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{control}");
        let e = body(r).await;
        let want = if field.is_empty() {
            "increment_ms"
        } else {
            field
        };
        assert_eq!(e["error"]["details"][0]["field"], want, "{e}");
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod edge {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Transport::Edge).await
            })*
        }
        mod native {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Transport::Native).await
            })*
        }
    };
}

/// A known path with a method it does not take is 405 with `Allow`, a
/// method unknown to HTTP libraries (QUERY) included: the worker once read
/// those as GET and answered them as reads.
async fn other_methods_are_405_with_allow(t: Transport) {
    let api = Api::new(t);
    let t = admin();
    let sid = uuid();
    for (method, path, allow) in [
        ("QUERY", format!("/v1/sessions/{sid}"), "GET, DELETE"),
        ("PUT", "/v1/sessions".to_string(), "POST"),
        ("QUERY", "/health".to_string(), "GET"),
        ("GET", format!("/v1/sessions/{sid}/start"), "POST"),
    ] {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let r = api.send(m, &path, &t).await;
        assert_eq!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        assert_eq!(body(r).await["error"]["code"], json!("METHOD_NOT_ALLOWED"));
    }
}

/// Push devices over HTTP: a participant registers its own device (201, then
/// 200 with a later expiry), not another's (403); a stranger is 400, an
/// unknown session 404; the hash holds what the push sender reads; a remove
/// is 204 (also when absent); each is one EVALSHA; the session's delete
/// takes the devices along.
async fn push_devices_over_http(t: Transport) {
    let api = Api::new(t);
    let auth = admin();
    let (sid, p1, p2) = (uuid(), uuid(), uuid());
    let r = api
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&auth),
            &[],
            Some(create_body(&sid, &p1, &p2)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let path = format!("/v1/sessions/{sid}/devices");
    let token_a = format!("fcm:APA91b{}", "x".repeat(150));
    let device =
        |pid: &str, token: &str| json!({"participant_id": pid, "token": token, "platform": "ios"});
    let me = token("participant", &p1, Some(&sid));
    // Counted by script under MONITOR: the stack's background scripts (the
    // expiry lease, the audit trim) run EVALSHA too.
    let monitor = api.stack.redis.monitor();
    let r = api
        .call(
            Method::POST,
            &path,
            Some(&me),
            &[],
            Some(device(&p1, &token_a)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first = body(r).await;
    assert_eq!(first["data"]["participant_id"], json!(p1));
    assert_eq!(first["data"]["platform"], json!("ios"));
    assert!(
        !first.to_string().contains(&token_a),
        "the token is never echoed"
    );
    let r = api
        .call(
            Method::POST,
            &path,
            Some(&me),
            &[],
            Some(device(&p1, &token_a)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let again = body(r).await;
    assert!(again["data"]["expires_at"].as_str() >= first["data"]["expires_at"].as_str());
    // Another participant's device: refused before Redis.
    let r = api
        .call(Method::POST, &path, Some(&me), &[], Some(device(&p2, "t2")))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let counts = monitor.counts();
    assert_eq!(
        counts.evalsha_of(synckairos_core::devices::DEVICES.sha1()),
        2,
        "{counts}"
    );
    // A host may register for anyone; a stranger is not in the session.
    let r = api
        .call(
            Method::POST,
            &path,
            Some(&auth),
            &[],
            Some(device(&p2, "t2")),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let stranger = uuid();
    let r = api
        .call(
            Method::POST,
            &path,
            Some(&auth),
            &[],
            Some(device(&stranger, "t3")),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(r).await["error"]["message"],
        json!(format!("Participant {stranger} not found in session"))
    );
    let r = api
        .call(
            Method::POST,
            &format!("/v1/sessions/{}/devices", uuid()),
            Some(&auth),
            &[],
            Some(device(&p1, "t")),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(r).await["error"]["code"], json!("SESSION_NOT_FOUND"));
    let r = api
        .call(
            Method::POST,
            &path,
            Some(&auth),
            &[],
            Some(json!({"participant_id": p1, "token": "a b", "platform": "fax"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let issues = body(r).await["error"]["details"].clone();
    assert_eq!(issues.as_array().map(Vec::len), Some(2), "{issues}");
    // What the push sender reads.
    let keys = SessionKeys::new(&sid, synckairos_core::keys::DEFAULT_SHARDS);
    let mut c = api.stack.redis.client().get_connection().unwrap();
    let hash: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(&keys.devices)
        .query(&mut c)
        .unwrap();
    let live = synckairos_core::devices::parse(&hash, 0);
    let mine: Vec<(&str, &str)> = live
        .iter()
        .map(|d| (d.participant_id.as_str(), d.token.as_str()))
        .collect();
    let mut want = vec![(p1.as_str(), token_a.as_str()), (p2.as_str(), "t2")];
    want.sort();
    assert_eq!(mine, want);
    // Remove: a participant only its own; percent-encoded; absent is 204 too.
    let r = api.send(Method::DELETE, &format!("{path}/t2"), &me).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let encoded = token_a.replace(':', "%3A");
    let r = api
        .send(Method::DELETE, &format!("{path}/{encoded}"), &me)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let hash: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(&keys.devices)
        .query(&mut c)
        .unwrap();
    let left: Vec<String> = synckairos_core::devices::parse(&hash, 0)
        .into_iter()
        .map(|d| d.token)
        .collect();
    assert_eq!(left, ["t2"]);
    let viewer = token("viewer", "v", Some(&sid));
    assert_eq!(
        api.send(Method::DELETE, &format!("{path}/t2"), &viewer)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // The session's delete removes its devices.
    let r = api
        .send(Method::DELETE, &format!("/v1/sessions/{sid}"), &auth)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&keys.devices)
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0);
}

both!(
    other_methods_are_405_with_allow,
    a_session_lives_its_whole_life_over_http_and_every_command_is_audited,
    roles_are_enforced,
    limits_versions_and_retries,
    malformed_requests_get_their_codes,
    the_general_limit_is_per_client_ip,
    auth_fails_closed_without_a_key,
    the_rest_of_the_routes_and_refusals,
    every_rest_command_is_one_redis_call,
    time_controls_and_lag_over_http,
    push_devices_over_http,
);
