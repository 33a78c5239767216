//! [`Transport`] over the runtime's own `fetch`, with a timeout.
//!
//! This calls the JavaScript `fetch` and `Response.text()` through `web_sys`
//! rather than `worker::Fetch`: `worker::Response::text()` reads the body as
//! a stream, chunk by chunk through Rust futures, and releasing that reader
//! makes the runtime build a `TypeError` with a stack trace on every request.
//! Measured under workerd, that path cost ~380 µs of CPU per Upstash call;
//! see docs/BENCHMARKS.md. The timeout is an `AbortSignal.timeout`, which
//! aborts the request and its body read together.

use crate::upstash::{HttpReply, HttpRequest, Transport, UpstashError};
use std::time::Duration;
use worker::js_sys::{self, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{AbortSignal, Headers, Request, RequestInit, Response, WorkerGlobalScope};

thread_local! {
    /// How long the last Upstash call waited, ms: set when a call ends,
    /// taken by the `fetch` handler right after `handle` returns. Exact per
    /// request although an isolate interleaves requests, because a request
    /// makes at most one call and nothing after it awaits: the call's end and
    /// the handler's read run in one poll, with no other request between.
    static LAST_CALL_MS: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

/// Takes the duration of the Upstash call made since the last take, if any.
pub fn take_last_call_ms() -> Option<f64> {
    LAST_CALL_MS.with(std::cell::Cell::take)
}

/// `fetch` with a per-request timeout.
pub struct FetchTransport {
    timeout: Duration,
}

impl FetchTransport {
    /// A transport that gives up after `timeout`.
    pub fn new(timeout: Duration) -> FetchTransport {
        FetchTransport { timeout }
    }

    fn timeout_ms(&self) -> u32 {
        u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX)
    }

    /// A rejected promise's reason as an error: `TimeoutError` (the signal
    /// fired) is a timeout, anything else did not reach Upstash.
    fn failed(&self, reason: JsValue) -> UpstashError {
        let name = Reflect::get(&reason, &"name".into())
            .ok()
            .and_then(|n| n.as_string());
        if name.as_deref() == Some("TimeoutError") {
            return UpstashError::Timeout(self.timeout.as_millis() as u64);
        }
        let text = js_sys::JSON::stringify(&reason)
            .ok()
            .and_then(|s| s.as_string())
            .filter(|s| s != "{}")
            .or_else(|| {
                reason
                    .dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
            })
            .unwrap_or_else(|| format!("{reason:?}"));
        UpstashError::Transport(text)
    }

    async fn exchange(&self, req: HttpRequest) -> Result<HttpReply, JsValue> {
        let headers = Headers::new()?;
        for (name, value) in &req.headers {
            headers.set(name, value)?;
        }
        let init = RequestInit::new();
        init.set_method("POST");
        init.set_headers(&headers);
        init.set_body(&JsValue::from_str(&req.body));
        init.set_signal(Some(&AbortSignal::timeout_with_u32(self.timeout_ms())));
        let request = Request::new_with_str_and_init(&req.url, &init)?;
        let global: WorkerGlobalScope = js_sys::global().unchecked_into();
        let response: Response = JsFuture::from(global.fetch_with_request(&request))
            .await?
            .unchecked_into();
        let status = response.status();
        let body = JsFuture::from(response.text()?).await?;
        Ok(HttpReply {
            status,
            body: body.as_string().unwrap_or_default(),
        })
    }
}

impl Transport for FetchTransport {
    async fn post(&self, req: HttpRequest) -> Result<HttpReply, UpstashError> {
        // Date.now() in a Worker advances across I/O, which is what this
        // measures.
        let started = js_sys::Date::now();
        let reply = self.exchange(req).await.map_err(|e| self.failed(e));
        LAST_CALL_MS.with(|c| c.set(Some(js_sys::Date::now() - started)));
        reply
    }
}
