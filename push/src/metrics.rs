//! The push sender's Prometheus metrics (`synckairos_push_*`), rendered as
//! text for whichever `/metrics` serves them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use synckairos_core::prom::Histogram;

/// What became of one push (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendResult {
    /// FCM accepted it.
    Sent,
    /// The token was dead; it was dropped.
    Unregistered,
    /// Not delivered within its max age, or refused.
    Failed,
    /// Not sent: the event was already older than the max age.
    Stale,
}

impl SendResult {
    const ALL: [SendResult; 4] = [
        SendResult::Sent,
        SendResult::Unregistered,
        SendResult::Failed,
        SendResult::Stale,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SendResult::Sent => "sent",
            SendResult::Unregistered => "unregistered",
            SendResult::Failed => "failed",
            SendResult::Stale => "stale",
        }
    }
}

/// Send latency buckets, in ms (exposed in seconds).
static SEND_MS: &[f64] = &[
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// The counters and the histogram.
pub struct Metrics {
    sent: [AtomicU64; 4],
    dropped: AtomicU64,
    refreshes: AtomicU64,
    send: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// All zero.
    pub fn new() -> Metrics {
        Metrics {
            sent: Default::default(),
            dropped: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            send: Histogram::new(SEND_MS, 1000.0),
        }
    }

    /// Counts a push's result.
    pub fn sent(&self, r: SendResult) {
        let i = SendResult::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.sent[i].fetch_add(1, Relaxed);
    }

    /// How many pushes ended with `r`.
    pub fn sent_total(&self, r: SendResult) -> u64 {
        let i = SendResult::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.sent[i].load(Relaxed)
    }

    /// Counts tokens removed from devices hashes.
    pub fn tokens_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Relaxed);
    }

    /// Tokens removed so far.
    pub fn tokens_dropped_total(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Counts an access token request.
    pub fn token_refreshed(&self) {
        self.refreshes.fetch_add(1, Relaxed);
    }

    /// Access token requests so far.
    pub fn token_refreshes_total(&self) -> u64 {
        self.refreshes.load(Relaxed)
    }

    /// Records one send request's duration.
    pub fn observe_send(&self, d: Duration) {
        self.send.observe(d.as_secs_f64() * 1000.0);
    }

    /// The Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP synckairos_push_sent_total Pushes by what became of them.\n\
             # TYPE synckairos_push_sent_total counter\n",
        );
        for (r, n) in SendResult::ALL.iter().zip(&self.sent) {
            out += &format!(
                "synckairos_push_sent_total{{result=\"{}\"}} {}\n",
                r.as_str(),
                n.load(Relaxed)
            );
        }
        out += &format!(
            "# HELP synckairos_push_tokens_dropped_total Dead tokens removed from devices.\n\
             # TYPE synckairos_push_tokens_dropped_total counter\n\
             synckairos_push_tokens_dropped_total {}\n\
             # HELP synckairos_push_token_refreshes_total OAuth access tokens requested.\n\
             # TYPE synckairos_push_token_refreshes_total counter\n\
             synckairos_push_token_refreshes_total {}\n",
            self.dropped.load(Relaxed),
            self.refreshes.load(Relaxed)
        );
        self.send.render(
            &mut out,
            "synckairos_push_send_seconds",
            "Time of one FCM send request.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::new();
        m.sent(SendResult::Unregistered);
        m.tokens_dropped(1);
        m.token_refreshed();
        m.observe_send(Duration::from_millis(20));
        let text = m.render();
        for line in [
            "synckairos_push_sent_total{result=\"unregistered\"} 1\n",
            "synckairos_push_sent_total{result=\"sent\"} 0\n",
            "synckairos_push_tokens_dropped_total 1\n",
            "synckairos_push_token_refreshes_total 1\n",
            "synckairos_push_send_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
    }
}
