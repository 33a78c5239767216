//! What the HTTP core answers, before a transport turns it into its own
//! response type. The bodies come from `synckairos_core::api`; only `/health`
//! and `/ready`, which are not part of the `{"data"}`/`{"error"}` scheme, are
//! shaped here.

use serde::Serialize;
use synckairos_core::api::ApiError;

/// Status, extra headers and JSON body (empty for 204).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON text.
    pub body: String,
    /// Headers beyond content type and CORS (`RateLimit-*`, `Retry-After`,
    /// `Idempotent-Replayed`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiResponse {
    /// `status` with `body` serialized.
    pub fn json(status: u16, body: &impl Serialize) -> ApiResponse {
        ApiResponse {
            status,
            body: serde_json::to_string(body).expect("response bodies serialize"),
            headers: Vec::new(),
        }
    }

    /// `{"data": data}`.
    pub fn data(status: u16, data: &impl Serialize) -> ApiResponse {
        ApiResponse {
            status,
            body: synckairos_core::api::data(data),
            headers: Vec::new(),
        }
    }

    /// The error's status and `{"error": {...}}` body.
    pub fn error(e: &ApiError) -> ApiResponse {
        let mut headers = Vec::new();
        if let Some(s) = e.retry_after_seconds() {
            headers.push(("retry-after", s.to_string()));
        }
        if let Some(allow) = e.allow() {
            headers.push(("allow", allow.to_string()));
        }
        ApiResponse {
            status: e.status(),
            body: e.body(),
            headers,
        }
    }

    /// An empty response (204).
    pub fn empty(status: u16) -> ApiResponse {
        ApiResponse {
            status,
            body: String::new(),
            headers: Vec::new(),
        }
    }
}

/// `/health` and `/ready`: `{"status"}` plus `error` when not ready.
#[derive(Serialize)]
pub struct Probe<'a> {
    /// `ok`, `ready` or `not_ready`.
    pub status: &'a str,
    /// Why it is not ready (a short public reason, never internal text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            ApiResponse::error(&ApiError::NotFound),
            ApiResponse {
                status: 404,
                body: r#"{"error":{"code":"NOT_FOUND","message":"Route not found"}}"#.into(),
                headers: vec![],
            }
        );
        let p = Probe {
            status: "not_ready",
            error: Some("redis timeout"),
        };
        assert_eq!(
            ApiResponse::json(503, &p).body,
            r#"{"status":"not_ready","error":"redis timeout"}"#
        );
    }
}
