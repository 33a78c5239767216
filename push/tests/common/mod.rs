//! A local stand-in for Google's OAuth token endpoint and FCM HTTP v1's
//! `messages:send`, speaking them as documented, that records every request
//! byte for byte; and the service account file that points at it.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synckairos_push::{FcmClient, Metrics, ServiceAccount};

pub const PROJECT: &str = "test-project";
pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
pub const EMAIL: &str = "push@test-project.iam.gserviceaccount.com";
pub const PRIVATE_KEY: &str = include_str!("../fixtures/test-key.pem");
pub const PUBLIC_KEY: &str = include_str!("../fixtures/test-key.pub.pem");

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    pub fn is_token(&self) -> bool {
        self.uri == "/token"
    }
}

/// A canned reply: status, headers, body.
pub type Canned = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
pub struct Inner {
    pub requests: Vec<Recorded>,
    /// Replies of the send endpoint, in order; then 200.
    pub sends: VecDeque<Canned>,
    /// `expires_in` of every access token.
    pub expires_in: u64,
    pub tokens_issued: u32,
    pub sent_ok: u32,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub inner: Arc<Mutex<Inner>>,
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut g = inner.lock().unwrap();
    g.requests.push(Recorded {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
            .collect(),
        body: body.to_vec(),
    });
    let json = |status: u16, extra: Vec<(&'static str, String)>, body: String| {
        let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
        r.headers_mut().insert(
            "content-type",
            "application/json; charset=UTF-8".parse().unwrap(),
        );
        for (k, v) in extra {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        r
    };
    if uri.path() == "/token" {
        g.tokens_issued += 1;
        let body = serde_json::json!({"access_token": format!("ya29.token-{}", g.tokens_issued),
            "expires_in": g.expires_in, "token_type": "Bearer"});
        return json(200, vec![], body.to_string());
    }
    if uri.path() == format!("/v1/projects/{PROJECT}/messages:send") {
        if let Some((status, extra, body)) = g.sends.pop_front() {
            return json(status, extra, body);
        }
        g.sent_ok += 1;
        let body =
            serde_json::json!({"name": format!("projects/{PROJECT}/messages/{}", g.sent_ok)});
        return json(200, vec![], body.to_string());
    }
    json(404, vec![], "{}".into())
}

impl Fake {
    pub async fn start(expires_in: u64) -> Fake {
        let inner = Arc::new(Mutex::new(Inner {
            expires_in,
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { addr, inner }
    }

    pub fn token_uri(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// `FCM_SEND_URL` for this server (with the `{project_id}` placeholder).
    pub fn send_url(&self) -> String {
        format!(
            "http://{}/v1/projects/{{project_id}}/messages:send",
            self.addr
        )
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn sends(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| !r.is_token())
            .collect()
    }

    pub fn reply_next(&self, replies: Vec<Canned>) {
        self.inner.lock().unwrap().sends.extend(replies);
    }

    /// The service account file of this server (its `token_uri` is here).
    pub fn account_json(&self) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": KEY_ID,
            "private_key": PRIVATE_KEY,
            "client_email": EMAIL,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
        })
        .to_string()
    }

    pub fn account_file(&self, name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("synckairos-push-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, self.account_json()).unwrap();
        path
    }

    pub fn client(&self, metrics: Arc<Metrics>) -> FcmClient {
        let account = ServiceAccount::from_json(&self.account_json()).unwrap();
        FcmClient::new(
            account,
            Some(&self.send_url()),
            Duration::from_secs(300),
            metrics,
        )
        .unwrap()
    }
}

/// An FCM error body as the v1 API writes it.
pub fn fcm_error(code: u16, status: &str, error_code: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": "m", "status": status,
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": error_code}]}})
    .to_string()
}

/// The sends' (token, data.type, data.version), in order.
pub fn sent(fake: &Fake) -> Vec<(String, String, String)> {
    fake.sends()
        .iter()
        .map(|r| {
            let b: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let m = &b["message"];
            (
                m["token"].as_str().unwrap().to_string(),
                m["data"]["type"].as_str().unwrap().to_string(),
                m["data"]["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs one command on `e`; it must be accepted.
pub async fn run(e: &synckairos_engine::Engine, req: synckairos_core::Request) {
    let r = e
        .execute(&req, &synckairos_core::script::CallOptions::default())
        .await
        .unwrap();
    assert!(r.result.is_ok(), "{:?}", r.result);
}

/// Registers an Android device `token` for participant `pid` of `sid`.
pub async fn register(e: &synckairos_engine::Engine, sid: &str, pid: &str, token: &str) {
    use synckairos_core::devices::{DeviceOp, Platform, Registration};
    let op = DeviceOp::Register {
        session_id: sid.into(),
        registration: Registration {
            participant_id: pid.into(),
            token: token.into(),
            platform: Platform::Android,
        },
    };
    e.devices(&op, None).await.unwrap().unwrap();
}
