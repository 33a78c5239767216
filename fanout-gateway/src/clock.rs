//! One clock for every component: the gateway's estimate of Redis `TIME`.
//!
//! NTP-style: a sample is `TIME` with the local clock read before and after;
//! the offset assumes Redis answered in the middle of the round trip, so its
//! error is at most half the round trip. Of the recent samples the one with
//! the smallest round trip wins (the minimum-RTT filter).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How many recent samples the filter chooses from.
const WINDOW: usize = 16;

/// One `TIME` exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Redis time minus local time, ms.
    pub offset_ms: i64,
    /// Round trip, µs.
    pub rtt_us: i64,
}

impl Sample {
    /// A sample from local send time `t0_ms`, Redis time `server_ms` and the
    /// measured round trip.
    pub fn new(t0_ms: i64, server_ms: i64, rtt_us: i64) -> Sample {
        Sample {
            offset_ms: server_ms - (t0_ms + rtt_us / 2000),
            rtt_us,
        }
    }
}

/// The estimate the gateway serves.
#[derive(Default)]
pub struct RedisClock {
    samples: Mutex<VecDeque<Sample>>,
}

/// The local wall clock (epoch ms).
pub fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl RedisClock {
    /// Records a sample.
    pub fn add(&self, s: Sample) {
        let mut q = self.samples.lock().expect("clock lock");
        if q.len() == WINDOW {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The best recent sample, if any.
    pub fn best(&self) -> Option<Sample> {
        let q = self.samples.lock().expect("clock lock");
        q.iter().min_by_key(|s| s.rtt_us).copied()
    }

    /// Redis time now, by the estimate (the local clock until the first
    /// sample).
    pub fn now_ms(&self) -> i64 {
        local_ms() + self.best().map_or(0, |s| s.offset_ms)
    }

    /// Takes one sample over `conn`.
    pub async fn sample(
        &self,
        conn: &mut redis::aio::ConnectionManager,
    ) -> redis::RedisResult<Sample> {
        let t0 = local_ms();
        let started = Instant::now();
        let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
        let rtt_us = started.elapsed().as_micros() as i64;
        let sample = Sample::new(t0, s * 1000 + us / 1000, rtt_us);
        self.add(sample);
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_round_trip_wins_and_old_samples_age_out() {
        let c = RedisClock::default();
        assert_eq!(c.best(), None);
        c.add(Sample::new(1_000, 1_105, 10_000)); // offset 100, rtt 10 ms
        c.add(Sample::new(2_000, 2_051, 2_000)); // offset 50, rtt 2 ms
        c.add(Sample::new(3_000, 3_210, 20_000)); // offset 200, rtt 20 ms
        assert_eq!(
            c.best(),
            Some(Sample {
                offset_ms: 50,
                rtt_us: 2_000
            })
        );
        for i in 0..WINDOW as i64 {
            c.add(Sample::new(i, i + 7, 5_000));
        }
        assert_eq!(
            c.best().unwrap().offset_ms,
            5,
            "offset 7 minus half of 5 ms"
        );
    }
}
