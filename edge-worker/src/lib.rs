//! # synckairos-edge-worker
//!
//! The REST edge of SyncKairos: a Cloudflare Worker (Rust → wasm). Each
//! request goes through the HTTP core (`synckairos_api`, shared with the
//! native server), configured from `wrangler.toml` vars and secrets
//! ([`config`]), over a store that makes at most one call to Redis through
//! the Upstash REST API ([`store`], [`upstash`]): one `EVALSHA` per command.
//!
//! Everything but the `fetch` glue ([`fetch`] and the entry point below) is
//! plain Rust that `cargo test` runs on the host. Build the Worker with
//! `scripts/worker-build.sh`; run it with `wrangler dev` or
//! `scripts/workerd.sh`.
#![deny(missing_docs)]

pub mod binding;
pub mod config;
pub mod fetch;
pub mod observe;
pub mod store;
pub mod upstash;

use std::cell::OnceCell;
use std::rc::Rc;
use synckairos_api::{ApiResponse, Body, Incoming, Unlimited};
use synckairos_core::api::MAX_BODY_BYTES;
use worker::{event, Context, Env, Request, Response, ResponseBuilder};

type App = store::App<fetch::FetchTransport>;

thread_local! {
    /// The app of this isolate, built on its first request. `env` is fixed
    /// for a deployed version (new vars or secrets mean new isolates), so it
    /// is read once rather than on every request.
    static APP: OnceCell<Rc<App>> = const { OnceCell::new() };
}

/// Reads a var or secret: both are text bindings of `env`. Anything else
/// (absent, `null`, a TOML number) counts as unset. Not `env.var`: it throws
/// inside wasm on a `null` binding (workerd's `fromEnvironment` of an unset
/// variable), which kills the request.
fn lookup(env: &Env, name: &str) -> Option<String> {
    js_sys::Reflect::get(env, &name.into()).ok()?.as_string()
}

fn build(env: &Env) -> App {
    let config = config::Config::from_lookup(|name| lookup(env, name));
    store::app(config, |c| fetch::FetchTransport::new(c.upstash.timeout))
}

fn respond(r: ApiResponse, request_id: &str) -> worker::Result<Response> {
    let mut b = ResponseBuilder::new().with_status(r.status);
    b = b.with_header("x-request-id", request_id)?;
    if !r.body.is_empty() {
        b = b.with_header("content-type", "application/json; charset=utf-8")?;
    }
    b = b.with_header("cache-control", "no-store")?;
    for (k, v) in &r.headers {
        b = b.with_header(k, v)?;
    }
    Ok(if r.body.is_empty() {
        b.empty()
    } else {
        b.fixed(r.body.into_bytes())
    })
}

/// `localhost`, `127.0.0.1` or `[::1]`: a worker called there runs under
/// `wrangler dev` or workerd on this machine, never on Cloudflare.
pub fn is_loopback_host(host: Option<&str>) -> bool {
    match host {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// The Worker's `fetch` handler: route, answer, then one JSON log line and
/// one Analytics Engine data point per request ([`observe`]).
#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let started = js_sys::Date::now();
    let app = APP.with(|cell| Rc::clone(cell.get_or_init(|| Rc::new(build(&env)))));
    let headers = req.headers();
    let request_id = observe::request_id(
        headers.get("cf-ray").ok().flatten().as_deref(),
        js_sys::Math::random,
    );
    let header = |name: &str| headers.get(name).ok().flatten();
    let declared: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let (authorization, if_match, idempotency_key, origin, client_ip) = (
        header("authorization"),
        header("if-match"),
        header("idempotency-key"),
        header("origin"),
        header("cf-connecting-ip"),
    );
    // The method as sent: worker's `Method` reads any method it does not
    // know (QUERY, PURGE, ...) as GET, which would answer it as a read.
    let method = req.inner().method();
    let path = req.path();
    let mut body_error = None;
    let read = if matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") {
        Ok(Vec::new())
    } else if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        Err(Body::TooLarge)
    } else {
        // A body that fails to read is refused, never taken as empty.
        req.bytes().await.map_err(|e| {
            body_error = Some(format!("reading the body: {e}"));
            Body::Unreadable
        })
    };
    let incoming = Incoming {
        method: &method,
        path: &path,
        authorization: authorization.as_deref(),
        if_match: if_match.as_deref(),
        idempotency_key: idempotency_key.as_deref(),
        origin: origin.as_deref(),
        client_ip: client_ip.as_deref(),
        body: match &read {
            Ok(bytes) => Body::Bytes(bytes),
            Err(e) => *e,
        },
        now_ms: js_sys::Date::now() as i64,
        local: req.url().is_ok_and(|u| is_loopback_host(u.host_str())),
    };
    let handled = match binding::RateLimitBinding::from_env(&env, binding::IP_RATE_LIMITER) {
        Some(limiter) => app.handle(&incoming, &limiter).await,
        None => app.handle(&incoming, &Unlimited).await,
    };
    // Right after `handle`, with no await between (see fetch.rs).
    let upstash_ms = fetch::take_last_call_ms();
    let code = (handled.response.status >= 400)
        .then(|| observe::error_code(&handled.response.body))
        .flatten();
    let error = match (&body_error, &handled.error) {
        (Some(b), Some(h)) => Some(format!("{b}; {h}")),
        (b, h) => b.clone().or_else(|| h.clone()),
    };
    let record = observe::RequestRecord {
        request_id: &request_id,
        method: &method,
        route: observe::route_label(&method, &path),
        status: handled.response.status,
        code: code.as_deref(),
        latency_ms: js_sys::Date::now() - started,
        upstash_ms,
        error: error.as_deref(),
    };
    worker::console_log!("{}", record.log_line());
    if let Some(analytics) = observe::AnalyticsBinding::from_env(&env, observe::ANALYTICS) {
        if let Err(e) = analytics.write(&record.data_point()) {
            worker::console_error!(
                "{}",
                serde_json::json!({"level": "error", "msg": "analytics engine write failed",
                    "request_id": request_id, "error": e})
            );
        }
    }
    respond(handled.response, &request_id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_hosts_are_local() {
        for (host, local) in [
            (Some("localhost"), true),
            (Some("127.0.0.1"), true),
            (Some("[::1]"), true),
            (Some("synckairos-edge.example.workers.dev"), false),
            (Some("10.0.0.1"), false),
            (Some("localhost.example"), false),
            (None, false),
        ] {
            assert_eq!(super::is_loopback_host(host), local, "{host:?}");
        }
    }
}
