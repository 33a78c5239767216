//! A client of Firebase Cloud Messaging's HTTP v1 API: OAuth 2.0 access
//! tokens from a service account (an RS256 JWT grant, as Google's own
//! libraries do it), cached until shortly before they expire, and
//! `messages:send` with its errors classified.

use crate::http::Http;
use crate::metrics::{Metrics, SendResult};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The OAuth scope of FCM.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// `messages:send` unless `FCM_SEND_URL` says otherwise; `{project_id}` is
/// the service account's.
pub const DEFAULT_SEND_URL: &str =
    "https://fcm.googleapis.com/v1/projects/{project_id}/messages:send";

/// The form body's grant type (already form-encoded).
const GRANT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// Lifetime asked for in the JWT grant (Google's maximum).
const ASSERTION_LIFETIME_S: u64 = 3600;

/// One HTTP request's own limit (a retry still ends at the push's deadline).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The first wait before a retry; doubled each time, unless `Retry-After`
/// says how long.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// A service account key file (the fields this client reads).
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    /// `service_account`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The Firebase project.
    pub project_id: String,
    /// The key's id: the JWT's `kid`.
    pub private_key_id: String,
    /// PEM (PKCS#8) RSA private key.
    pub private_key: String,
    /// The account: the JWT's `iss`.
    pub client_email: String,
    /// Where access tokens come from: the JWT's `aud`, and where it is sent.
    pub token_uri: String,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// Why the client could not be built or a token not obtained.
#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    /// The service account file is unreadable or not one.
    #[error("service account: {0}")]
    Account(String),
    /// The token endpoint refused or could not be reached.
    #[error("access token: {0}")]
    Token(String),
}

impl ServiceAccount {
    /// Parses a service account key file's JSON.
    pub fn from_json(text: &str) -> Result<ServiceAccount, FcmError> {
        let a: ServiceAccount =
            serde_json::from_str(text).map_err(|e| FcmError::Account(e.to_string()))?;
        if a.kind != "service_account" {
            return Err(FcmError::Account(format!(
                "type is {:?}, not service_account",
                a.kind
            )));
        }
        Ok(a)
    }

    /// Reads a service account key file.
    pub fn from_file(path: &std::path::Path) -> Result<ServiceAccount, FcmError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FcmError::Account(format!("{}: {e}", path.display())))?;
        ServiceAccount::from_json(&text)
    }
}

/// The claims of the JWT grant.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct GrantClaims {
    /// The service account's email.
    pub iss: String,
    /// [`SCOPE`].
    pub scope: String,
    /// The token endpoint.
    pub aud: String,
    /// Issued at (epoch s).
    pub iat: u64,
    /// `iat` + 3600.
    pub exp: u64,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: u64,
}

struct Cached {
    value: String,
    /// When to stop using it (its expiry less the refresh margin).
    use_until: Instant,
}

/// Which push it is (the `type` of its `data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushKind {
    /// The participant's turn began.
    YourTurn,
    /// The participant's clock is running low.
    LowTime,
}

impl PushKind {
    /// `your_turn` or `low_time`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::YourTurn => "your_turn",
            PushKind::LowTime => "low_time",
        }
    }

    /// The notification's title and body.
    pub fn text(self) -> (&'static str, &'static str) {
        match self {
            PushKind::YourTurn => ("Your turn", "Your clock is running."),
            PushKind::LowTime => ("Time running low", "Your clock is running low."),
        }
    }
}

/// One notification to one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The device's FCM registration token.
    pub token: String,
    /// What it says.
    pub kind: PushKind,
    /// The session.
    pub session_id: String,
    /// The session version the event produced.
    pub version: u64,
}

/// The `messages:send` body of a push, with an Android TTL of `ttl_s`.
pub fn message_body(push: &Push, ttl_s: u64) -> Value {
    let (title, body) = push.kind.text();
    json!({"message": {
        "token": push.token,
        "notification": {"title": title, "body": body},
        "data": {
            "session_id": push.session_id,
            "version": push.version.to_string(),
            "type": push.kind.as_str(),
        },
        "android": {"priority": "high", "ttl": format!("{ttl_s}s")},
        "apns": {"headers": {"apns-priority": "10"}},
    }})
}

/// What became of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// FCM accepted it.
    Sent,
    /// The token is dead (`UNREGISTERED`, or a malformed token): drop it.
    Unregistered,
    /// Not delivered (the cause, for the log; never the token).
    Failed(String),
}

/// How FCM answered one send.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Ok,
    Auth,
    Dead,
    Transient(Option<Duration>),
    Other(String),
}

fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Reply {
    let fcm_code = || {
        let v: Value = serde_json::from_str(body).ok()?;
        v["error"]["details"].as_array()?.iter().find_map(|d| {
            d["@type"]
                .as_str()
                .filter(|t| t.ends_with("google.firebase.fcm.v1.FcmError"))
                .and_then(|_| d["errorCode"].as_str().map(str::to_string))
        })
    };
    match status {
        200..=299 => Reply::Ok,
        401 | 403 => Reply::Auth,
        404 => Reply::Dead,
        400 if matches!(
            fcm_code().as_deref(),
            Some("UNREGISTERED" | "INVALID_ARGUMENT")
        ) =>
        {
            Reply::Dead
        }
        429 | 500 | 502 | 503 | 504 => Reply::Transient(
            retry_after
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        ),
        s => Reply::Other(format!(
            "status {s} {}",
            fcm_code().unwrap_or_else(|| "no FCM error code".into())
        )),
    }
}

/// The FCM client. Cheap to share (`Arc`); one token refresh at a time.
pub struct FcmClient {
    http: Http,
    account: ServiceAccount,
    key: EncodingKey,
    send_url: String,
    margin: Duration,
    token: Mutex<Option<Cached>>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for FcmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmClient")
            .field("account", &self.account)
            .field("send_url", &self.send_url)
            .finish_non_exhaustive()
    }
}

impl FcmClient {
    /// A client for `account`, sending to `send_url` (`None`:
    /// [`DEFAULT_SEND_URL`]; `{project_id}` is substituted), refreshing
    /// access tokens `margin` before they expire.
    pub fn new(
        account: ServiceAccount,
        send_url: Option<&str>,
        margin: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<FcmClient, FcmError> {
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| FcmError::Account(format!("private_key: {e}")))?;
        let send_url = send_url
            .unwrap_or(DEFAULT_SEND_URL)
            .replace("{project_id}", &account.project_id);
        let http = Http::new().map_err(|e| FcmError::Account(format!("http client: {e}")))?;
        Ok(FcmClient {
            http,
            account,
            key,
            send_url,
            margin,
            token: Mutex::new(None),
            metrics,
        })
    }

    /// The URL pushes are sent to.
    pub fn send_url(&self) -> &str {
        &self.send_url
    }

    /// The signed JWT grant, issued at `iat` (epoch s).
    pub fn assertion(&self, iat: u64) -> Result<String, FcmError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.account.private_key_id.clone());
        let claims = GrantClaims {
            iss: self.account.client_email.clone(),
            scope: SCOPE.into(),
            aud: self.account.token_uri.clone(),
            iat,
            exp: iat + ASSERTION_LIFETIME_S,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| FcmError::Token(format!("signing: {e}")))
    }

    /// A valid access token: the cached one, or a fresh one when it is
    /// missing, within the margin of its expiry, or is `stale` (the token a
    /// send was just refused with). Callers wait on one refresh at a time.
    pub async fn access_token(&self, stale: Option<&str>) -> Result<String, FcmError> {
        let mut cached = self.token.lock().await;
        if let Some(c) = cached.as_ref() {
            let refused = stale == Some(c.value.as_str());
            if !refused && Instant::now() < c.use_until {
                return Ok(c.value.clone());
            }
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<Cached, FcmError> {
        self.metrics.token_refreshed();
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let form = format!("grant_type={GRANT_TYPE}&assertion={}", self.assertion(iat)?);
        let asked = Instant::now();
        let r = self
            .http
            .post(
                &self.account.token_uri,
                &[("content-type", "application/x-www-form-urlencoded")],
                form,
                REQUEST_TIMEOUT,
            )
            .await
            .map_err(|e| FcmError::Token(format!("request: {e}")))?;
        if !(200..300).contains(&r.status) {
            return Err(FcmError::Token(format!("status {}", r.status)));
        }
        let reply: TokenReply = serde_json::from_str(&r.body)
            .map_err(|e| FcmError::Token(format!("reply is not a token: {e}")))?;
        let lifetime = Duration::from_secs(reply.expires_in);
        Ok(Cached {
            value: reply.access_token,
            use_until: asked + lifetime.saturating_sub(self.margin),
        })
    }

    /// Sends one push, retrying what may pass (429, 5xx, a network error;
    /// after `Retry-After` when given, else with doubling waits) until
    /// `deadline`, and refreshing the access token once on a 401 or 403.
    /// `ttl_s` is the Android TTL. Records its result in the metrics.
    pub async fn send(&self, push: &Push, ttl_s: u64, deadline: Instant) -> Outcome {
        let outcome = self.try_send(push, ttl_s, deadline).await;
        self.metrics.sent(match outcome {
            Outcome::Sent => SendResult::Sent,
            Outcome::Unregistered => SendResult::Unregistered,
            Outcome::Failed(_) => SendResult::Failed,
        });
        outcome
    }

    async fn try_send(&self, push: &Push, ttl_s: u64, deadline: Instant) -> Outcome {
        let body = message_body(push, ttl_s).to_string();
        let mut refreshed = false;
        let mut stale: Option<String> = None;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let wait = match self.access_token(stale.as_deref()).await {
                Err(e) => {
                    tracing::warn!(error = %e, "no FCM access token");
                    backoff
                }
                Ok(token) => {
                    let started = Instant::now();
                    let left = deadline.saturating_duration_since(started);
                    let bearer = format!("Bearer {token}");
                    let r = self
                        .http
                        .post(
                            &self.send_url,
                            &[
                                ("authorization", bearer.as_str()),
                                ("content-type", "application/json"),
                            ],
                            body.clone(),
                            left.clamp(Duration::from_millis(1), REQUEST_TIMEOUT),
                        )
                        .await;
                    let reply = match r {
                        Ok(r) => classify(r.status, r.retry_after.as_deref(), &r.body),
                        Err(e) => {
                            tracing::debug!(error = %e, "FCM send failed");
                            Reply::Transient(None)
                        }
                    };
                    self.metrics.observe_send(started.elapsed());
                    match reply {
                        Reply::Ok => return Outcome::Sent,
                        Reply::Dead => return Outcome::Unregistered,
                        Reply::Auth if !refreshed => {
                            refreshed = true;
                            stale = Some(token);
                            continue;
                        }
                        Reply::Auth => return Outcome::Failed("refused after a refresh".into()),
                        Reply::Other(why) => return Outcome::Failed(why),
                        Reply::Transient(after) => after.unwrap_or(backoff),
                    }
                }
            };
            if Instant::now() + wait >= deadline {
                return Outcome::Failed("still failing at the push's max age".into());
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(8));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_as_documented() {
        let fcm = |code: &str| {
            json!({"error": {"code": 400, "message": "m", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": code}]}})
            .to_string()
        };
        let bad_request = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.data[0].value"}]}]}})
        .to_string();
        assert_eq!(classify(200, None, "{}"), Reply::Ok);
        assert_eq!(classify(404, None, &fcm("UNREGISTERED")), Reply::Dead);
        assert_eq!(classify(400, None, &fcm("UNREGISTERED")), Reply::Dead);
        assert_eq!(classify(400, None, &fcm("INVALID_ARGUMENT")), Reply::Dead);
        // A field of our own message is wrong: the token is not to blame.
        assert!(matches!(classify(400, None, &bad_request), Reply::Other(_)));
        assert_eq!(classify(401, None, ""), Reply::Auth);
        assert_eq!(classify(403, None, &fcm("SENDER_ID_MISMATCH")), Reply::Auth);
        assert_eq!(
            classify(429, Some("7"), &fcm("QUOTA_EXCEEDED")),
            Reply::Transient(Some(Duration::from_secs(7)))
        );
        assert_eq!(classify(503, None, ""), Reply::Transient(None));
        assert!(matches!(classify(418, None, "teapot"), Reply::Other(_)));
    }

    #[test]
    fn message_bodies() {
        let p = Push {
            token: "tok".into(),
            kind: PushKind::LowTime,
            session_id: "s".into(),
            version: 7,
        };
        assert_eq!(
            message_body(&p, 60),
            json!({"message": {"token": "tok",
                "notification": {"title": "Time running low", "body": "Your clock is running low."},
                "data": {"session_id": "s", "version": "7", "type": "low_time"},
                "android": {"priority": "high", "ttl": "60s"},
                "apns": {"headers": {"apns-priority": "10"}}}})
        );
    }

    #[test]
    fn accounts() {
        assert!(ServiceAccount::from_json("{}").is_err());
        let a = ServiceAccount::from_json(
            &json!({"type": "service_account", "project_id": "p", "private_key_id": "k",
                "private_key": "SECRET", "client_email": "e@x", "token_uri": "http://t"})
            .to_string(),
        )
        .unwrap();
        assert!(!format!("{a:?}").contains("SECRET"));
        let user = json!({"type": "authorized_user", "project_id": "p", "private_key_id": "k",
            "private_key": "x", "client_email": "e", "token_uri": "t"});
        assert!(ServiceAccount::from_json(&user.to_string()).is_err());
    }
}
