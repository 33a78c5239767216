//! The WebSocket half: watch sessions on a gateway and estimate its clock.
//!
//! [`Watcher::sync_time`] runs NTP-style `TIME_SYNC` exchanges: the client
//! sends `t0`, the gateway answers with its receive and send times `t1`, `t2`
//! (Redis time), the client notes `t3` on arrival. Then
//! `offset = ((t1 − t0) + (t2 − t3)) / 2` and `rtt = (t3 − t0) − (t2 − t1)`.
//! The sample with the smallest round trip is kept: whatever the link does,
//! the true offset is within `rtt / 2` of its estimate, which is the error
//! bound reported.

use crate::{local_now_ms, ClientError, TimeEstimate};
use futures::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use synckairos_core::ws::{ClientIn, ClientOut};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket watching one session (and any it subscribes to).
pub struct Watcher {
    ws: Socket,
    pending: VecDeque<ClientOut>,
}

fn transport(e: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(e.to_string())
}

impl Watcher {
    /// Connects to `gateway` (`ws://host:port`) for `session_id`, with a
    /// token when the gateway requires one.
    pub async fn connect(
        gateway: &str,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Watcher, ClientError> {
        let mut url = format!(
            "{}/ws?sessionId={session_id}",
            gateway.trim_end_matches('/')
        );
        if let Some(t) = token {
            url.push_str("&token=");
            url.push_str(t);
        }
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(transport)?;
        Ok(Watcher {
            ws,
            pending: VecDeque::new(),
        })
    }

    async fn send(&mut self, m: &ClientIn) -> Result<(), ClientError> {
        let text = serde_json::to_string(m).expect("ClientIn serializes");
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(transport)
    }

    async fn read(&mut self) -> Result<ClientOut, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return ClientOut::parse(&t)
                        .map_err(|e| transport(format!("unexpected message {t}: {e}")))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Transport(match frame {
                        Some(f) => format!("closed {}: {}", u16::from(f.code), f.reason),
                        None => "closed".into(),
                    }))
                }
                Some(Ok(_)) => continue, // pings are answered by the protocol layer
                Some(Err(e)) => return Err(transport(e)),
                None => return Err(ClientError::Transport("closed".into())),
            }
        }
    }

    /// The next message from the gateway (`CONNECTED`, `STATE_SYNC`,
    /// `STATE_UPDATE`, `SESSION_DELETED`, …).
    pub async fn next(&mut self) -> Result<ClientOut, ClientError> {
        match self.pending.pop_front() {
            Some(m) => Ok(m),
            None => self.read().await,
        }
    }

    /// Also watch `session_id` on this socket.
    pub async fn subscribe(&mut self, session_id: &str) -> Result<(), ClientError> {
        self.send(&ClientIn::Subscribe {
            session_id: session_id.into(),
        })
        .await
    }

    /// One `TIME_SYNC` exchange: `(offset_ms, rtt_ms)`. Messages that arrive
    /// meanwhile are kept for [`Watcher::next`].
    pub async fn time_sample(&mut self) -> Result<(f64, f64), ClientError> {
        let t0 = local_now_ms();
        self.send(&ClientIn::TimeSync { t0 }).await?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.read())
                .await
                .map_err(|_| ClientError::Transport("no TIME_SYNC reply within 10 s".into()))??;
            match m {
                ClientOut::TimeSync { t0: echoed, t1, t2 } if echoed == t0 => {
                    let t3 = local_now_ms();
                    let offset = ((t1 - t0) + (t2 - t3)) as f64 / 2.0;
                    let rtt = ((t3 - t0) - (t2 - t1)) as f64;
                    return Ok((offset, rtt.max(0.0)));
                }
                other => self.pending.push_back(other),
            }
        }
    }

    /// Estimates the gateway's (Redis) clock from `samples` exchanges.
    ///
    /// Each exchange proves the true offset lies within `rtt / 2` of its own
    /// estimate (both legs took a non-negative time), widened by the 1 ms
    /// resolution of the stamps. The answer is the middle of where all those
    /// intervals overlap, and half the overlap is the bound: never wider
    /// than the minimum-RTT sample's own interval, and much narrower when
    /// the legs' asymmetry varies from sample to sample.
    pub async fn sync_time(&mut self, samples: usize) -> Result<TimeEstimate, ClientError> {
        let mut all = Vec::with_capacity(samples.max(1));
        for _ in 0..samples.max(1) {
            all.push(self.time_sample().await?);
        }
        Ok(estimate(&all))
    }
}

/// The estimate of a set of `(offset_ms, rtt_ms)` samples (see
/// [`Watcher::sync_time`]).
pub fn estimate(samples: &[(f64, f64)]) -> TimeEstimate {
    let half = |rtt: f64| rtt / 2.0 + 1.0;
    let lo = samples
        .iter()
        .map(|&(o, r)| o - half(r))
        .fold(f64::MIN, f64::max);
    let hi = samples
        .iter()
        .map(|&(o, r)| o + half(r))
        .fold(f64::MAX, f64::min);
    let (offset, bound) = if lo <= hi {
        ((lo + hi) / 2.0, (hi - lo) / 2.0)
    } else {
        // Intervals that do not overlap mean a clock stepped meanwhile:
        // fall back to the minimum-RTT sample alone.
        let &(o, r) = samples
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one sample");
        (o, half(r))
    };
    TimeEstimate {
        offset_ms: offset.round() as i64,
        error_bound_ms: bound.ceil() as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlap_of_the_samples_intervals_is_the_estimate() {
        // True offset 10; legs (up, down): (40, 60), (55, 45), (50, 50).
        let samples = [(10.0 - 10.0, 100.0), (10.0 + 5.0, 100.0), (10.0, 100.0)];
        let e = estimate(&samples);
        // Intervals ±51: [-51, 51], [-36, 66], [-41, 61]; overlap [-36, 51].
        assert_eq!(
            e,
            TimeEstimate {
                offset_ms: 8,
                error_bound_ms: 44
            }
        );
        assert!((e.offset_ms - 10).abs() <= e.error_bound_ms);
        // One sample: its own interval.
        assert_eq!(
            estimate(&[(3.0, 20.0)]),
            TimeEstimate {
                offset_ms: 3,
                error_bound_ms: 11
            }
        );
        // Disjoint intervals fall back to the smallest round trip.
        assert_eq!(
            estimate(&[(0.0, 2.0), (100.0, 4.0)]),
            TimeEstimate {
                offset_ms: 0,
                error_bound_ms: 2
            }
        );
    }
}
