//! Epoch milliseconds ⇄ ISO-8601 UTC strings (`2026-11-23T17:39:06.123Z`).
//!
//! The Lua scripts carry the same algorithm (Howard Hinnant's civil-date
//! conversion), so both sides render a timestamp to the same bytes.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A point in time as Unix epoch milliseconds, serialized as ISO-8601 UTC
/// with milliseconds and `Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Epoch milliseconds.
    pub fn ms(self) -> i64 {
        self.0
    }
}

/// Days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Renders epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// ```
/// assert_eq!(synckairos_core::time::format_iso(0), "1970-01-01T00:00:00.000Z");
/// assert_eq!(synckairos_core::time::format_iso(1_795_455_546_123), "2026-11-23T17:39:06.123Z");
/// ```
pub fn format_iso(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Parses `YYYY-MM-DDTHH:MM:SS(.fff)Z` into epoch milliseconds.
///
/// Only the UTC form this service writes is accepted (fraction of 0–3 digits).
pub fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let milli = match &s[19..s.len() - 1] {
        "" => 0,
        frac if frac.starts_with('.') && (2..=4).contains(&frac.len()) => {
            let digits = &frac[1..];
            let v = num(20..20 + digits.len())?;
            v * 10_i64.pow(3 - digits.len() as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(days * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + milli)
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "ISO-8601 UTC with milliseconds, e.g. 2026-11-23T17:39:06.123Z",
            "example": "2026-11-23T17:39:06.123Z"
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_iso(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ISO-8601 UTC timestamp")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                parse_iso(v)
                    .map(Timestamp)
                    .ok_or_else(|| E::custom(format!("invalid timestamp {v:?}")))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(parse_iso("2000-02-29T00:00:00.000Z"), Some(951_782_400_000));
        assert_eq!(parse_iso("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_iso("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
        assert_eq!(parse_iso("2000-02-29 00:00:00.000Z"), None);
        assert_eq!(parse_iso("2000-13-01T00:00:00.000Z"), None);
        assert_eq!(parse_iso("garbage"), None);
    }

    proptest! {
        #[test]
        fn round_trip(ms in 0i64..253_402_300_799_999) {
            prop_assert_eq!(parse_iso(&format_iso(ms)), Some(ms));
        }
    }
}
