//! The Worker's [`SessionStore`]: each call is one HTTP request to Upstash's
//! REST API (one `EVALSHA`, one `GET`, `PING` or `TIME`). The whole HTTP
//! flow around it is `synckairos_api`'s, shared with the native server.

use crate::config::{Config, ConfigError};
use crate::upstash::{Transport, Upstash, UpstashError};
use serde_json::Value;
use synckairos_api::{Api, SessionStore, StoreError};
use synckairos_core::devices::{self, DeviceOp, DeviceReply};
use synckairos_core::keys::SessionKeys;
use synckairos_core::script::{self, CallOptions, ScriptReply, Settings};
use synckairos_core::{record, DomainError, Request, SyncState};

/// Sessions in Redis behind Upstash's REST API.
pub struct UpstashStore<T> {
    upstash: Upstash<T>,
    settings: Settings,
}

/// The Worker's API: the HTTP core over Upstash.
pub type App<T> = Api<UpstashStore<T>>;

/// Builds the app from the configuration (or the reason there is none);
/// `transport` makes the HTTP transport for a valid config.
pub fn app<T: Transport>(
    config: Result<Config, ConfigError>,
    transport: impl FnOnce(&Config) -> T,
) -> App<T> {
    match config {
        Ok(config) => {
            let u = &config.upstash;
            let upstash = Upstash::new(&u.url, u.token.clone(), u.encoding, transport(&config));
            let store = UpstashStore {
                upstash,
                settings: config.api.settings.clone(),
            };
            Api::new(config.api, store)
        }
        Err(e) => Api::misconfigured(e),
    }
}

/// Redis out of reach, out of memory or past the plan's limits is a 503;
/// anything else Upstash says is a bug: 500.
fn store_error(e: UpstashError) -> StoreError {
    let limit = match &e {
        UpstashError::Redis(msg) | UpstashError::Http { message: msg, .. } => {
            synckairos_core::script::unavailable_reason(msg)
        }
        _ => None,
    };
    if let Some(reason) = limit {
        return StoreError::Unavailable {
            reason: reason.into(),
            cause: e.to_string(),
        };
    }
    match e {
        UpstashError::Transport(_) | UpstashError::Timeout(_) => StoreError::Unavailable {
            reason: e.public_reason(),
            cause: e.to_string(),
        },
        UpstashError::Http { status, .. } if status >= 500 => StoreError::Unavailable {
            reason: e.public_reason(),
            cause: e.to_string(),
        },
        other => StoreError::Internal(other.to_string()),
    }
}

impl<T: Transport> SessionStore for UpstashStore<T> {
    async fn execute(
        &self,
        request: &Request,
        options: &CallOptions,
    ) -> Result<ScriptReply, StoreError> {
        let call = script::call(request, &self.settings, options);
        let value = self
            .upstash
            .run_script(call.script, &call.keys, &call.args)
            .await
            .map_err(store_error)?;
        let parts =
            strings(&value).ok_or_else(|| StoreError::Internal(format!("script reply {value}")))?;
        script::parse_reply(&parts, &request.session_id)
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    async fn get(&self, session_id: &str) -> Result<Option<SyncState>, StoreError> {
        let key = SessionKeys::new(session_id, self.settings.shards).state;
        match self
            .upstash
            .command(&["GET", key.as_str()])
            .await
            .map_err(store_error)?
        {
            Value::Null => Ok(None),
            Value::String(text) => record::decode(&text)
                .map(Some)
                .map_err(|e| StoreError::Internal(format!("stored state of {session_id}: {e}"))),
            other => Err(StoreError::Internal(format!("GET gave {other}"))),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.upstash.ping().await.map_err(store_error)
    }

    async fn time_ms(&self) -> Result<i64, StoreError> {
        self.upstash.time_ms().await.map_err(store_error)
    }

    async fn devices(&self, op: &DeviceOp) -> Result<Result<DeviceReply, DomainError>, StoreError> {
        let call = devices::call(op, &self.settings, None);
        let value = self
            .upstash
            .run_script(call.script, &call.keys, &call.args)
            .await
            .map_err(store_error)?;
        let parts =
            strings(&value).ok_or_else(|| StoreError::Internal(format!("script reply {value}")))?;
        devices::parse_reply(&parts, op.session_id())
            .map_err(|e| StoreError::Internal(e.to_string()))
    }
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
    //! The Upstash store under the HTTP core: Upstash's replies and failures
    //! become the right responses. The flow itself is tested in
    //! `synckairos_api`.
    use super::*;
    use crate::upstash::{HttpReply, HttpRequest};
    use futures::executor::block_on;
    use synckairos_api::{ApiResponse, Body, Handled, Incoming, Unlimited};

    const SID: &str = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11";

    /// Always gives the same answer.
    struct Fixed(Result<HttpReply, UpstashError>);

    impl Transport for Fixed {
        async fn post(&self, _req: HttpRequest) -> Result<HttpReply, UpstashError> {
            self.0.clone()
        }
    }

    fn config(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            match name {
                "UPSTASH_REDIS_REST_URL" => Some("http://127.0.0.1:1"),
                "UPSTASH_REDIS_REST_TOKEN" => Some("t"),
                "AUTH_MODE" => Some("disabled"),
                other => extra.iter().find(|(k, _)| *k == other).map(|(_, v)| *v),
            }
            .map(String::from)
        })
    }

    fn with(reply: Result<(u16, &str), UpstashError>) -> App<Fixed> {
        let reply = reply.map(|(status, body)| HttpReply {
            status,
            body: body.into(),
        });
        app(config(&[]), |_| Fixed(reply))
    }

    fn call(app: &App<Fixed>, method: &str, path: &str) -> Handled {
        let mut h = block_on(app.handle(
            &Incoming {
                method,
                path,
                body: Body::Bytes(b""),
                local: true,
                ..Incoming::default()
            },
            &Unlimited,
        ));
        h.response
            .headers
            .retain(|(k, _)| !k.starts_with("access-control-"));
        h
    }

    /// The record of a freshly created session, as the script would store it.
    fn record() -> String {
        let body = serde_json::json!({"session_id": SID, "sync_mode": "per_participant", "total_time_ms": 60000,
            "participants": [{"participant_id": "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b12", "participant_index": 0, "total_time_ms": 60000}]});
        let spec = synckairos_core::validate::validate_create(&body).unwrap();
        record::encode(&synckairos_core::model::initial_state(
            &spec,
            1_795_455_546_123,
        ))
    }

    #[test]
    fn redis_out_of_memory_and_plan_limits_are_503_not_internal_errors() {
        let oom = "OOM command not allowed when used memory > 'maxmemory'.";
        let r = call(
            &with(Ok((200, &format!(r#"{{"error":"{oom}"}}"#)))),
            "POST",
            &format!("/v1/sessions/{SID}/pause"),
        );
        assert_eq!(r.response.status, 503, "{}", r.response.body);
        assert!(r.response.body.contains("SERVICE_UNAVAILABLE"));
        // Upstash's plan limits, as a Redis error or with an HTTP status.
        for (status, body) in [
            (
                400,
                r#"{"error":"ERR max requests limit exceeded. Limit: 10000, Usage: 10000."}"#,
            ),
            (429, r#"{"error":"ERR max daily request limit exceeded"}"#),
        ] {
            let r = call(
                &with(Ok((status, body))),
                "POST",
                &format!("/v1/sessions/{SID}/pause"),
            );
            assert_eq!(r.response.status, 503, "{body}: {}", r.response.body);
            assert!(r.response.body.contains("SERVICE_UNAVAILABLE"));
            assert!(!r.response.body.contains("max"), "{}", r.response.body);
        }
        // Any other Redis error stays a 500.
        let r = call(
            &with(Ok((200, r#"{"error":"ERR something else"}"#))),
            "POST",
            &format!("/v1/sessions/{SID}/pause"),
        );
        assert_eq!(r.response.status, 500);
    }

    #[test]
    fn a_misconfigured_worker_is_alive_but_not_ready() {
        let a: App<Fixed> = app(config(&[("SHARDS", "0")]), |_| unreachable!());
        assert_eq!(call(&a, "GET", "/health").response.status, 200);
        let r = call(&a, "GET", "/ready");
        assert_eq!(
            (r.response.status, r.response.body.as_str()),
            (503, r#"{"status":"not_ready","error":"misconfigured"}"#)
        );
        assert!(r.error.unwrap().contains("SHARDS"));
    }

    #[test]
    fn ready_time_and_reads_go_through_upstash() {
        let ok = call(&with(Ok((200, r#"{"result":"PONG"}"#))), "GET", "/ready");
        assert_eq!(
            ok.response,
            ApiResponse {
                status: 200,
                body: r#"{"status":"ready"}"#.into(),
                headers: vec![],
            }
        );
        let down = call(
            &with(Err(UpstashError::Transport("ECONNREFUSED".into()))),
            "GET",
            "/ready",
        );
        assert_eq!(
            down.response.body,
            r#"{"status":"not_ready","error":"redis unreachable"}"#
        );
        assert!(down.error.unwrap().contains("ECONNREFUSED"));
        let t = call(
            &with(Ok((200, r#"{"result":["1795455546","123999"]}"#))),
            "GET",
            "/v1/time",
        );
        assert_eq!(
            t.response.body,
            r#"{"timestamp_ms":1795455546123,"server_version":"2.0.0","drift_tolerance_ms":50}"#
        );
        let reply = serde_json::json!({ "result": record() }).to_string();
        let g = call(
            &with(Ok((200, &reply))),
            "GET",
            &format!("/v1/sessions/{SID}"),
        );
        assert_eq!(g.response.status, 200);
        assert!(g
            .response
            .body
            .contains(r#""status":"pending","version":1"#));
        let missing = call(
            &with(Ok((200, r#"{"result":null}"#))),
            "GET",
            &format!("/v1/sessions/{SID}"),
        );
        assert_eq!(missing.response.status, 404);
    }

    #[test]
    fn upstash_failures_are_503_or_500_and_never_leak() {
        let path = format!("/v1/sessions/{SID}/pause");
        for (reply, status) in [
            (Err(UpstashError::Timeout(5000)), 503),
            (Ok((502, "bad gateway")), 503),
            (Ok((401, r#"{"error":"Unauthorized"}"#)), 500),
            (Ok((200, r#"{"result":"not a list"}"#)), 500),
            (Ok((200, r#"{"error":"ERR boom"}"#)), 500),
        ] {
            let h = call(&with(reply), "POST", &path);
            assert_eq!(h.response.status, status, "{:?}", h.error);
            assert!(h.error.is_some());
            for secret in ["Unauthorized", "boom", "not a list", "bad gateway"] {
                assert!(!h.response.body.contains(secret), "{}", h.response.body);
            }
        }
    }

    #[test]
    fn a_script_reply_becomes_the_response() {
        let reply = serde_json::json!({ "result": [
            r#"{"replayed":true,"rate":{"limit":10,"remaining":7,"reset_seconds":1},"kind":"state","expired_participant_id":null}"#,
            record()
        ]})
        .to_string();
        let h = call(
            &with(Ok((200, &reply))),
            "POST",
            &format!("/v1/sessions/{SID}/switch"),
        );
        assert_eq!(h.response.status, 200);
        assert!(h
            .response
            .headers
            .contains(&("idempotent-replayed", "true".into())));
        assert!(h
            .response
            .headers
            .contains(&("ratelimit-remaining", "7".into())));
    }
}
