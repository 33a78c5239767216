//! Routing (`synckairos_core::api::route`) and the handlers, over any
//! [`Transport`]: the Worker runs them over `fetch`, the host tests over
//! canned replies.

use crate::api::{ApiResponse, Probe};
use crate::config::{AllowedOrigins, Config, ConfigError};
use crate::upstash::{Transport, Upstash, UpstashError};
use serde_json::Value;
use std::future::Future;
use synckairos_core::api::{
    self as wire, ApiError, Route, SessionAction, SwitchResponse, TimeResponse,
};
use synckairos_core::keys::{valid_idempotency_key, SessionKeys};
use synckairos_core::model::Reply;
use synckairos_core::script::{self, CallOptions};
use synckairos_core::{record, Command, DomainError, Issue, IssueCode};

/// An HTTP request as the handlers see it.
#[derive(Clone, Debug, Default)]
pub struct Incoming<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path (a query string is ignored).
    pub path: &'a str,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<&'a str>,
    /// `Origin` (CORS).
    pub origin: Option<&'a str>,
    /// The client's address (`CF-Connecting-IP`, set by Cloudflare), the key
    /// of the general rate limit.
    pub client_ip: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
    /// The Worker's clock (epoch ms), for token expiry only: session time is
    /// always Redis time.
    pub now_ms: i64,
}

/// A response and, when something went wrong inside, the full cause for the
/// log (never for the client).
#[derive(Debug, PartialEq, Eq)]
pub struct Handled {
    /// What the client gets.
    pub response: ApiResponse,
    /// What the log gets.
    pub error: Option<String>,
}

impl Handled {
    fn ok(response: ApiResponse) -> Handled {
        Handled {
            response,
            error: None,
        }
    }

    fn failed(e: ApiError, cause: String) -> Handled {
        Handled {
            response: ApiResponse::error(&e),
            error: Some(cause),
        }
    }
}

/// The general per-client limit: counts one request for `key` and says
/// whether it is within the limit. The Worker's is Cloudflare's Rate Limiting
/// binding; an `Err` (the binding failed) lets the request through, logged:
/// a broken limiter must not take the API down.
pub trait IpLimiter {
    /// Counts a request of `key`.
    fn allow(&self, key: &str) -> impl Future<Output = Result<bool, String>>;
}

/// No general limit (the binding is not configured).
pub struct Unlimited;

impl IpLimiter for Unlimited {
    async fn allow(&self, _key: &str) -> Result<bool, String> {
        Ok(true)
    }
}

/// The Worker's state for one request: its configuration and the Upstash
/// client built from it, or why there is none.
pub struct App<T> {
    backend: Result<Backend<T>, ConfigError>,
}

struct Backend<T> {
    config: Config,
    upstash: Upstash<T>,
}

impl<T: Transport> App<T> {
    /// Builds the app; `transport` makes the HTTP transport for a valid config.
    pub fn new(
        config: Result<Config, ConfigError>,
        transport: impl FnOnce(&Config) -> T,
    ) -> App<T> {
        let backend = config.map(|config| {
            let u = &config.upstash;
            let upstash = Upstash::new(&u.url, u.token.clone(), u.encoding, transport(&config));
            Backend { config, upstash }
        });
        App { backend }
    }

    /// Answers a request; `limiter` counts every `/v1` request but preflights.
    pub async fn handle(&self, req: &Incoming<'_>, limiter: &impl IpLimiter) -> Handled {
        let route = wire::route(req.method, req.path);
        let preflight = matches!(route, Ok(Route::Preflight));
        let mut handled = match self.limited(&route, req, limiter).await {
            Ok(Some(refused)) => refused,
            Ok(None) => self.dispatch(route, req).await,
            // Fail open, loudly: the log line is the alarm.
            Err(cause) => {
                let mut h = self.dispatch(route, req).await;
                h.error
                    .get_or_insert(format!("rate limiter failed, request let through: {cause}"));
                h
            }
        };
        let allowed = match &self.backend {
            Ok(b) => &b.config.cors,
            Err(_) => &AllowedOrigins::Any,
        };
        cors(&mut handled.response, allowed, req.origin, preflight);
        handled
    }

    /// The general limit's refusal when this request is over it, `None`
    /// when it may go on, or why the limiter could not tell.
    async fn limited(
        &self,
        route: &Result<Route, ApiError>,
        req: &Incoming<'_>,
        limiter: &impl IpLimiter,
    ) -> Result<Option<Handled>, String> {
        let Ok(backend) = &self.backend else {
            return Ok(None);
        };
        let counted = match route {
            Ok(Route::Health | Route::Ready | Route::Preflight) => false,
            _ => backend.config.ip_limit.limit > 0 && req.path.starts_with("/v1/"),
        };
        if !counted {
            return Ok(None);
        }
        let key = req.client_ip.unwrap_or("unknown");
        match limiter.allow(key).await? {
            true => Ok(None),
            false => {
                let l = backend.config.ip_limit;
                let mut response =
                    ApiResponse::error(&ApiError::Domain(DomainError::RateLimited {
                        retry_after_seconds: l.period_s,
                    }));
                response.headers.extend([
                    ("ratelimit-policy", format!("{};w={}", l.limit, l.period_s)),
                    ("ratelimit-limit", l.limit.to_string()),
                    ("ratelimit-remaining", "0".to_string()),
                    ("ratelimit-reset", l.period_s.to_string()),
                ]);
                Ok(Some(Handled::ok(response)))
            }
        }
    }

    async fn dispatch(&self, route: Result<Route, ApiError>, req: &Incoming<'_>) -> Handled {
        match route {
            Err(e) => Handled::ok(ApiResponse::error(&e)),
            Ok(Route::Health) => Handled::ok(ApiResponse::json(
                200,
                &Probe {
                    status: "ok",
                    error: None,
                },
            )),
            Ok(Route::Ready) => self.ready().await,
            Ok(Route::Time) => self.time().await,
            Ok(Route::OpenApi) => Handled::ok(ApiResponse::json(
                200,
                &synckairos_core::openapi::document(),
            )),
            Ok(Route::Preflight) => Handled::ok(ApiResponse::empty(204)),
            Ok(route) => match self.session(route, req).await {
                Ok(h) | Err(h) => h,
            },
        }
    }

    /// A `/v1/sessions` route: authenticate, validate, authorize, then exactly
    /// one Upstash request (`GET` of the record, or one script call).
    async fn session(&self, route: Route, req: &Incoming<'_>) -> Result<Handled, Handled> {
        let refuse = |e: ApiError| Handled::ok(ApiResponse::error(&e));
        let backend = self.backend()?;
        let now_s = u64::try_from(req.now_ms / 1000).unwrap_or(0);
        let caller = backend
            .config
            .auth
            .authenticate(req.authorization, now_s)
            .map_err(refuse)?;
        let body = wire::json_body(req.body).map_err(refuse)?;
        let command = wire::command(&route, &body).map_err(refuse)?;
        let created = match &command {
            Some(Command::Create(spec)) => Some(spec.session_id.clone()),
            _ => None,
        };
        let only_if_active = match &caller {
            Some(c) => wire::authorize(c, &route, created.as_deref()).map_err(refuse)?,
            None => false,
        };
        let Some(command) = command else {
            return self.read(backend, &route).await;
        };
        let expected = wire::expected_version(req.if_match, &body).map_err(refuse)?;
        let idempotency_key = match req.idempotency_key.map(str::trim) {
            None | Some("") => None,
            Some(k) if valid_idempotency_key(k) => Some(k.to_string()),
            Some(_) => {
                return Err(refuse(ApiError::Domain(DomainError::Validation(vec![
                    Issue {
                        field: "Idempotency-Key".into(),
                        message: "Idempotency-Key must be 1-255 visible ASCII characters".into(),
                        code: IssueCode::InvalidFormat,
                    },
                ]))))
            }
        };
        let request = wire::request(&route, command, expected, caller.as_ref(), only_if_active);
        let call = script::call(
            &request,
            &backend.config.settings,
            &CallOptions {
                idempotency_key,
                now_ms: None,
            },
        );
        let value = backend
            .upstash
            .run_script(call.script, &call.keys, &call.args)
            .await
            .map_err(|e| upstash_failed(&e))?;
        let parts = strings(&value)
            .ok_or_else(|| Handled::failed(ApiError::Internal, format!("script reply {value}")))?;
        let reply = script::parse_reply(&parts, &request.session_id)
            .map_err(|e| Handled::failed(ApiError::Internal, e.to_string()))?;
        let mut response = match reply.result {
            Ok(Reply::State {
                state,
                expired_participant_id,
            }) => match route {
                Route::Create => ApiResponse::data(201, &*state),
                Route::Action(_, SessionAction::Switch) => ApiResponse::data(
                    200,
                    &SwitchResponse::new(&state, expired_participant_id.as_deref()),
                ),
                _ => ApiResponse::data(200, &*state),
            },
            Ok(Reply::Deleted { .. }) => ApiResponse::empty(204),
            Ok(Reply::NotDue { .. }) => {
                return Err(Handled::failed(
                    ApiError::Internal,
                    "not_due reply to a REST command".into(),
                ))
            }
            Err(e) => ApiResponse::error(&ApiError::Domain(e)),
        };
        if let Some(rate) = reply.rate {
            response.headers.push(("ratelimit-policy", rate.policy()));
            response
                .headers
                .push(("ratelimit-limit", rate.limit.to_string()));
            response
                .headers
                .push(("ratelimit-remaining", rate.remaining.to_string()));
            response
                .headers
                .push(("ratelimit-reset", rate.reset_seconds.to_string()));
        }
        if reply.replayed {
            response
                .headers
                .push(("idempotent-replayed", "true".into()));
        }
        Ok(Handled::ok(response))
    }

    /// `GET /v1/sessions/:id`: one `GET` of the stored record.
    async fn read(&self, backend: &Backend<T>, route: &Route) -> Result<Handled, Handled> {
        let id = route.session_id().unwrap_or_default();
        let key = SessionKeys::new(id, backend.config.settings.shards).state;
        let value = backend
            .upstash
            .command(&["GET", key.as_str()])
            .await
            .map_err(|e| upstash_failed(&e))?;
        match value {
            Value::Null => Ok(Handled::ok(ApiResponse::error(&ApiError::Domain(
                DomainError::SessionNotFound {
                    session_id: id.to_string(),
                },
            )))),
            Value::String(text) => {
                let state = record::decode(&text)
                    .map_err(|e| Handled::failed(ApiError::Internal, e.to_string()))?;
                Ok(Handled::ok(ApiResponse::data(200, &state)))
            }
            other => Err(Handled::failed(
                ApiError::Internal,
                format!("GET gave {other}"),
            )),
        }
    }

    fn backend(&self) -> Result<&Backend<T>, Handled> {
        self.backend
            .as_ref()
            .map_err(|e| Handled::failed(ApiError::Unavailable, format!("misconfigured: {e}")))
    }

    async fn ready(&self) -> Handled {
        let not_ready = |reason: &str, cause: String| Handled {
            response: ApiResponse::json(
                503,
                &Probe {
                    status: "not_ready",
                    error: Some(reason),
                },
            ),
            error: Some(cause),
        };
        let backend = match &self.backend {
            Ok(backend) => backend,
            Err(e) => return not_ready("misconfigured", format!("misconfigured: {e}")),
        };
        match backend.upstash.ping().await {
            Ok(()) => Handled::ok(ApiResponse::json(
                200,
                &Probe {
                    status: "ready",
                    error: None,
                },
            )),
            Err(e) => not_ready(&e.public_reason(), e.to_string()),
        }
    }

    async fn time(&self) -> Handled {
        let backend = match self.backend() {
            Ok(backend) => backend,
            Err(handled) => return handled,
        };
        match backend.upstash.time_ms().await {
            // Not wrapped in `data`: the contract shows this body bare.
            Ok(ms) => Handled::ok(ApiResponse::json(200, &TimeResponse::new(ms))),
            Err(e) => Handled::failed(ApiError::Unavailable, e.to_string()),
        }
    }
}

/// CORS headers: the allowed origin (`*`, or the request's `Origin` when it
/// is on the list, with `Vary: Origin`) and the headers a page may read; on a
/// preflight also the methods and headers it may send.
fn cors(r: &mut ApiResponse, allowed: &AllowedOrigins, origin: Option<&str>, preflight: bool) {
    match allowed {
        AllowedOrigins::Any => r.headers.push(("access-control-allow-origin", "*".into())),
        AllowedOrigins::List(list) => {
            r.headers.push(("vary", "origin".into()));
            match origin.map(|o| o.trim_end_matches('/')) {
                Some(o) if list.iter().any(|a| a.eq_ignore_ascii_case(o)) => r
                    .headers
                    .push(("access-control-allow-origin", o.to_string())),
                _ => return,
            }
        }
    }
    if preflight {
        r.headers.extend([
            (
                "access-control-allow-methods",
                "GET, POST, DELETE, OPTIONS".to_string(),
            ),
            (
                "access-control-allow-headers",
                "authorization, content-type, if-match, idempotency-key".to_string(),
            ),
            ("access-control-max-age", "86400".to_string()),
        ]);
    } else {
        r.headers.push((
            "access-control-expose-headers",
            "ratelimit-policy, ratelimit-limit, ratelimit-remaining, ratelimit-reset, retry-after, idempotent-replayed".to_string(),
        ));
    }
}

/// Redis out of reach is a 503; anything else Upstash says is a bug: 500.
fn upstash_failed(e: &UpstashError) -> Handled {
    let public = match e {
        UpstashError::Transport(_) | UpstashError::Timeout(_) => ApiError::Unavailable,
        UpstashError::Http { status, .. } if *status >= 500 => ApiError::Unavailable,
        _ => ApiError::Internal,
    };
    Handled::failed(public, e.to_string())
}

/// A script reply: an array of strings.
fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstash::{HttpReply, HttpRequest, UpstashError};
    use futures::executor::block_on;

    /// Always gives the same answer.
    struct Fixed(Result<HttpReply, UpstashError>);

    impl Transport for Fixed {
        async fn post(&self, _req: HttpRequest) -> Result<HttpReply, UpstashError> {
            self.0.clone()
        }
    }

    /// The response without its CORS headers (tested on their own below).
    fn without_cors(mut h: Handled) -> Handled {
        h.response
            .headers
            .retain(|(k, _)| !k.starts_with("access-control-") && *k != "vary");
        h
    }

    fn app(reply: Result<(u16, &str), UpstashError>) -> App<Fixed> {
        let config = Config::from_lookup(|name| {
            match name {
                "UPSTASH_REDIS_REST_URL" => Some("http://127.0.0.1:1"),
                "UPSTASH_REDIS_REST_TOKEN" => Some("t"),
                "AUTH_MODE" => Some("disabled"),
                _ => None,
            }
            .map(String::from)
        });
        let reply = reply.map(|(status, body)| HttpReply {
            status,
            body: body.into(),
        });
        App::new(config, |_| Fixed(reply))
    }

    fn get(app: &App<Fixed>, path: &str) -> Handled {
        without_cors(block_on(app.handle(
            &Incoming {
                method: "GET",
                path,
                ..Incoming::default()
            },
            &Unlimited,
        )))
    }

    #[test]
    fn health_needs_nothing() {
        let a = App::new(Err(ConfigError::Missing("UPSTASH_REDIS_REST_URL")), |_| {
            Fixed(Err(UpstashError::Timeout(1)))
        });
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
        let t = get(&a, "/v1/time");
        assert_eq!(t.response.status, 503);
    }

    #[test]
    fn ready_pings() {
        let ok = get(&app(Ok((200, r#"{"result":"PONG"}"#))), "/ready");
        assert_eq!(
            ok.response,
            ApiResponse {
                status: 200,
                body: r#"{"status":"ready"}"#.into(),
                headers: vec![],
            }
        );
        let down = get(
            &app(Err(UpstashError::Transport("ECONNREFUSED".into()))),
            "/ready",
        );
        assert_eq!(down.response.status, 503);
        assert_eq!(
            down.response.body,
            r#"{"status":"not_ready","error":"redis unreachable"}"#
        );
        assert!(down.error.unwrap().contains("ECONNREFUSED"));
    }

    #[test]
    fn time_is_redis_time() {
        let h = get(
            &app(Ok((200, r#"{"result":["1795455546","123999"]}"#))),
            "/v1/time",
        );
        assert_eq!(
            h.response.body,
            r#"{"timestamp_ms":1795455546123,"server_version":"2.0.0","drift_tolerance_ms":50}"#
        );
        let h = get(&app(Ok((401, r#"{"error":"Unauthorized"}"#))), "/v1/time");
        assert_eq!(h.response.status, 503);
        assert!(!h.response.body.contains("Unauthorized"));
        assert!(h.error.unwrap().contains("401"));
    }

    #[test]
    fn unknown_routes() {
        let a = app(Ok((200, "{}")));
        for (method, path) in [("GET", "/"), ("POST", "/health"), ("GET", "/nope")] {
            let h = without_cors(block_on(a.handle(
                &Incoming {
                    method,
                    path,
                    ..Incoming::default()
                },
                &Unlimited,
            )));
            assert_eq!(
                h.response,
                ApiResponse::error(&ApiError::NotFound),
                "{method} {path}"
            );
        }
    }

    // --- session routes, with canned Upstash replies ---------------------

    const SID: &str = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11";

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

    /// An Upstash reply carrying a script reply.
    fn script_reply(header: &str, record: Option<&str>) -> String {
        let mut parts = vec![header.to_string()];
        parts.extend(record.map(str::to_string));
        serde_json::json!({ "result": parts }).to_string()
    }

    fn post(app: &App<Fixed>, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Handled {
        let h = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        without_cors(block_on(app.handle(
            &Incoming {
                method: "POST",
                path,
                authorization: h("authorization"),
                if_match: h("if-match"),
                idempotency_key: h("idempotency-key"),
                body,
                now_ms: 1_795_455_546_000,
                ..Incoming::default()
            },
            &Unlimited,
        )))
    }

    #[test]
    fn create_answers_201_with_the_state() {
        let reply = script_reply(
            r#"{"replayed":false,"kind":"state","expired_participant_id":null}"#,
            Some(&record()),
        );
        let a = app(Ok((200, &reply)));
        let h = post(&a, "/v1/sessions", create_body().as_bytes(), &[]);
        assert_eq!(h.response.status, 201);
        assert!(h.response.body.starts_with(&format!(r#"{{"data":{{"session_id":"{SID}","sync_mode":"per_participant","status":"pending","version":1,"#)));
        assert!(h.response.headers.is_empty());
    }

    #[test]
    fn switch_answers_the_switch_shape_with_rate_and_replay_headers() {
        let header = r#"{"replayed":true,"rate":{"limit":10,"remaining":7,"reset_seconds":1},"kind":"state","expired_participant_id":null}"#;
        let a = app(Ok((200, &script_reply(header, Some(&record())))));
        let h = post(
            &a,
            &format!("/v1/sessions/{SID}/switch"),
            b"",
            &[("idempotency-key", "k1")],
        );
        assert_eq!(h.response.status, 200);
        assert!(h.response.body.starts_with(&format!(r#"{{"data":{{"session_id":"{SID}","active_participant_id":null,"cycle_started_at":null,"participants":["#)));
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
            &app(Ok((200, &script_reply(limited, None)))),
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
            &app(Ok((200, &script_reply(missing, None)))),
            &format!("/v1/sessions/{SID}/pause"),
            b"",
            &[],
        );
        assert_eq!(h.response.status, 404);
        assert_eq!(
            h.response.body,
            format!(
                r#"{{"error":{{"code":"SESSION_NOT_FOUND","message":"Session {SID} not found"}}}}"#
            )
        );
        let exists = r#"{"replayed":false,"kind":"error","code":"SESSION_EXISTS"}"#;
        let h = post(
            &app(Ok((200, &script_reply(exists, None)))),
            "/v1/sessions",
            create_body().as_bytes(),
            &[],
        );
        assert_eq!((h.response.status, h.error), (409, None));
    }

    /// Path, body, headers, expected status, expected code.
    type Case<'a> = (&'a str, &'a [u8], &'a [(&'a str, &'a str)], u16, &'a str);

    #[test]
    fn bad_requests_never_reach_redis() {
        // The transport would fail loudly if called.
        let a = app(Err(UpstashError::Malformed("must not be called".into())));
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
    }

    #[test]
    fn auth_fails_closed_and_checks_roles() {
        let with = |vars: &'static [(&'static str, &'static str)]| {
            let config = Config::from_lookup(|name| {
                match name {
                    "UPSTASH_REDIS_REST_URL" => Some("http://127.0.0.1:1"),
                    "UPSTASH_REDIS_REST_TOKEN" => Some("t"),
                    other => vars.iter().find(|(k, _)| *k == other).map(|(_, v)| *v),
                }
                .map(String::from)
            });
            App::new(config, |_| {
                Fixed(Err(UpstashError::Malformed("not called".into())))
            })
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
        let a = with(&[("JWT_SECRET", "s")]);
        assert_eq!(post(&a, &path, b"", &[]).response.status, 401);
        assert_eq!(
            post(&a, &path, b"", &[("authorization", "Bearer x.y.z")])
                .response
                .status,
            401
        );
        // A well-signed viewer token may not pause: 403 before any Redis call.
        let claims = serde_json::json!({"sub": "v", "role": "viewer", "exp": 4_102_444_800u64});
        let viewer = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        let h = post(
            &a,
            &path,
            b"",
            &[("authorization", &format!("Bearer {viewer}"))],
        );
        assert_eq!(h.response.status, 403, "{}", h.response.body);
    }

    /// Allows `n` requests, then refuses; or always fails.
    struct Counting {
        left: std::cell::Cell<u32>,
        keys: std::cell::RefCell<Vec<String>>,
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

    fn request<'a>(method: &'a str, path: &'a str, ip: Option<&'a str>) -> Incoming<'a> {
        Incoming {
            method,
            path,
            client_ip: ip,
            ..Incoming::default()
        }
    }

    #[test]
    fn the_general_limit_counts_v1_requests_per_client_ip() {
        let a = app(Ok((200, r#"{"result":["1795455546","123999"]}"#)));
        let limiter = Counting::new(1, false);
        let ok = block_on(a.handle(&request("GET", "/v1/time", Some("203.0.113.7")), &limiter));
        assert_eq!(ok.response.status, 200);
        let refused =
            block_on(a.handle(&request("GET", "/v1/time", Some("203.0.113.7")), &limiter));
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
        // Probes and preflights are never counted; a request without
        // CF-Connecting-IP shares the "unknown" bucket.
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
        let a = App::new(
            Config::from_lookup(|name| {
                match name {
                    "UPSTASH_REDIS_REST_URL" => Some("http://127.0.0.1:1"),
                    "UPSTASH_REDIS_REST_TOKEN" => Some("t"),
                    "AUTH_MODE" => Some("disabled"),
                    "IP_RATE_LIMIT" => Some("0"),
                    _ => None,
                }
                .map(String::from)
            }),
            |_| {
                Fixed(Ok(HttpReply {
                    status: 200,
                    body: r#"{"result":["1795455546","123999"]}"#.into(),
                }))
            },
        );
        let limiter = Counting::new(0, false);
        let h = block_on(a.handle(&request("GET", "/v1/time", None), &limiter));
        assert_eq!(h.response.status, 200);
        assert!(limiter.keys.borrow().is_empty());
    }

    #[test]
    fn a_broken_limiter_lets_requests_through_and_says_so() {
        let a = app(Ok((200, r#"{"result":["1795455546","123999"]}"#)));
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
        let any = app(Ok((200, "{}")));
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

        let listed = App::new(
            Config::from_lookup(|name| {
                match name {
                    "UPSTASH_REDIS_REST_URL" => Some("http://127.0.0.1:1"),
                    "UPSTASH_REDIS_REST_TOKEN" => Some("t"),
                    "AUTH_MODE" => Some("disabled"),
                    "CORS_ALLOWED_ORIGINS" => Some("https://app.example"),
                    _ => None,
                }
                .map(String::from)
            }),
            |_| {
                Fixed(Ok(HttpReply {
                    status: 200,
                    body: "{}".into(),
                }))
            },
        );
        let from = |origin| {
            block_on(listed.handle(
                &Incoming {
                    method: "GET",
                    path: "/health",
                    origin: Some(origin),
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
}
