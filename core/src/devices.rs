//! Mobile push devices of a session's participants (docs/API.md §3,
//! "Devices"): the limits, the validation of a registration, the one script
//! call of a register or a remove (`lua/devices.lua`), its reply, and the
//! parser the push sender reads a session's devices hash with.
//!
//! Storage: one hash per session in the session's hash slot
//! ([`crate::keys::devices`]); field `<participant_id>\n<token>`, value
//! `<platform>|<expires_at_ms>|<registered_at_ms>`. Expired entries are
//! ignored by readers ([`parse`]) and pruned by the script on every write;
//! the hash itself expires with its longest-lived token.

use crate::error::{DomainError, Issue, IssueCode};
use crate::keys::SessionKeys;
use crate::script::{BadReply, Call, Script, Settings};
use crate::time::Timestamp;
use crate::validate::parse_uuid;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest accepted push token, in characters.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Live devices one participant may have in a session; a registration past
/// it drops that participant's oldest.
pub const MAX_DEVICES_PER_PARTICIPANT: usize = 5;

/// Live devices one session may have; a registration past it drops the
/// session's oldest.
pub const MAX_DEVICES_PER_SESSION: usize = 1000;

/// How long a registration lives unless refreshed, by default
/// (`DEVICE_TOKEN_TTL_SECONDS`): 30 days.
pub const DEFAULT_TOKEN_TTL_S: u64 = 30 * 86_400;

/// The message of a token that breaks [`valid_token`].
pub const TOKEN_MESSAGE: &str =
    "Token must be 1-4096 characters of A-Z, a-z, 0-9, '_', ':' and '-'";

/// The message of an unknown platform.
pub const PLATFORM_MESSAGE: &str = "Invalid platform. Must be one of: android, ios, web";

/// The devices script: `lua/lib.lua` (for `decode_state` and `now_ms`) and
/// `lua/devices.lua`, with its own KEYS and ARGV (see that file).
pub static DEVICES: Script = Script::new(
    "devices",
    concat!(
        include_str!("../lua/lib.lua"),
        include_str!("../lua/devices.lua")
    ),
);

/// Whether a push token is acceptable: 1..=[`MAX_TOKEN_LEN`] characters of
/// `[A-Za-z0-9_:-]` (FCM registration tokens; hex APNs tokens fit too). The
/// charset keeps the hash field's `\n` separator and paths unambiguous.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
}

/// The regular expression of a token, for the OpenAPI document.
pub fn token_pattern() -> String {
    format!("^[A-Za-z0-9_:-]{{1,{MAX_TOKEN_LEN}}}$")
}

/// Where a device gets its pushes.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Android (FCM).
    Android,
    /// iOS (APNs through FCM).
    Ios,
    /// A browser (FCM web push).
    Web,
}

impl Platform {
    /// Every platform.
    pub const ALL: [Platform; 3] = [Platform::Android, Platform::Ios, Platform::Web];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Android => "android",
            Platform::Ios => "ios",
            Platform::Web => "web",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A valid `POST /v1/sessions/:id/devices` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Whose device (lower-cased).
    pub participant_id: String,
    /// The push token.
    pub token: String,
    /// Its platform.
    pub platform: Platform,
}

fn issue(field: &str, message: &str, code: IssueCode) -> Issue {
    Issue {
        field: field.into(),
        message: message.into(),
        code,
    }
}

fn wrong_type(field: &str, expected: &str, got: Option<&Value>) -> Issue {
    let received = match got {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    };
    issue(
        field,
        &format!("Invalid input: expected {expected}, received {received}"),
        IssueCode::InvalidType,
    )
}

/// Validates a registration body, reporting every broken rule at once.
pub fn validate_registration(body: &Value) -> Result<Registration, Vec<Issue>> {
    let Value::Object(obj) = body else {
        return Err(vec![wrong_type("", "object", Some(body))]);
    };
    let mut issues = Vec::new();
    let participant_id = match obj.get("participant_id") {
        Some(Value::String(s)) => {
            let id = parse_uuid(s);
            if id.is_none() {
                issues.push(issue(
                    "participant_id",
                    "Participant ID must be a valid UUID",
                    IssueCode::InvalidFormat,
                ));
            }
            id
        }
        other => {
            issues.push(wrong_type("participant_id", "string", other));
            None
        }
    };
    let token = match obj.get("token") {
        Some(Value::String(s)) if valid_token(s) => Some(s.clone()),
        Some(Value::String(s)) => {
            let code = match s.len() {
                0 => IssueCode::TooSmall,
                n if n > MAX_TOKEN_LEN => IssueCode::TooBig,
                _ => IssueCode::InvalidFormat,
            };
            issues.push(issue("token", TOKEN_MESSAGE, code));
            None
        }
        other => {
            issues.push(wrong_type("token", "string", other));
            None
        }
    };
    let platform = match obj.get("platform") {
        Some(Value::String(s)) => {
            let p = Platform::parse(s);
            if p.is_none() {
                issues.push(issue("platform", PLATFORM_MESSAGE, IssueCode::InvalidValue));
            }
            p
        }
        other => {
            issues.push(wrong_type("platform", "string", other));
            None
        }
    };
    match (participant_id, token, platform) {
        (Some(participant_id), Some(token), Some(platform)) if issues.is_empty() => {
            Ok(Registration {
                participant_id,
                token,
                platform,
            })
        }
        _ => Err(issues),
    }
}

/// The token of `DELETE /v1/sessions/:id/devices/:token`, percent-decoded.
pub fn path_token(raw: &str) -> Result<String, Issue> {
    let bad = || issue("token", TOKEN_MESSAGE, IssueCode::InvalidFormat);
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let token = String::from_utf8(out).map_err(|_| bad())?;
    if valid_token(&token) {
        Ok(token)
    } else {
        Err(bad())
    }
}

/// One devices command on a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceOp {
    /// Registers (or refreshes) a participant's token.
    Register {
        /// The session (lower-cased).
        session_id: String,
        /// What to register.
        registration: Registration,
    },
    /// Removes a token.
    Remove {
        /// The session (lower-cased).
        session_id: String,
        /// The token.
        token: String,
        /// Only this participant's registration of it (a participant's own
        /// call); `None` removes it whoever registered it (host, admin).
        participant_id: Option<String>,
    },
}

impl DeviceOp {
    /// The session of the command.
    pub fn session_id(&self) -> &str {
        match self {
            DeviceOp::Register { session_id, .. } | DeviceOp::Remove { session_id, .. } => {
                session_id
            }
        }
    }
}

/// The script call of `op`: KEYS state and devices hash, both in the
/// session's slot. `now_ms` is for tests only (`None`: Redis `TIME`).
pub fn call(op: &DeviceOp, settings: &Settings, now_ms: Option<i64>) -> Call {
    let k = SessionKeys::new(op.session_id(), settings.shards);
    let (name, pid, token, platform) = match op {
        DeviceOp::Register { registration, .. } => (
            "register",
            registration.participant_id.as_str(),
            registration.token.as_str(),
            registration.platform.as_str(),
        ),
        DeviceOp::Remove {
            token,
            participant_id,
            ..
        } => (
            "remove",
            participant_id.as_deref().unwrap_or(""),
            token.as_str(),
            "",
        ),
    };
    Call {
        script: &DEVICES,
        keys: vec![k.state, k.devices],
        args: vec![
            now_ms.map(|n| n.to_string()).unwrap_or_default(),
            name.to_string(),
            pid.to_string(),
            token.to_string(),
            platform.to_string(),
            (settings.device_ttl_s.max(1) * 1000).to_string(),
            MAX_DEVICES_PER_PARTICIPANT.to_string(),
            MAX_DEVICES_PER_SESSION.to_string(),
        ],
    }
}

/// What a devices command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceReply {
    /// The token is registered until `expires_at_ms`; `created` is false
    /// for a refresh of a live registration.
    Registered {
        /// A new registration (201) rather than a refresh (200).
        created: bool,
        /// When it lapses unless refreshed (epoch ms, Redis time).
        expires_at_ms: i64,
    },
    /// The token is not registered (any more); `existed` says whether this
    /// call removed it.
    Removed {
        /// It was registered.
        existed: bool,
    },
}

#[derive(Deserialize)]
struct Header {
    kind: String,
    code: Option<String>,
    created: Option<bool>,
    expires_at_ms: Option<i64>,
    existed: Option<bool>,
    participant_id: Option<String>,
}

/// Parses the devices script's reply for a command on `session_id`.
pub fn parse_reply<S: AsRef<str>>(
    parts: &[S],
    session_id: &str,
) -> Result<Result<DeviceReply, DomainError>, BadReply> {
    let all = || {
        let all: Vec<&str> = parts.iter().map(AsRef::as_ref).collect();
        BadReply(format!("{all:?}"))
    };
    let h: Header = parts
        .first()
        .and_then(|p| serde_json::from_str(p.as_ref()).ok())
        .ok_or_else(all)?;
    Ok(match h.kind.as_str() {
        "registered" => Ok(DeviceReply::Registered {
            created: h.created.ok_or_else(all)?,
            expires_at_ms: h.expires_at_ms.ok_or_else(all)?,
        }),
        "removed" => Ok(DeviceReply::Removed {
            existed: h.existed.ok_or_else(all)?,
        }),
        "error" => Err(match h.code.as_deref() {
            Some("SESSION_NOT_FOUND") => DomainError::SessionNotFound {
                session_id: session_id.to_string(),
            },
            Some("PARTICIPANT_NOT_FOUND") => DomainError::ParticipantNotFound {
                participant_id: h.participant_id.ok_or_else(all)?,
            },
            _ => return Err(all()),
        }),
        _ => return Err(all()),
    })
}

/// The body of a registration's reply (`{"data": …}`): never the token.
#[derive(Serialize, schemars::JsonSchema, Debug, PartialEq, Eq)]
pub struct DeviceResponse {
    /// Whose device.
    pub participant_id: String,
    /// Its platform.
    pub platform: Platform,
    /// When the registration lapses unless registered again.
    pub expires_at: Timestamp,
}

/// A live device, as the push sender reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Whose device.
    pub participant_id: String,
    /// The push token.
    pub token: String,
    /// Its platform.
    pub platform: Platform,
    /// When it lapses (epoch ms).
    pub expires_at_ms: i64,
    /// When it was last registered (epoch ms).
    pub registered_at_ms: i64,
}

impl Device {
    /// Its field in the session's devices hash (for `HDEL`).
    pub fn field(&self) -> String {
        field(&self.participant_id, &self.token)
    }
}

/// The hash field of a participant's token.
pub fn field(participant_id: &str, token: &str) -> String {
    format!("{participant_id}\n{token}")
}

/// The live devices of a devices hash (`HGETALL`, as field/value pairs) at
/// `now_ms`: expired and malformed entries are left out. Sorted by
/// participant, then registration time, then token.
pub fn parse<K: AsRef<str>, V: AsRef<str>>(hash: &[(K, V)], now_ms: i64) -> Vec<Device> {
    let mut out: Vec<Device> = hash
        .iter()
        .filter_map(|(f, v)| {
            let (participant_id, token) = f.as_ref().split_once('\n')?;
            let mut parts = v.as_ref().split('|');
            let platform = Platform::parse(parts.next()?)?;
            let expires_at_ms: i64 = parts.next()?.parse().ok()?;
            let registered_at_ms: i64 = parts.next()?.parse().ok()?;
            (parts.next().is_none() && expires_at_ms > now_ms).then(|| Device {
                participant_id: participant_id.to_string(),
                token: token.to_string(),
                platform,
                expires_at_ms,
                registered_at_ms,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.participant_id, a.registered_at_ms, &a.token).cmp(&(
            &b.participant_id,
            b.registered_at_ms,
            &b.token,
        ))
    });
    out
}

/// The live devices of one participant (see [`parse`]).
pub fn of_participant<K: AsRef<str>, V: AsRef<str>>(
    hash: &[(K, V)],
    participant_id: &str,
    now_ms: i64,
) -> Vec<Device> {
    let mut all = parse(hash, now_ms);
    all.retain(|d| d.participant_id.eq_ignore_ascii_case(participant_id));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &str = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b12";

    #[test]
    fn tokens() {
        assert!(valid_token("abc:DEF_123-x"));
        assert!(valid_token(&"a".repeat(MAX_TOKEN_LEN)));
        for bad in ["", "a b", "a\nb", "a/b", "é", "a%3A"] {
            assert!(!valid_token(bad), "{bad:?}");
        }
        assert!(!valid_token(&"a".repeat(MAX_TOKEN_LEN + 1)));
        assert_eq!(path_token("ab%3Acd").unwrap(), "ab:cd");
        assert_eq!(path_token("ab:cd").unwrap(), "ab:cd");
        for bad in ["ab%3", "ab%zz", "a%20b", "%C3%A9", ""] {
            assert!(path_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn registrations() {
        let ok = validate_registration(
            &json!({"participant_id": P.to_uppercase(), "token": "t:1", "platform": "ios"}),
        )
        .unwrap();
        assert_eq!(
            ok,
            Registration {
                participant_id: P.into(),
                token: "t:1".into(),
                platform: Platform::Ios
            }
        );
        let issues = validate_registration(&json!({"participant_id": "x", "token": "a b",
            "platform": "symbian"}))
        .unwrap_err();
        let fields: Vec<(&str, IssueCode)> =
            issues.iter().map(|i| (i.field.as_str(), i.code)).collect();
        assert_eq!(
            fields,
            [
                ("participant_id", IssueCode::InvalidFormat),
                ("token", IssueCode::InvalidFormat),
                ("platform", IssueCode::InvalidValue)
            ]
        );
        let issues = validate_registration(&json!({})).unwrap_err();
        assert_eq!(issues.len(), 3);
        assert!(issues
            .iter()
            .all(|i| i.message.ends_with("received undefined")));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let issues =
            validate_registration(&json!({"participant_id": P, "token": long, "platform": "web"}))
                .unwrap_err();
        assert_eq!(issues[0].code, IssueCode::TooBig);
        assert_eq!(
            validate_registration(&json!([1])).unwrap_err()[0].message,
            "Invalid input: expected object, received array"
        );
    }

    #[test]
    fn the_hash_parses_to_live_devices_only() {
        let hash = vec![
            (format!("{P}\ntok-b"), "android|2000|900".to_string()),
            (format!("{P}\ntok-a"), "ios|2000|500".to_string()),
            (format!("{P}\nold"), "web|1000|100".to_string()),
            ("other\ntok-c".to_string(), "web|5000|100".to_string()),
            ("no-separator".to_string(), "web|5000|100".to_string()),
            (format!("{P}\nbad"), "fax|5000|100".to_string()),
            (format!("{P}\nbad2"), "web|x|100".to_string()),
            (format!("{P}\nbad3"), "web|5000|100|9".to_string()),
        ];
        let live = parse(&hash, 1000);
        let tokens: Vec<&str> = live.iter().map(|d| d.token.as_str()).collect();
        assert_eq!(tokens, ["tok-a", "tok-b", "tok-c"]);
        assert_eq!(live[0].platform, Platform::Ios);
        assert_eq!(live[0].field(), format!("{P}\ntok-a"));
        let mine = of_participant(&hash, &P.to_uppercase(), 1000);
        assert_eq!(mine.len(), 2);
        assert!(of_participant(&hash, P, 2000).is_empty());
    }

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply(
                &[r#"{"kind":"registered","created":true,"expires_at_ms":5}"#],
                "s"
            ),
            Ok(Ok(DeviceReply::Registered {
                created: true,
                expires_at_ms: 5
            }))
        );
        assert_eq!(
            parse_reply(&[r#"{"kind":"removed","existed":false}"#], "s"),
            Ok(Ok(DeviceReply::Removed { existed: false }))
        );
        assert_eq!(
            parse_reply(&[r#"{"kind":"error","code":"SESSION_NOT_FOUND"}"#], "s"),
            Ok(Err(DomainError::SessionNotFound {
                session_id: "s".into()
            }))
        );
        for bad in [
            &[][..],
            &["{}"][..],
            &[r#"{"kind":"registered"}"#][..],
            &[r#"{"kind":"error","code":"X"}"#][..],
        ] {
            assert!(parse_reply(bad, "s").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_call_stays_in_the_sessions_slot() {
        let sid = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11";
        let c = call(
            &DeviceOp::Remove {
                session_id: sid.into(),
                token: "t".into(),
                participant_id: None,
            },
            &Settings::default(),
            None,
        );
        let k = SessionKeys::new(sid, 16);
        assert_eq!(c.keys, [k.state, k.devices]);
        assert_eq!(c.args[1], "remove");
        assert_eq!(c.args[5], (DEFAULT_TOKEN_TTL_S * 1000).to_string());
        assert!(DEVICES.source.trim_end().ends_with("return devices()"));
    }
}
