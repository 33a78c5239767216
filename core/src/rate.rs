//! The per-session switch limit: a fixed one-second window on Redis time.
//!
//! Stored as `"<window>:<count>"` under [`crate::keys::SessionKeys::rate`] so
//! that a test-supplied `now_ms` drives it exactly like Redis `TIME` does.

use serde::{Deserialize, Serialize};

/// Window length.
pub const WINDOW_MS: i64 = 1000;

/// Default switches per session per second.
pub const DEFAULT_SWITCH_LIMIT: u64 = 10;

/// The counter of the current window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateWindow {
    /// `floor(now_ms / 1000)`.
    pub window: i64,
    /// Attempts counted in this window (refused ones included).
    pub count: u64,
}

/// What the `RateLimit-*` headers need.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateInfo {
    /// `RateLimit-Limit`.
    pub limit: u64,
    /// `RateLimit-Remaining`.
    pub remaining: u64,
    /// `RateLimit-Reset` (and `Retry-After` on a 429), in seconds.
    pub reset_seconds: u64,
}

impl RateInfo {
    /// `RateLimit-Policy` value, e.g. `10;w=1`.
    pub fn policy(&self) -> String {
        format!("{};w=1", self.limit)
    }
}

/// Counts one attempt at `now_ms`; returns the new window, the header values
/// and whether the attempt is allowed. `limit` must be > 0.
pub fn check(prev: Option<RateWindow>, now_ms: i64, limit: u64) -> (RateWindow, RateInfo, bool) {
    let window = now_ms.div_euclid(WINDOW_MS);
    let count = match prev {
        Some(w) if w.window == window => w.count + 1,
        _ => 1,
    };
    let reset_ms = (window + 1) * WINDOW_MS - now_ms;
    let info = RateInfo {
        limit,
        remaining: limit.saturating_sub(count),
        reset_seconds: ((reset_ms + 999) / 1000) as u64,
    };
    (RateWindow { window, count }, info, count <= limit)
}

/// Encodes a window as stored in Redis.
pub fn encode(w: RateWindow) -> String {
    format!("{}:{}", w.window, w.count)
}

/// Decodes a stored window (anything malformed counts as no window).
pub fn decode(s: &str) -> Option<RateWindow> {
    let (w, c) = s.split_once(':')?;
    Some(RateWindow {
        window: w.parse().ok()?,
        count: c.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window() {
        let (w, i, ok) = check(None, 10_500, 2);
        assert!(ok);
        assert_eq!((w.count, i.remaining, i.reset_seconds), (1, 1, 1));
        let (w, _, ok) = check(Some(w), 10_999, 2);
        assert!(ok);
        let (w, i, ok) = check(Some(w), 10_999, 2);
        assert!(!ok);
        assert_eq!(i.remaining, 0);
        let (w, _, ok) = check(Some(w), 11_000, 2);
        assert!(ok);
        assert_eq!(w.count, 1);
        assert_eq!(decode(&encode(w)), Some(w));
        assert_eq!(decode("junk"), None);
    }
}
