//! The push sender's HTTP client: hyper over rustls with the ring provider
//! and the webpki root certificates, `https://` and (for local servers)
//! `http://`, pooled connections. Its own TLS set-up on purpose: turning on
//! reqwest's TLS here would turn it on for every crate built with this one,
//! and those install no crypto provider.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// An answer: status, `Retry-After`, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// The body, as text (lossy).
    pub body: String,
}

/// A pooled HTTPS (and HTTP) client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Http {
    /// A client that trusts the webpki roots.
    pub fn new() -> Result<Http, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Http {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// `POST url` with `headers` and `body`; the whole exchange within
    /// `timeout`. An `Err` is a transport failure (nothing was answered).
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: String,
        timeout: Duration,
    ) -> Result<HttpReply, String> {
        let mut req = hyper::Request::post(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let exchange = async {
            let r = self.client.request(req).await.map_err(|e| format!("{e}"))?;
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = r
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the reply: {e}"))?
                .to_bytes();
            Ok(HttpReply {
                status,
                retry_after,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
    }
}
