//! One clock for every component: the gateway's estimate of Redis `TIME`.
//!
//! NTP-style: a sample is `TIME` with the local clock read before and after;
//! the offset assumes Redis answered in the middle of the round trip, so its
//! error is at most half the round trip. Samples are taken rarely (each
//! renewal of the expiry lease carries one, see [`crate::expiry`]), so a
//! sample's bound also grows with its age at the worst drift two quartz
//! clocks are allowed ([`MAX_DRIFT_PPM`]); of the recent samples the one with
//! the smallest bound now wins.
//!
//! **On a Redis Cluster** "Redis time" is several machines' clocks: every
//! script stamps with the clock of its shard's primary. The gateway samples
//! one node consistently — the primary of the expiry lease key's slot (the
//! lease script's reply, and [`RedisClock::sample`], which reads `TIME` in a
//! script keyed on the lease) — never a random node, so its samples do not
//! jump between clocks; a failover moves it to the promoted replica's clock.
//! The assumption is that the cluster's nodes are NTP-synced: the error of a
//! served time against the clock that stamps a given session is the bound
//! above plus the offset between the two primaries (NTP on one network:
//! typically under a millisecond or two, alarms at tens of ms). The
//! `synckairos_gateway_clock_error_us` metric shows only the sampling part.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// `TIME`, from a script so that it runs on the node of its key's slot.
const TIME_AT_LEASE: &str = "return redis.call('TIME')";

/// How many recent samples the filter chooses from.
const WINDOW: usize = 16;

/// The worst relative drift assumed between the local clock and Redis's
/// (two clocks of ±100 ppm each), parts per million.
pub const MAX_DRIFT_PPM: i64 = 200;

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

    /// The error bound of this sample `age` after it was taken, µs: half
    /// its round trip plus the drift since.
    pub fn bound_us(&self, age: std::time::Duration) -> i64 {
        self.rtt_us / 2 + age.as_micros() as i64 * MAX_DRIFT_PPM / 1_000_000
    }
}

/// The estimate the gateway serves.
#[derive(Default)]
pub struct RedisClock {
    samples: Mutex<VecDeque<(Sample, Instant)>>,
}

/// The local wall clock (epoch ms).
pub fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl RedisClock {
    /// Records a sample taken at `taken`.
    pub fn add_at(&self, s: Sample, taken: Instant) {
        let mut q = self.samples.lock().expect("clock lock");
        if q.len() == WINDOW {
            q.pop_front();
        }
        q.push_back((s, taken));
    }

    /// Records a sample taken now.
    pub fn add(&self, s: Sample) {
        self.add_at(s, Instant::now());
    }

    /// The recent sample with the smallest error bound now, and that bound
    /// in µs.
    pub fn best_with_bound(&self) -> Option<(Sample, i64)> {
        let q = self.samples.lock().expect("clock lock");
        let now = Instant::now();
        q.iter()
            .map(|(s, at)| (*s, s.bound_us(now.saturating_duration_since(*at))))
            .min_by_key(|(_, bound)| *bound)
    }

    /// How long ago the newest sample was taken.
    pub fn last_sample_age(&self) -> Option<std::time::Duration> {
        let q = self.samples.lock().expect("clock lock");
        q.back().map(|(_, at)| at.elapsed())
    }

    /// The recent sample with the smallest error bound now, if any.
    pub fn best(&self) -> Option<Sample> {
        self.best_with_bound().map(|(s, _)| s)
    }

    /// Redis time now, by the estimate (the local clock until the first
    /// sample).
    pub fn now_ms(&self) -> i64 {
        local_ms() + self.best().map_or(0, |s| s.offset_ms)
    }

    /// Records the sample of an exchange that started at local time `t0_ms`
    /// (`started` on the monotonic clock) and read Redis time `server_ms`.
    pub fn record(&self, t0_ms: i64, started: Instant, server_ms: i64) -> Sample {
        let rtt_us = started.elapsed().as_micros() as i64;
        let sample = Sample::new(t0_ms, server_ms, rtt_us);
        self.add(sample);
        sample
    }

    /// Takes one sample over `conn` (the engine's, to one server or a
    /// cluster): `TIME` read by a script keyed on the expiry lease, so that
    /// on a cluster it is always the clock of that slot's primary, the same
    /// node the lease renewals sample.
    pub async fn sample(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<Sample> {
        let t0 = local_ms();
        let started = Instant::now();
        let (s, us): (i64, i64) = redis::Script::new(TIME_AT_LEASE)
            .key(synckairos_core::keys::EXPIRY_LEASE)
            .invoke_async(conn)
            .await?;
        Ok(self.record(t0, started, s * 1000 + us / 1000))
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

    #[test]
    fn an_old_sample_loses_to_a_fresh_one_once_its_drift_outweighs_its_round_trip() {
        let c = RedisClock::default();
        let now = Instant::now();
        let long_ago = now - std::time::Duration::from_secs(60);
        // 1 ms round trip a minute ago: 500 µs + 60 s × 200 ppm = 12.5 ms.
        c.add_at(Sample::new(0, 10, 1_000), long_ago);
        // 4 ms round trip now: 2 ms.
        c.add_at(Sample::new(0, 20, 4_000), now);
        let (best, bound) = c.best_with_bound().unwrap();
        assert_eq!(best.rtt_us, 4_000);
        assert!((2_000..2_100).contains(&bound), "{bound}");
        assert_eq!(
            Sample::new(0, 0, 1_000).bound_us(std::time::Duration::from_secs(60)),
            12_500
        );
    }
}
