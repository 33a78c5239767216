//! The compact record a session is stored, published and audited as.
//!
//! Redis's Lua (interpreted 5.1) spends most of a command decoding and
//! re-encoding JSON, so the scripts work on this positional text instead and
//! the API JSON ([`SyncState::to_json`]) is rendered in Rust by whoever reads
//! it. One line of `|`-separated fields (no field can contain `|` or a line
//! break: ids are validated UUIDs, the rest are enums and integers), then,
//! only when the session has metadata, a line break and the metadata JSON
//! verbatim:
//!
//! ```text
//! R4|session_id|sync_mode|status|version|active_index|total_time_ms|time_per_cycle_ms
//!   |cycle_started_at|session_started_at|session_completed_at|increment_ms|max_time_ms
//!   |created_at|updated_at|server_time_ms|expires_at|cycle_expiry|idle_cycles
//!   |expiry_reason|time_control|lag_compensation|low_time_warning_ms|low_time_warned
//!   |participant_count
//!   (|participant_id|participant_index|bank_ms|time_used_ms|cycle_count|has_expired|group_id
//!    |time_control|clock|lag_quota_ms)*
//! [\n metadata]
//! ```
//!
//! Times are epoch ms, `-` is null, `has_expired` is `0`/`1`, the active
//! participant is given by its position, and a participant's
//! `total_time_ms` and `time_remaining_ms` are both its bank. Time controls
//! and lag compensation are in their compact forms
//! ([`TimeControl::to_compact`], [`LagCompensation::to_compact`]); a
//! participant's `clock` is `-`, or `periods_left,moves_left,stage,overtime,turn_ms`
//! with `-` for what its control does not keep and `overtime` `0`/`1`.
//!
//! Older records are still read: `R3` (no low-time warning: the two header
//! fields before the participant count are absent), `R2` (no time controls
//! either: the two before those and the last three of each participant are
//! absent) and `R1` (neither `idle_cycles` nor `expiry_reason`: `idle_cycles`
//! 0, no reason).

use crate::control::{LagCompensation, TimeControl};
use crate::time::Timestamp;
use crate::types::{CycleExpiry, ExpiryReason, Metadata, Participant, Status, SyncMode, SyncState};
use std::fmt::Write;

/// The first field of every record (format version).
pub const TAG: &str = "R4";
/// Earlier formats, still read.
const TAG_R3: &str = "R3";
const TAG_R2: &str = "R2";
const TAG_R1: &str = "R1";
const HEADER_FIELDS: usize = 25;
const HEADER_FIELDS_R3: usize = 23;
const HEADER_FIELDS_R2: usize = 21;
const HEADER_FIELDS_R1: usize = 19;
const PARTICIPANT_FIELDS: usize = 10;
const PARTICIPANT_FIELDS_R2: usize = 7;

/// Why a text is not a valid record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed session record: {0}")]
pub struct BadRecord(pub String);

fn opt<T: std::fmt::Display>(out: &mut String, v: Option<T>) {
    match v {
        Some(v) => write!(out, "|{v}").expect("write to String"),
        None => out.push_str("|-"),
    }
}

/// Encodes a state as its record.
pub fn encode(st: &SyncState) -> String {
    let mut out = String::with_capacity(200 + 80 * st.participants.len());
    let active = st.active_index();
    write!(
        out,
        "{TAG}|{}|{}|{}|{}",
        st.session_id,
        st.sync_mode.as_str(),
        st.status.as_str(),
        st.version
    )
    .expect("write to String");
    opt(&mut out, active);
    write!(out, "|{}", st.total_time_ms).expect("write to String");
    opt(&mut out, st.time_per_cycle_ms);
    opt(&mut out, st.cycle_started_at.map(Timestamp::ms));
    opt(&mut out, st.session_started_at.map(Timestamp::ms));
    opt(&mut out, st.session_completed_at.map(Timestamp::ms));
    write!(out, "|{}", st.increment_ms).expect("write to String");
    opt(&mut out, st.max_time_ms);
    write!(
        out,
        "|{}|{}|{}",
        st.created_at.ms(),
        st.updated_at.ms(),
        st.server_time_ms
    )
    .expect("write to String");
    opt(&mut out, st.expires_at.map(Timestamp::ms));
    opt(&mut out, st.cycle_expiry.map(CycleExpiry::as_str));
    write!(out, "|{}", st.idle_cycles).expect("write to String");
    opt(&mut out, st.expiry_reason.map(ExpiryReason::as_str));
    opt(
        &mut out,
        st.time_control.as_ref().map(TimeControl::to_compact),
    );
    opt(
        &mut out,
        st.lag_compensation
            .as_ref()
            .map(LagCompensation::to_compact),
    );
    opt(&mut out, st.low_time_warning_ms);
    write!(
        out,
        "|{}|{}",
        u8::from(st.low_time_warned),
        st.participants.len()
    )
    .expect("write to String");
    for p in &st.participants {
        write!(
            out,
            "|{}|{}|{}|{}|{}|{}",
            p.participant_id,
            p.participant_index,
            p.time_remaining_ms,
            p.time_used_ms,
            p.cycle_count,
            u8::from(p.has_expired)
        )
        .expect("write to String");
        opt(&mut out, p.group_id.as_deref());
        opt(
            &mut out,
            p.time_control.as_ref().map(TimeControl::to_compact),
        );
        if p.periods_left.is_none()
            && p.moves_left.is_none()
            && p.stage.is_none()
            && !p.overtime
            && p.turn_ms == 0
        {
            out.push_str("|-");
        } else {
            let d = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
            write!(
                out,
                "|{},{},{},{},{}",
                d(p.periods_left),
                d(p.moves_left),
                d(p.stage),
                u8::from(p.overtime),
                p.turn_ms
            )
            .expect("write to String");
        }
        opt(&mut out, p.lag_quota_ms);
    }
    if let Some(m) = &st.metadata {
        out.push('\n');
        out.push_str(m.get());
    }
    out
}

/// Decodes a record.
pub fn decode(text: &str) -> Result<SyncState, BadRecord> {
    let bad = |what: &str| BadRecord(format!("{what} in {:.120}", text));
    let (line, metadata) = match text.split_once('\n') {
        Some((l, m)) => (l, Some(m)),
        None => (text, None),
    };
    let f: Vec<&str> = line.split('|').collect();
    let (header, per) = match f.first() {
        Some(&TAG) => (HEADER_FIELDS, PARTICIPANT_FIELDS),
        Some(&TAG_R3) => (HEADER_FIELDS_R3, PARTICIPANT_FIELDS),
        Some(&TAG_R2) => (HEADER_FIELDS_R2, PARTICIPANT_FIELDS_R2),
        Some(&TAG_R1) => (HEADER_FIELDS_R1, PARTICIPANT_FIELDS_R2),
        _ => return Err(bad("not a record")),
    };
    let r3 = header >= HEADER_FIELDS_R3;
    let r4 = header == HEADER_FIELDS;
    if f.len() < header {
        return Err(bad("not a record"));
    }
    let int = |i: usize| -> Result<i64, BadRecord> {
        f.get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("field {i}")))
    };
    let opt_int = |i: usize| -> Result<Option<i64>, BadRecord> {
        match f.get(i) {
            Some(&"-") => Ok(None),
            _ => int(i).map(Some),
        }
    };
    let opt_ts = |i: usize| opt_int(i).map(|v| v.map(Timestamp));
    let n = usize::try_from(int(header - 1)?).map_err(|_| bad("participant count"))?;
    if f.len() != header + n * per {
        return Err(bad("field count"));
    }
    let active = opt_int(5)?;
    let mut participants = Vec::with_capacity(n);
    let control = |i: usize| -> Result<Option<TimeControl>, BadRecord> {
        match f.get(i) {
            None | Some(&"-") => Ok(None),
            Some(c) => TimeControl::from_compact(c)
                .map(Some)
                .ok_or_else(|| bad("time_control")),
        }
    };
    for k in 0..n {
        let b = header + k * per;
        let bank = int(b + 2)?;
        let (mut periods_left, mut moves_left, mut stage, mut overtime, mut turn_ms) =
            (None, None, None, false, 0);
        if r3 && f[b + 8] != "-" {
            let c: Vec<&str> = f[b + 8].split(',').collect();
            let part = |x: &str| -> Result<Option<u32>, BadRecord> {
                match x {
                    "-" => Ok(None),
                    v => v.parse().map(Some).map_err(|_| bad("clock")),
                }
            };
            if c.len() != 5 {
                return Err(bad("clock"));
            }
            turn_ms = c[4].parse().map_err(|_| bad("clock"))?;
            periods_left = part(c[0])?;
            moves_left = part(c[1])?;
            stage = part(c[2])?;
            overtime = match c[3] {
                "1" => true,
                "0" => false,
                _ => return Err(bad("clock")),
            };
        }
        participants.push(Participant {
            participant_id: f[b].to_string(),
            participant_index: int(b + 1)?,
            total_time_ms: bank,
            time_used_ms: int(b + 3)?,
            time_remaining_ms: bank,
            cycle_count: int(b + 4)?,
            is_active: active == Some(k as i64),
            has_expired: match f[b + 5] {
                "1" => true,
                "0" => false,
                _ => return Err(bad("has_expired")),
            },
            group_id: (f[b + 6] != "-").then(|| f[b + 6].to_string()),
            time_control: if r3 { control(b + 7)? } else { None },
            periods_left,
            moves_left,
            stage,
            overtime,
            turn_ms,
            lag_quota_ms: if r3 { opt_int(b + 9)? } else { None },
        });
    }
    let active_participant_id = match active {
        None => None,
        Some(i) => Some(
            participants
                .get(usize::try_from(i).map_err(|_| bad("active index"))?)
                .ok_or_else(|| bad("active index"))?
                .participant_id
                .clone(),
        ),
    };
    let metadata = match metadata {
        None => None,
        Some(m) => Some(Metadata(
            serde_json::value::RawValue::from_string(m.to_string()).map_err(|_| bad("metadata"))?,
        )),
    };
    Ok(SyncState {
        session_id: f[1].to_string(),
        sync_mode: SyncMode::parse(f[2]).ok_or_else(|| bad("sync_mode"))?,
        status: Status::parse(f[3]).ok_or_else(|| bad("status"))?,
        version: u64::try_from(int(4)?).map_err(|_| bad("version"))?,
        participants,
        active_participant_id,
        total_time_ms: int(6)?,
        time_per_cycle_ms: opt_int(7)?,
        cycle_started_at: opt_ts(8)?,
        session_started_at: opt_ts(9)?,
        session_completed_at: opt_ts(10)?,
        increment_ms: int(11)?,
        max_time_ms: opt_int(12)?,
        created_at: Timestamp(int(13)?),
        updated_at: Timestamp(int(14)?),
        metadata,
        server_time_ms: int(15)?,
        expires_at: opt_ts(16)?,
        cycle_expiry: match f[17] {
            "-" => None,
            "expire" => Some(CycleExpiry::Expire),
            "auto_advance" => Some(CycleExpiry::AutoAdvance),
            _ => return Err(bad("cycle_expiry")),
        },
        idle_cycles: if header >= HEADER_FIELDS_R2 {
            int(18)?
        } else {
            0
        },
        expiry_reason: match (header >= HEADER_FIELDS_R2).then(|| f[19]) {
            None | Some("-") => None,
            Some(r) => Some(ExpiryReason::parse(r).ok_or_else(|| bad("expiry_reason"))?),
        },
        time_control: if r3 { control(20)? } else { None },
        lag_compensation: match (r3, f[21]) {
            (false, _) | (true, "-") => None,
            (true, l) => {
                Some(LagCompensation::from_compact(l).ok_or_else(|| bad("lag_compensation"))?)
            }
        },
        low_time_warning_ms: if r4 { opt_int(22)? } else { None },
        low_time_warned: match r4.then(|| f[23]) {
            None | Some("0") => false,
            Some("1") => true,
            Some(_) => return Err(bad("low_time_warned")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metadata: Option<&str>) -> SyncState {
        let p = |i: i64, active: bool, group: Option<&str>| Participant {
            participant_id: format!("00000000-0000-4000-8000-00000000000{i}"),
            participant_index: i,
            total_time_ms: 1000 * i + 1,
            time_used_ms: 7 * i,
            time_remaining_ms: 1000 * i + 1,
            cycle_count: i,
            is_active: active,
            has_expired: i == 2,
            group_id: group.map(str::to_string),
            time_control: None,
            periods_left: None,
            moves_left: None,
            stage: None,
            overtime: false,
            turn_ms: 0,
            lag_quota_ms: None,
        };
        SyncState {
            session_id: "00000000-0000-4000-8000-000000000000".into(),
            sync_mode: SyncMode::PerGroup,
            status: Status::Running,
            version: 12,
            participants: vec![
                p(1, false, None),
                p(2, true, Some("00000000-0000-4000-8000-0000000000ff")),
            ],
            active_participant_id: Some("00000000-0000-4000-8000-000000000002".into()),
            total_time_ms: 60_000,
            time_per_cycle_ms: None,
            cycle_started_at: Some(Timestamp(1_795_455_546_123)),
            session_started_at: Some(Timestamp(1_795_455_540_000)),
            session_completed_at: None,
            increment_ms: 2_000,
            max_time_ms: Some(5_000),
            created_at: Timestamp(1_795_455_500_000),
            updated_at: Timestamp(1_795_455_546_123),
            metadata: metadata
                .map(|m| Metadata(serde_json::value::RawValue::from_string(m.into()).unwrap())),
            server_time_ms: 1_795_455_546_123,
            expires_at: Some(Timestamp(1_795_455_548_124)),
            cycle_expiry: Some(CycleExpiry::AutoAdvance),
            idle_cycles: 3,
            expiry_reason: None,
            time_control: None,
            lag_compensation: None,
            low_time_warning_ms: None,
            low_time_warned: false,
        }
    }

    #[test]
    fn round_trips() {
        for m in [None, Some(r#"{"a":"x|y\nz","b":[1,2]}"#)] {
            let mut st = sample(m);
            let text = encode(&st);
            assert!(
                text.starts_with("R4|00000000-0000-4000-8000-000000000000|per_group|running|12|1|")
            );
            assert_eq!(decode(&text), Ok(st.clone()));
            st.status = Status::Expired;
            st.expiry_reason = Some(ExpiryReason::IdleCycles);
            assert_eq!(decode(&encode(&st)), Ok(st.clone()));
            // Time controls, a participant's own, its clock and lag quota.
            st.time_control = Some(TimeControl::Byoyomi {
                periods: 5,
                period_ms: 30_000,
            });
            st.lag_compensation = Some(LagCompensation {
                initial_ms: 500,
                gain_ms: 100,
                max_ms: 1_000,
            });
            st.participants[0].periods_left = Some(3);
            st.participants[0].lag_quota_ms = Some(700);
            st.participants[1].time_control = Some(TimeControl::Canadian {
                moves: 20,
                period_ms: 300_000,
            });
            st.participants[1].moves_left = Some(4);
            st.participants[1].overtime = true;
            st.participants[1].lag_quota_ms = Some(0);
            let text = encode(&st);
            assert!(text.contains("|y,5,30000|500,100,1000|-|0|2|"), "{text}");
            assert!(text.contains("|c,20,300000|-,4,-,1,0|0"), "{text}");
            assert_eq!(decode(&text), Ok(st.clone()));
            st.participants[0].turn_ms = 1_234;
            assert!(encode(&st).contains("|3,-,-,0,1234|700"));
            assert_eq!(decode(&encode(&st)), Ok(st.clone()));
            // The low-time warning: its threshold, and whether the turn's was sent.
            st.low_time_warning_ms = Some(30_000);
            st.low_time_warned = true;
            assert!(encode(&st).contains("|500,100,1000|30000|1|2|"));
            assert_eq!(decode(&encode(&st)), Ok(st));
        }
    }

    /// The R3 form of an R4 record without a low-time warning.
    fn as_r3(r4: &str) -> String {
        format!("R3{}", &r4[2..]).replacen("|-|0|2|", "|2|", 1)
    }

    /// The R2 form of an R3 record without time controls.
    fn as_r2(r3: &str) -> String {
        let r2 = format!("R2{}", &r3[2..]).replacen("|-|-|2|", "|2|", 1);
        r2.replace("|-|-|-", "")
    }

    #[test]
    fn r1_r2_and_r3_records_are_still_read() {
        let mut st = sample(None);
        let r3 = as_r3(&encode(&st));
        assert!(r3.contains("|auto_advance|3|-|-|-|2|"), "{r3}");
        assert_eq!(decode(&r3), Ok(st.clone()));
        let r2 = as_r2(&r3);
        assert!(
            r2.ends_with("|00000000-0000-4000-8000-0000000000ff"),
            "{r2}"
        );
        assert_eq!(decode(&r2), Ok(st.clone()));
        let r1 = format!(
            "R1{}",
            r2[2..].replacen("|auto_advance|3|-|", "|auto_advance|", 1)
        );
        st.idle_cycles = 0;
        assert_eq!(decode(&r1), Ok(st));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = encode(&sample(None));
        for t in [
            "",
            "R1",
            "R2|x",
            "R3|x",
            "R4|x",
            "R5|x",
            &good.replace("|-|-|-|0|2|", "|q,1|-|-|0|2|"),
            &good.replace("|-|-|-|0|2|", "|-|1,2|-|0|2|"),
            &good.replace("|-|-|-|0|2|", "|-|-|x|0|2|"),
            &good.replace("|-|-|-|0|2|", "|-|-|-|2|2|"),
            &good.replace("|auto_advance|3|-|", "|auto_advance|3|bored|"),
            "{\"session_id\":1}",
            &good.replace("|12|", "|x|"),
            &good[..good.rfind('|').unwrap()],
            &good.replace("|1|60000|", "|9|60000|"),
        ] {
            assert!(decode(t).is_err(), "{t}");
        }
    }
}
