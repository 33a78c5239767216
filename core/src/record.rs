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
//! R2|session_id|sync_mode|status|version|active_index|total_time_ms|time_per_cycle_ms
//!   |cycle_started_at|session_started_at|session_completed_at|increment_ms|max_time_ms
//!   |created_at|updated_at|server_time_ms|expires_at|cycle_expiry|idle_cycles
//!   |expiry_reason|participant_count
//!   (|participant_id|participant_index|bank_ms|time_used_ms|cycle_count|has_expired|group_id)*
//! [\n metadata]
//! ```
//!
//! Times are epoch ms, `-` is null, `has_expired` is `0`/`1`, the active
//! participant is given by its position, and a participant's
//! `total_time_ms` and `time_remaining_ms` are both its bank.
//!
//! `R1` records (written before `idle_cycles` and `expiry_reason` existed:
//! no such two fields) are still read, as `idle_cycles` 0 and no reason.

use crate::time::Timestamp;
use crate::types::{CycleExpiry, ExpiryReason, Metadata, Participant, Status, SyncMode, SyncState};
use std::fmt::Write;

/// The first field of every record (format version).
pub const TAG: &str = "R2";
/// The earlier format, still read.
const TAG_R1: &str = "R1";
const HEADER_FIELDS: usize = 21;
const HEADER_FIELDS_R1: usize = 19;
const PARTICIPANT_FIELDS: usize = 7;

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
    write!(out, "|{}", st.participants.len()).expect("write to String");
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
    let header = match f.first() {
        Some(&TAG) => HEADER_FIELDS,
        Some(&TAG_R1) => HEADER_FIELDS_R1,
        _ => return Err(bad("not a record")),
    };
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
    if f.len() != header + n * PARTICIPANT_FIELDS {
        return Err(bad("field count"));
    }
    let active = opt_int(5)?;
    let mut participants = Vec::with_capacity(n);
    for k in 0..n {
        let b = header + k * PARTICIPANT_FIELDS;
        let bank = int(b + 2)?;
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
        idle_cycles: if header == HEADER_FIELDS { int(18)? } else { 0 },
        expiry_reason: match (header == HEADER_FIELDS).then(|| f[19]) {
            None | Some("-") => None,
            Some(r) => Some(ExpiryReason::parse(r).ok_or_else(|| bad("expiry_reason"))?),
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
        }
    }

    #[test]
    fn round_trips() {
        for m in [None, Some(r#"{"a":"x|y\nz","b":[1,2]}"#)] {
            let mut st = sample(m);
            let text = encode(&st);
            assert!(
                text.starts_with("R2|00000000-0000-4000-8000-000000000000|per_group|running|12|1|")
            );
            assert_eq!(decode(&text), Ok(st.clone()));
            st.status = Status::Expired;
            st.expiry_reason = Some(ExpiryReason::IdleCycles);
            assert_eq!(decode(&encode(&st)), Ok(st));
        }
    }

    #[test]
    fn r1_records_are_still_read() {
        let mut st = sample(None);
        let r2 = encode(&st);
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
