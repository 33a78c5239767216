//! Prometheus text exposition of a fixed-bucket histogram, shared by the
//! services' `/metrics`. Lock-free; no I/O (the caller serves the text).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A histogram with fixed upper bounds in the unit it observes, exposed in
/// that unit divided by `divisor` (1000 to observe ms and expose seconds).
///
/// ```
/// use synckairos_core::prom::Histogram;
/// static MS: &[f64] = &[1.0, 10.0];
/// let h = Histogram::new(MS, 1000.0);
/// h.observe(0.5);
/// h.observe(7.0);
/// let mut out = String::new();
/// h.render(&mut out, "lag_seconds", "Lag.");
/// assert!(out.contains("lag_seconds_bucket{le=\"0.001\"} 1\n"));
/// assert!(out.contains("lag_seconds_bucket{le=\"0.01\"} 2\n"));
/// assert!(out.contains("lag_seconds_count 2\n"));
/// ```
pub struct Histogram {
    bounds: &'static [f64],
    divisor: f64,
    counts: Vec<AtomicU64>,
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// An empty histogram with upper `bounds` (ascending).
    pub fn new(bounds: &'static [f64], divisor: f64) -> Histogram {
        Histogram {
            bounds,
            divisor,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one value (negative values count as 0).
    pub fn observe(&self, v: f64) {
        let v = v.max(0.0);
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micro.fetch_add((v * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Appends the `# HELP`/`# TYPE` lines, the cumulative buckets, the sum
    /// and the count as `name`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// Appends the buckets, the sum and the count as `name` with `labels`
    /// (`key="value"` pairs joined by commas, or empty) on every line, and
    /// no `# HELP`/`# TYPE`: one of several series of a labelled histogram,
    /// whose header the caller writes once.
    ///
    /// ```
    /// use synckairos_core::prom::Histogram;
    /// static MS: &[f64] = &[1.0];
    /// let h = Histogram::new(MS, 1000.0);
    /// h.observe(0.5);
    /// let mut out = String::new();
    /// h.render_series(&mut out, "lag_seconds", "route=\"/a\"");
    /// assert!(out.contains("lag_seconds_bucket{route=\"/a\",le=\"0.001\"} 1\n"));
    /// assert!(out.contains("lag_seconds_count{route=\"/a\"} 1\n"));
    /// ```
    pub fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let (bucket_prefix, braced) = if labels.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("{labels},"), format!("{{{labels}}}"))
        };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{bucket_prefix}le=\"{}\"}} {cumulative}",
                b / self.divisor
            );
        }
        let n = self.count.load(Relaxed);
        let sum = self.sum_micro.load(Relaxed) as f64 / 1e6 / self.divisor;
        let _ = writeln!(
            out,
            "{name}_bucket{{{bucket_prefix}le=\"+Inf\"}} {n}\n{name}_sum{braced} {sum}\n{name}_count{braced} {n}"
        );
    }
}
