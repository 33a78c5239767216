//! [`Transport`] over the Workers `fetch`, with a timeout: the request races a
//! timer and is aborted (`AbortController`) when the timer wins, so a stuck
//! connection neither holds the request nor keeps running after it.

use crate::upstash::{HttpReply, HttpRequest, Transport, UpstashError};
use futures::future::{select, Either};
use std::pin::pin;
use std::time::Duration;
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit};

/// `fetch` with a per-request timeout.
pub struct FetchTransport {
    timeout: Duration,
}

impl FetchTransport {
    /// A transport that gives up after `timeout`.
    pub fn new(timeout: Duration) -> FetchTransport {
        FetchTransport { timeout }
    }
}

impl Transport for FetchTransport {
    async fn post(&self, req: HttpRequest) -> Result<HttpReply, UpstashError> {
        let transport = |e: worker::Error| UpstashError::Transport(e.to_string());
        let headers = Headers::new();
        for (name, value) in &req.headers {
            headers.set(name, value).map_err(transport)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(req.body.into()));
        let request = Request::new_with_init(&req.url, &init).map_err(transport)?;

        let controller = AbortController::default();
        let signal = controller.signal();
        let exchange = pin!(async {
            let mut response = Fetch::Request(request).send_with_signal(&signal).await?;
            let status = response.status_code();
            let body = response.text().await?;
            Ok::<_, worker::Error>(HttpReply { status, body })
        });
        let timer = pin!(Delay::from(self.timeout));
        match select(exchange, timer).await {
            Either::Left((reply, _)) => reply.map_err(transport),
            Either::Right(((), _)) => {
                controller.abort();
                Err(UpstashError::Timeout(self.timeout.as_millis() as u64))
            }
        }
    }
}
