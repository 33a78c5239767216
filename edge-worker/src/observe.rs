//! What the worker tells operators about each request: one structured JSON
//! log line ([`RequestRecord::log_line`]) and one Workers Analytics Engine
//! data point ([`RequestRecord::data_point`], written through the binding
//! [`ANALYTICS`] by [`AnalyticsBinding`]).
//!
//! The data point's layout is the contract of the SQL queries in
//! docs/RUNBOOK.md ("Edge metrics"):
//!
//! | column | value |
//! |---|---|
//! | `index1` | the route (`/v1/sessions/:id/switch`, …; `unmatched`) |
//! | `blob1` | the route, again (indexes cannot be grouped on) |
//! | `blob2` | the method |
//! | `blob3` | the status, as text (`"200"`) |
//! | `blob4` | the error code of a refused request (`""` when none) |
//! | `double1` | latency, ms (the whole request, as the worker saw it) |
//! | `double2` | time waiting for Upstash, ms (0 when no call was made) |
//! | `double3` | the status |
//! | `double4` | 1 when the status is 5xx, else 0 |
//!
//! Everything here but [`AnalyticsBinding`] is plain Rust that `cargo test`
//! runs on the host.

use serde::Serialize;
use worker::js_sys::{self, Array, Function, Object, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};

/// The Analytics Engine binding's name in `wrangler.toml`
/// (`[[analytics_engine_datasets]] binding = …`).
pub const ANALYTICS: &str = "ANALYTICS";

/// Label of a request no route takes.
pub const UNMATCHED: &str = "unmatched";

/// One request, as logged and counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord<'a> {
    /// `cf-ray` when Cloudflare sent one, else one made up here; also the
    /// response's `x-request-id`.
    pub request_id: &'a str,
    /// The method as sent.
    pub method: &'a str,
    /// The route's pattern, never the raw path (bounded, and no ids).
    pub route: &'static str,
    /// The response status.
    pub status: u16,
    /// The stable code of a refusal or failure, when the body carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    /// The whole request, as the worker saw it, ms.
    pub latency_ms: f64,
    /// Waiting for Upstash, ms; `None` when the request made no call.
    pub upstash_ms: Option<f64>,
    /// What went wrong inside (logged, never sent to the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

#[derive(Serialize)]
struct LogLine<'a> {
    level: &'static str,
    msg: &'static str,
    #[serde(flatten)]
    record: &'a RequestRecord<'a>,
}

/// An Analytics Engine data point: at most 1 index, 20 blobs, 20 doubles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataPoint {
    /// `indexes` (the sampling key).
    pub indexes: Vec<String>,
    /// `blobs`.
    pub blobs: Vec<String>,
    /// `doubles`.
    pub doubles: Vec<f64>,
}

impl RequestRecord<'_> {
    /// The JSON log line: `level` (`error` for a 5xx or an internal error,
    /// else `info`), `msg` `"request"`, then the record's fields.
    pub fn log_line(&self) -> String {
        let level = if self.status >= 500 || self.error.is_some() {
            "error"
        } else {
            "info"
        };
        serde_json::to_string(&LogLine {
            level,
            msg: "request",
            record: self,
        })
        .unwrap_or_else(|e| format!(r#"{{"level":"error","msg":"log line: {e}"}}"#))
    }

    /// The data point, in the layout the module documentation gives.
    pub fn data_point(&self) -> DataPoint {
        DataPoint {
            indexes: vec![self.route.to_string()],
            blobs: vec![
                self.route.to_string(),
                self.method.to_string(),
                self.status.to_string(),
                self.code.unwrap_or_default().to_string(),
            ],
            doubles: vec![
                round3(self.latency_ms),
                round3(self.upstash_ms.unwrap_or(0.0)),
                f64::from(self.status),
                if self.status >= 500 { 1.0 } else { 0.0 },
            ],
        }
    }
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// The route label of a request: its pattern, or [`UNMATCHED`].
pub fn route_label(method: &str, path: &str) -> &'static str {
    synckairos_core::api::route(method, path)
        .map(|r| r.pattern())
        .unwrap_or(UNMATCHED)
}

/// The error code of a JSON error body (`{"error": {"code": …}}`), if any.
pub fn error_code(body: &str) -> Option<String> {
    if !body.starts_with("{\"error\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["error"]["code"].as_str().map(str::to_string)
}

/// `cf-ray` when present (what Cloudflare's own logs show), else 16 random
/// hex digits from `random` (a source of uniform numbers in [0, 1)).
pub fn request_id(cf_ray: Option<&str>, mut random: impl FnMut() -> f64) -> String {
    match cf_ray
        .map(str::trim)
        .filter(|r| !r.is_empty() && r.len() <= 64)
    {
        Some(ray) => ray.to_string(),
        None => (0..4)
            .map(|_| format!("{:04x}", (random() * 65536.0) as u32 & 0xffff))
            .collect(),
    }
}

/// The Analytics Engine binding of `env`: `writeDataPoint(point)`, called by
/// duck typing (`Reflect`), so the same code runs on Cloudflare and under
/// plain workerd with the local stand-in (`edge-worker/local/analytics.js`).
pub struct AnalyticsBinding {
    binding: JsValue,
    write: Function,
}

impl AnalyticsBinding {
    /// The binding `name` of `env`, or `None` when it is not bound.
    pub fn from_env(env: &JsValue, name: &str) -> Option<AnalyticsBinding> {
        let binding = Reflect::get(env, &name.into()).ok()?;
        if !binding.is_object() {
            return None;
        }
        let write = Reflect::get(&binding, &"writeDataPoint".into())
            .ok()?
            .dyn_into::<Function>()
            .ok()?;
        Some(AnalyticsBinding { binding, write })
    }

    /// Writes `point` (fire and forget, as the binding is: it never blocks
    /// the response). An error is returned for the log.
    pub fn write(&self, point: &DataPoint) -> Result<(), String> {
        let strings = |v: &[String]| v.iter().map(JsValue::from).collect::<Array>();
        let o = Object::new();
        let set = |k: &str, v: &JsValue| Reflect::set(&o, &k.into(), v).map(|_| ());
        set("indexes", &strings(&point.indexes))
            .and_then(|()| set("blobs", &strings(&point.blobs)))
            .and_then(|()| {
                set(
                    "doubles",
                    &point
                        .doubles
                        .iter()
                        .map(|d| JsValue::from_f64(*d))
                        .collect::<Array>(),
                )
            })
            .map_err(describe)?;
        self.write
            .call1(&self.binding, &o)
            .map(|_| ())
            .map_err(describe)
    }
}

fn describe(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(status: u16, code: Option<&'a str>, error: Option<&'a str>) -> RequestRecord<'a> {
        RequestRecord {
            request_id: "8f2c1a7e5b3d9f01-AMS",
            method: "POST",
            route: route_label(
                "POST",
                "/v1/sessions/0b1c8f6e-2f4a-4c1e-9a57-3d5e7f9b1c2d/switch",
            ),
            status,
            code,
            latency_ms: 12.3456,
            upstash_ms: Some(9.87654),
            error,
        }
    }

    #[test]
    fn the_log_line_is_one_json_object_with_the_route_not_the_path() {
        let line = record(200, None, None).log_line();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            serde_json::json!({"level": "info", "msg": "request",
                "request_id": "8f2c1a7e5b3d9f01-AMS", "method": "POST",
                "route": "/v1/sessions/:id/switch", "status": 200,
                "latency_ms": 12.3456, "upstash_ms": 9.87654})
        );
        let line = record(503, Some("SERVICE_UNAVAILABLE"), Some("upstash: timed out")).log_line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["code"], "SERVICE_UNAVAILABLE");
        assert_eq!(v["error"], "upstash: timed out");
    }

    #[test]
    fn the_data_point_has_the_documented_layout() {
        assert_eq!(
            record(429, Some("RATE_LIMITED"), None).data_point(),
            DataPoint {
                indexes: vec!["/v1/sessions/:id/switch".into()],
                blobs: vec![
                    "/v1/sessions/:id/switch".into(),
                    "POST".into(),
                    "429".into(),
                    "RATE_LIMITED".into()
                ],
                doubles: vec![12.346, 9.877, 429.0, 0.0],
            }
        );
        let p = record(500, None, Some("boom")).data_point();
        assert_eq!(p.doubles[3], 1.0);
        assert_eq!(p.blobs[3], "");
    }

    #[test]
    fn unknown_paths_are_one_label() {
        assert_eq!(route_label("GET", "/wp-admin/../etc/passwd"), UNMATCHED);
        assert_eq!(
            route_label("GET", "/v1/sessions/0b1c8f6e-2f4a-4c1e-9a57-3d5e7f9b1c2d"),
            "/v1/sessions/:id"
        );
    }

    #[test]
    fn request_ids_come_from_cf_ray_or_are_random_hex() {
        assert_eq!(request_id(Some("8f2c-AMS"), || 0.5), "8f2c-AMS");
        let mut n = 0.0;
        let id = request_id(None, || {
            n += 0.2;
            n
        });
        assert_eq!(id, "333366669999cccc");
        assert_eq!(request_id(Some(" "), || 0.0), "0000000000000000");
    }

    #[test]
    fn error_codes_are_read_from_error_bodies_only() {
        assert_eq!(
            error_code(r#"{"error":{"code":"VERSION_CONFLICT","message":"x"}}"#).as_deref(),
            Some("VERSION_CONFLICT")
        );
        assert_eq!(error_code(r#"{"data":{"error":{"code":"X"}}}"#), None);
        assert_eq!(error_code(""), None);
    }
}
