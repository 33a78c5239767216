//! Dispatch: one task per endpoint, with its own HTTP client, in-flight
//! limit and timeout, so a failing or slow endpoint never delays another.
//!
//! A dispatcher claims the due heads of its endpoint's session queues
//! ([`queue::claim`]), sends each, then deletes it (2xx), reschedules it
//! (backoff with jitter, at least `Retry-After` on 429/503), or after
//! the last attempt moves it to the dead-letter stream. It is woken at once
//! by ingest and by its own finished attempts (the next event of that
//! session may go), else sleeps until its own earliest retry, at most
//! `poll` (other processes' rows and expired leases are seen then).

use crate::config::Endpoint;
use crate::metrics::Metrics;
use crate::payload::WebhookEvent;
use crate::queue::{self, Delivery};
use crate::{dlq, guard};
use sqlx::PgPool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synckairos_audit_consumer::RedisConn;
use tokio::sync::{watch, Notify, Semaphore};

/// What every dispatcher of a process shares.
#[derive(Clone)]
pub struct Shared {
    /// The queue.
    pub pool: PgPool,
    /// For the dead-letter stream.
    pub redis: RedisConn,
    /// This process's name on its leases.
    pub me: String,
    /// The wait before each attempt (the first included).
    pub schedule: Arc<Vec<Duration>>,
    /// A claim's lease.
    pub lease: Duration,
    /// The longest sleep between two looks at the queue.
    pub poll: Duration,
    /// Whether the SSRF guard is off (development).
    pub allow_local: bool,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("SyncKairos-Webhooks/", env!("CARGO_PKG_VERSION"));

/// One endpoint's dispatcher.
pub struct Dispatcher {
    endpoint: Arc<Endpoint>,
    shared: Shared,
    client: reqwest::Client,
    wake: Arc<Notify>,
    /// This process's earliest retry of this endpoint (its own reschedules).
    next_retry: Arc<Mutex<Option<Instant>>>,
}

/// The HTTP client of one endpoint: its timeout, no redirects, no proxy,
/// rustls with the webpki roots, and (guard on) the guarded resolver.
pub fn client(endpoint: &Endpoint, allow_local: bool) -> anyhow::Result<reqwest::Client> {
    let tls = synckairos_audit_consumer::service::webpki_tls_config()?;
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(endpoint.timeout)
        .connect_timeout(endpoint.timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(USER_AGENT);
    if !allow_local {
        b = b
            .https_only(true)
            .dns_resolver(Arc::new(guard::GuardedResolver));
    }
    Ok(b.build()?)
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// Why it failed (`None`: delivered).
    pub error: Option<String>,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
}

fn unix_now() -> (i64, i64) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.as_millis() as i64)
}

use synckairos_core::error::chain;

/// `Retry-After`, as seconds or as an HTTP date (at most a day).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let s = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(s)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(Duration::from_secs(86_400)))
}

/// Sends one delivery (signed now) and says how it went.
pub async fn send(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    allow_local: bool,
    event_id: &str,
    body: &str,
) -> Attempt {
    let fail = |status, error: String| Attempt {
        status,
        error: Some(error),
        retry_after: None,
    };
    if !allow_local {
        if let Err(why) = guard::check_url(&endpoint.url) {
            return fail(None, why);
        }
    }
    let id = WebhookEvent::webhook_id(event_id);
    let (ts, _) = unix_now();
    let signature = endpoint.secrets.header(&id, ts, body.as_bytes());
    let r = client
        .post(endpoint.url.clone())
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await;
    let resp = match r {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return fail(
                None,
                format!("timed out after {} ms", endpoint.timeout.as_millis()),
            )
        }
        Err(e) => return fail(None, chain(&e)),
    };
    let status = resp.status();
    let after = retry_after(resp.headers());
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The answer's body is read (bounded by the timeout) so the connection
    // can be reused; its content is not looked at.
    let _ = resp.bytes().await;
    if status.is_success() {
        return Attempt {
            status: Some(status.as_u16()),
            error: None,
            retry_after: None,
        };
    }
    let error = if status.is_redirection() {
        format!(
            "HTTP {}: redirect to {} not followed (redirects are never followed)",
            status.as_u16(),
            location.as_deref().unwrap_or("(no location)")
        )
    } else {
        format!("HTTP {}", status.as_u16())
    };
    Attempt {
        status: Some(status.as_u16()),
        error: Some(error),
        retry_after: match status.as_u16() {
            429 | 503 => after,
            _ => None,
        },
    }
}

/// The wait before attempt `n + 1` after `n` failed attempts (`n` ≥ 1):
/// uniform in [schedule[n] / 2, schedule[n]] ("equal jitter": retries of many
/// deliveries spread out, yet the schedule always spans at least half its
/// listed length), at least `retry_after`. `None` after the last.
pub fn backoff(
    schedule: &[Duration],
    failed: usize,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let max = schedule.get(failed)?.as_millis() as u64;
    let jittered = Duration::from_millis(fastrand::u64(max / 2..=max));
    Some(jittered.max(retry_after.unwrap_or_default()))
}

impl Dispatcher {
    /// A dispatcher of `endpoint`, woken by `wake`.
    pub fn new(endpoint: Endpoint, shared: Shared, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let client = client(&endpoint, shared.allow_local)?;
        Ok(Dispatcher {
            endpoint: Arc::new(endpoint),
            shared,
            client,
            wake,
            next_retry: Arc::new(Mutex::new(None)),
        })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Runs until `stop` turns true, then waits up to `grace` for the
    /// attempts in flight (their leases run out if they do not finish).
    pub async fn run(self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let limit = Arc::new(Semaphore::new(self.endpoint.max_in_flight));
        let mut tasks = tokio::task::JoinSet::new();
        let mut backoff_err = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            let free = limit.available_permits();
            let mut full_batch = false;
            if free > 0 {
                match queue::claim(
                    &self.shared.pool,
                    &self.endpoint.id,
                    &self.shared.me,
                    self.shared.lease,
                    free,
                )
                .await
                {
                    Ok(claimed) => {
                        backoff_err = Duration::from_millis(100);
                        full_batch = claimed.len() == free;
                        for d in claimed {
                            let permit = limit.clone().acquire_owned().await.expect("open");
                            let ctx = self.attempt_ctx();
                            tasks.spawn(async move {
                                ctx.attempt(d).await;
                                drop(permit);
                                ctx.wake.notify_one();
                            });
                        }
                    }
                    Err(e) => {
                        self.shared.metrics.postgres_errors.fetch_add(1, Relaxed);
                        tracing::warn!(endpoint = %self.endpoint.id, error = %e,
                            retry_in_ms = backoff_err.as_millis() as u64, "cannot claim deliveries");
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => break,
                            _ = tokio::time::sleep(backoff_err) => {}
                        }
                        backoff_err = (backoff_err * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            if full_batch && limit.available_permits() > 0 {
                continue;
            }
            let now = Instant::now();
            let mut until = now + self.shared.poll;
            {
                let mut next = self.next_retry.lock().expect("lock");
                match *next {
                    Some(t) if t <= now => *next = None,
                    Some(t) if t < until => until = t,
                    _ => {}
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
        let n = tasks.len();
        if n > 0 {
            tracing::info!(endpoint = %self.endpoint.id, in_flight = n,
                "finishing the attempts in flight");
            let all = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(grace, all).await.is_err() {
                tracing::warn!(endpoint = %self.endpoint.id,
                    "attempts still in flight after the grace period; their leases will run out");
                tasks.abort_all();
            }
        }
    }

    fn attempt_ctx(&self) -> AttemptCtx {
        AttemptCtx {
            endpoint: self.endpoint.clone(),
            shared: self.shared.clone(),
            client: self.client.clone(),
            wake: self.wake.clone(),
            next_retry: self.next_retry.clone(),
        }
    }
}

#[derive(Clone)]
struct AttemptCtx {
    endpoint: Arc<Endpoint>,
    shared: Shared,
    client: reqwest::Client,
    wake: Arc<Notify>,
    next_retry: Arc<Mutex<Option<Instant>>>,
}

impl AttemptCtx {
    async fn attempt(&self, d: Delivery) {
        let ep = &self.endpoint;
        let m = self.shared.metrics.endpoint(&ep.id);
        let started = Instant::now();
        let a = send(
            &self.client,
            ep,
            self.shared.allow_local,
            &d.event_id,
            &d.payload,
        )
        .await;
        if let Some(m) = m {
            m.delivery_seconds.observe(started.elapsed().as_secs_f64());
            if d.attempts == 0 {
                let (_, now_ms) = unix_now();
                m.event_age_seconds
                    .observe((now_ms - d.occurred_at_ms) as f64 / 1000.0);
            }
        }
        let pool = &self.shared.pool;
        let me = &self.shared.me;
        let outcome = match &a.error {
            None => {
                if let Some(m) = m {
                    m.delivered.fetch_add(1, Relaxed);
                }
                tracing::debug!(endpoint = %ep.id, event = %d.event_id, "delivered");
                queue::remove(pool, d.id, me).await
            }
            Some(error) => {
                let failed = d.attempts as usize + 1;
                match backoff(&self.shared.schedule, failed, a.retry_after) {
                    Some(wait) => {
                        if let Some(m) = m {
                            m.failed.fetch_add(1, Relaxed);
                        }
                        tracing::info!(endpoint = %ep.id, event = %d.event_id, attempt = failed,
                            status = a.status, error = %error, retry_in_ms = wait.as_millis() as u64,
                            "delivery attempt failed");
                        let at = Instant::now() + wait;
                        {
                            let mut next = self.next_retry.lock().expect("lock");
                            if next.is_none_or(|t| at < t) {
                                *next = Some(at);
                            }
                        }
                        queue::reschedule(pool, d.id, me, wait, error, a.status).await
                    }
                    None => {
                        if let Err(e) =
                            dlq::add(&self.shared.redis, &d, failed, error, a.status).await
                        {
                            // Nothing removed: the lease runs out and the
                            // last attempt is made again.
                            self.shared.metrics.redis_errors.fetch_add(1, Relaxed);
                            tracing::warn!(endpoint = %ep.id, event = %d.event_id, error = %e,
                                "cannot write the dead letter; the delivery stays queued");
                            return;
                        }
                        if let Some(m) = m {
                            m.dead.fetch_add(1, Relaxed);
                        }
                        tracing::error!(endpoint = %ep.id, event = %d.event_id, attempts = failed,
                            status = a.status, error = %error,
                            "delivery moved to the dead letters after its last attempt");
                        queue::remove(pool, d.id, me).await
                    }
                }
            }
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => tracing::warn!(endpoint = %ep.id, event = %d.event_id,
                "the lease ran out before the attempt finished; another worker has the delivery"),
            Err(e) => {
                self.shared.metrics.postgres_errors.fetch_add(1, Relaxed);
                tracing::warn!(endpoint = %ep.id, event = %d.event_id, error = %e,
                    "cannot record the attempt; the lease runs out and it is made again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_within_the_schedule_and_honours_retry_after() {
        let s = vec![
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_secs(10),
        ];
        let waits: Vec<Duration> = (0..400).map(|_| backoff(&s, 2, None).unwrap()).collect();
        for w in &waits {
            assert!(*w >= Duration::from_secs(5) && *w <= Duration::from_secs(10));
        }
        // Spread over the range, not one value (400 draws: a spread under
        // 2 s has a chance far below 1e-20).
        let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(*hi - *lo > Duration::from_secs(2), "{lo:?}..{hi:?}");
        for _ in 0..200 {
            let w = backoff(&s, 1, None).unwrap();
            assert!(w >= Duration::from_millis(50) && w <= Duration::from_millis(100));
        }
        assert!(backoff(&s, 1, Some(Duration::from_secs(3))).unwrap() >= Duration::from_secs(3));
        assert_eq!(backoff(&s, 3, None), None);
    }

    #[test]
    fn retry_after_in_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        // A date in the past: retry now (the backoff applies).
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let w = retry_after(&h).unwrap();
        assert!(
            w > Duration::from_secs(100) && w <= Duration::from_secs(120),
            "{w:?}"
        );
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
