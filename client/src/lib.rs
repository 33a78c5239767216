//! # synckairos-client
//!
//! A client of the SyncKairos REST API (docs/API.md §3): every command as a typed
//! call, replies as [`SyncState`], refusals as [`ClientError::Api`] with the
//! stable code. It also estimates the server's clock ([`Client::sync_time`]):
//! NTP-style samples of `GET /v1/time`, keeping the one with the smallest
//! round trip, whose half is the error bound. With that estimate,
//! [`live_clocks`] computes every participant's clock now, as every client of
//! a session must (nobody counts down locally). [`Watcher`] watches sessions
//! on a gateway over WebSocket and estimates its clock with `TIME_SYNC`.
#![deny(missing_docs)]

pub mod ws;
pub use ws::Watcher;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synckairos_core::view::{clocks, Clock};
use synckairos_core::SyncState;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API refused: its status and `{"error": {code, message}}`.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The stable error code (`SESSION_NOT_FOUND`, …).
        code: String,
        /// The human message.
        message: String,
    },
    /// No HTTP answer, or one that is not the documented shape.
    #[error("transport: {0}")]
    Transport(String),
}

/// The server's clock as seen from here: `server_now = local_now + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEstimate {
    /// Server minus local clock, in ms.
    pub offset_ms: i64,
    /// The offset is right within ± this many ms (half the best round trip).
    pub error_bound_ms: i64,
}

impl TimeEstimate {
    /// The server's time now, by this estimate (epoch ms).
    pub fn server_now_ms(&self) -> i64 {
        local_now_ms() + self.offset_ms
    }
}

/// This machine's clock (epoch ms).
pub fn local_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Every participant's clock at the server's `now` (by `time`).
pub fn live_clocks(state: &SyncState, time: &TimeEstimate) -> Vec<Clock> {
    clocks(state, time.server_now_ms())
}

/// A REST client of one deployment.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

impl Client {
    /// A client of `base_url` (e.g. `http://127.0.0.1:8787`), sending
    /// `Authorization: Bearer <token>` when given one.
    pub fn new(base_url: &str, token: Option<String>) -> Client {
        // TLS is rustls; when another crate of the same build enables reqwest's
        // rustls without a crypto provider, the client needs the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client with default TLS settings builds"),
            base: base_url.trim_end_matches('/').to_string(),
            token,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let response = r
            .send()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if status.is_success() {
            return Ok((status, bytes.to_vec()));
        }
        let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = |k: &str| error["error"][k].as_str().unwrap_or_default().to_string();
        Err(ClientError::Api {
            status: status.as_u16(),
            code: text("code"),
            message: text("message"),
        })
    }

    async fn state(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<SyncState, ClientError> {
        let (_, bytes) = self.call(method, path, body).await?;
        serde_json::from_slice::<Data<SyncState>>(&bytes)
            .map(|d| d.data)
            .map_err(|e| ClientError::Transport(format!("unexpected body: {e}")))
    }

    /// `POST /v1/sessions` with a create body (docs/API.md §3).
    pub async fn create(&self, body: &Value) -> Result<SyncState, ClientError> {
        self.state(Method::POST, "/v1/sessions", Some(body)).await
    }

    /// `GET /v1/sessions/:id`.
    pub async fn get(&self, session_id: &str) -> Result<SyncState, ClientError> {
        self.state(Method::GET, &format!("/v1/sessions/{session_id}"), None)
            .await
    }

    /// `POST /v1/sessions/:id/<action>` for `start`, `pause`, `resume`,
    /// `complete` and `cancel`.
    pub async fn command(&self, session_id: &str, action: &str) -> Result<SyncState, ClientError> {
        self.state(
            Method::POST,
            &format!("/v1/sessions/{session_id}/{action}"),
            None,
        )
        .await
    }

    /// `POST /v1/sessions/:id/switch`; `next` names the next participant
    /// (else the rotation's next).
    pub async fn switch(
        &self,
        session_id: &str,
        next: Option<&str>,
    ) -> Result<SwitchReply, ClientError> {
        let body = match next {
            Some(p) => serde_json::json!({ "next_participant_id": p }),
            None => serde_json::json!({}),
        };
        let (_, bytes) = self
            .call(
                Method::POST,
                &format!("/v1/sessions/{session_id}/switch"),
                Some(&body),
            )
            .await?;
        serde_json::from_slice::<Data<SwitchReply>>(&bytes)
            .map(|d| d.data)
            .map_err(|e| ClientError::Transport(format!("unexpected body: {e}")))
    }

    /// `DELETE /v1/sessions/:id` (idempotent).
    pub async fn delete(&self, session_id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/v1/sessions/{session_id}"), None)
            .await
            .map(|_| ())
    }

    /// One `GET /v1/time` exchange: `(offset_ms, round_trip_ms)`. The server
    /// time is taken as the middle of the round trip.
    pub async fn time_sample(&self) -> Result<(i64, i64), ClientError> {
        let t0 = local_now_ms();
        let started = Instant::now();
        let (_, bytes) = self.call(Method::GET, "/v1/time", None).await?;
        let rtt = started.elapsed().as_millis() as i64;
        let server = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["timestamp_ms"].as_i64())
            .ok_or_else(|| ClientError::Transport("no timestamp_ms in /v1/time".into()))?;
        Ok((server - (t0 + rtt / 2), rtt))
    }

    /// Estimates the server's clock from `samples` exchanges, keeping the
    /// one with the smallest round trip (the least room for asymmetry).
    pub async fn sync_time(&self, samples: usize) -> Result<TimeEstimate, ClientError> {
        let mut best: Option<(i64, i64)> = None;
        for _ in 0..samples.max(1) {
            let (offset, rtt) = self.time_sample().await?;
            if best.is_none_or(|(_, b)| rtt < b) {
                best = Some((offset, rtt));
            }
        }
        let (offset_ms, rtt) = best.expect("at least one sample");
        Ok(TimeEstimate {
            offset_ms,
            error_bound_ms: (rtt + 1) / 2,
        })
    }
}

/// The reply to a switch (docs/API.md §3: a subset of the state plus
/// `expired_participant_id`).
#[derive(Clone, Debug, Deserialize)]
pub struct SwitchReply {
    /// The session.
    pub session_id: String,
    /// Whose turn it is now.
    pub active_participant_id: Option<String>,
    /// The new state's version.
    pub version: u64,
    /// The status after the switch (`expired` if the clock had run out).
    pub status: String,
    /// Set when the switch found the clock already run out.
    #[serde(default)]
    pub expired_participant_id: Option<String>,
}

/// Mints an HS256 token for a local stack: `role` (`admin`, `host`,
/// `participant`, `viewer`), `sub` (a participant's id for a participant),
/// optionally `sid` (the only session it is for), valid `ttl_s` seconds.
/// Production tokens come from your identity provider, not from here.
pub fn mint_token(
    secret: &str,
    role: &str,
    sub: &str,
    sid: Option<&str>,
    ttl_s: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = (local_now_ms() / 1000).max(0) as u64 + ttl_s;
    let mut claims = serde_json::json!({"sub": sub, "role": role, "exp": exp});
    if let Some(sid) = sid {
        claims["sid"] = serde_json::Value::String(sid.to_string());
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}
