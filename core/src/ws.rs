//! The WebSocket protocol (docs/API.md §5), by direction: [`ClientIn`] is
//! what a client sends (one parse function, [`ClientIn::parse`]),
//! [`ClientOut`] what it is sent. Messages are JSON objects with a `type` and
//! camelCase fields, as in the SyncKairos v2 contract; `TIME_SYNC`,
//! `SUBSCRIBE` and `UNSUBSCRIBE` are our additions.
//!
//! [`json_schemas`] derives the JSON Schema of both directions from these
//! types, with the close codes ([`CloseCode`], the one declaration of each
//! code's reasons); `docs/ws-messages.schema.json` holds its output, and a
//! test fails when that file is out of date.

use crate::types::SyncState;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest text frame the gateway reads from a client (its messages are tiny).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * 1024;

/// A message from a client.
#[derive(Deserialize, Serialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum ClientIn {
    /// Application-level ping; answered with `PONG`.
    Ping,
    /// Asks for the current state (`STATE_SYNC`) of the socket's session, or
    /// of `sessionId` when given (a session this socket watches).
    Reconnect {
        /// The session (default: the one in the URL).
        #[serde(default)]
        session_id: Option<String>,
    },
    /// NTP-style exchange: `t0` is the client's send time (epoch ms).
    TimeSync {
        /// Client clock at send.
        t0: i64,
    },
    /// Watch another session on this socket.
    Subscribe {
        /// The session.
        session_id: String,
    },
    /// Stop watching a session.
    Unsubscribe {
        /// The session.
        session_id: String,
    },
    /// **[ext]** A fresh token for this socket, before the one it connected
    /// with expires: answered with `AUTH_OK`, or an `ERROR` (`UNAUTHORIZED`)
    /// that leaves the socket as it was. A token not valid for a session the
    /// socket watches closes it with 4003.
    Auth {
        /// The JWT.
        token: String,
    },
}

impl ClientIn {
    /// Parses a text frame; `Err` says why, for the `INVALID_MESSAGE` reply.
    pub fn parse(text: &str) -> Result<ClientIn, String> {
        serde_json::from_str(text).map_err(|e| {
            let e = e.to_string();
            if e.contains("unknown variant") {
                "Unknown message type".to_string()
            } else {
                format!("Invalid message: {e}")
            }
        })
    }
}

/// A message to a client.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum ClientOut {
    /// Sent once, right after the upgrade.
    Connected {
        /// The URL's session.
        session_id: String,
        /// Server time (epoch ms).
        timestamp: i64,
    },
    /// The state after a mutation.
    StateUpdate {
        /// Whose state.
        session_id: String,
        /// Server time when sent (epoch ms).
        timestamp: i64,
        /// The full snapshot.
        state: Box<SyncState>,
    },
    /// The state on connect, on `SUBSCRIBE`, in reply to `RECONNECT`, and
    /// after the gateway's link to Redis came back.
    StateSync {
        /// Whose state.
        session_id: String,
        /// Server time when sent (epoch ms).
        timestamp: i64,
        /// The full snapshot.
        state: Box<SyncState>,
    },
    /// The session was deleted; the socket closes with 1000 after this when
    /// it was the URL's session.
    SessionDeleted {
        /// The session.
        session_id: String,
        /// Server time (epoch ms).
        timestamp: i64,
    },
    /// Reply to `PING`.
    Pong {
        /// Server time (epoch ms).
        timestamp: i64,
    },
    /// Reply to `TIME_SYNC`: `t1` when the request was received, `t2` when
    /// the reply left, both in Redis time.
    TimeSync {
        /// Echoed client send time.
        t0: i64,
        /// Server receive time.
        t1: i64,
        /// Server send time.
        t2: i64,
    },
    /// **[ext]** Reply to `AUTH`: the socket now runs on the new token.
    AuthOk {
        /// Server time (epoch ms).
        timestamp: i64,
        /// The new token's `exp` (epoch s); `null` when auth is disabled.
        exp: Option<u64>,
    },
    /// Something the client sent could not be served.
    Error {
        /// `INVALID_MESSAGE`, `SESSION_NOT_FOUND`, `FORBIDDEN`, …
        code: String,
        /// For humans.
        message: String,
    },
}

impl ClientOut {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("ClientOut always serializes")
    }

    /// Parses a message from a gateway (what a client does). Not plain
    /// `serde_json::from_str`: a state's `metadata` is kept as raw JSON,
    /// which serde cannot read inside a `type`-tagged enum, so the state is
    /// read on its own.
    pub fn parse(text: &str) -> Result<ClientOut, String> {
        #[derive(Deserialize)]
        struct WithState<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(rename = "sessionId")]
            session_id: String,
            timestamp: i64,
            #[serde(borrow)]
            state: &'a serde_json::value::RawValue,
        }
        if let Ok(m) = serde_json::from_str::<WithState>(text) {
            let state = Box::new(
                serde_json::from_str::<SyncState>(m.state.get()).map_err(|e| e.to_string())?,
            );
            let (session_id, timestamp) = (m.session_id, m.timestamp);
            return match m.kind {
                "STATE_UPDATE" => Ok(ClientOut::StateUpdate {
                    session_id,
                    timestamp,
                    state,
                }),
                "STATE_SYNC" => Ok(ClientOut::StateSync {
                    session_id,
                    timestamp,
                    state,
                }),
                other => Err(format!("unexpected state message {other}")),
            };
        }
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// The JSON Schemas (draft 2020-12) of the WebSocket messages, by direction,
/// and the close codes: `{"client_to_server": <schema of ClientIn>,
/// "server_to_client": <schema of ClientOut>, "close_codes": [{"code",
/// "name", "reconnect", "reasons"}, …]}`. Each schema is complete, with every
/// subschema inlined, so either can be used on its own; `close_codes` lists
/// [`CloseCode::ALL`] in numeric order. `docs/ws-messages.schema.json` is this
/// value, pretty-printed.
pub fn json_schemas() -> serde_json::Value {
    let settings = SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true);
    let client_to_server = settings
        .clone()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<ClientIn>();
    let server_to_client = settings
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<ClientOut>();
    let close_codes: Vec<serde_json::Value> = CloseCode::ALL
        .iter()
        .map(|c| {
            serde_json::json!({"code": c.code(), "name": c.name(), "reconnect": c.reconnect(),
                "reasons": c.reasons()})
        })
        .collect();
    serde_json::json!({
        "client_to_server": client_to_server,
        "server_to_client": server_to_client,
        "close_codes": close_codes,
    })
}

/// WebSocket close codes the gateway uses, and whether a client should
/// reconnect after each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the session was deleted. Don't reconnect.
    SessionDeleted,
    /// 1008: bad `sessionId` or token, or not allowed. Don't reconnect as is.
    Policy,
    /// 1009: a frame over the limit. Don't resend it.
    TooBig,
    /// 1012: the gateway is restarting. Reconnect (to another instance).
    Restart,
    /// 1013: the client fell too far behind. Reconnect and resync.
    TooSlow,
    /// 4000: the client missed a heartbeat. Reconnect.
    HeartbeatTimeout,
    /// 4001: the socket's token expired. Reconnect with a fresh token (or
    /// send `AUTH` before it expires).
    TokenExpired,
    /// 4003: the token does not allow what the socket watches. Don't
    /// reconnect with it.
    Forbidden,
    /// 4029: too many messages from this socket. Reconnect after a backoff.
    TooManyMessages,
}

impl CloseCode {
    /// Every close code, in numeric order.
    pub const ALL: [CloseCode; 9] = [
        CloseCode::SessionDeleted,
        CloseCode::Policy,
        CloseCode::TooBig,
        CloseCode::Restart,
        CloseCode::TooSlow,
        CloseCode::HeartbeatTimeout,
        CloseCode::TokenExpired,
        CloseCode::Forbidden,
        CloseCode::TooManyMessages,
    ];

    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::SessionDeleted => 1000,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Restart => 1012,
            CloseCode::TooSlow => 1013,
            CloseCode::HeartbeatTimeout => 4000,
            CloseCode::TokenExpired => 4001,
            CloseCode::Forbidden => 4003,
            CloseCode::TooManyMessages => 4029,
        }
    }

    /// A short stable name (`policy`, `token_expired`, …).
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::SessionDeleted => "session_deleted",
            CloseCode::Policy => "policy",
            CloseCode::TooBig => "too_big",
            CloseCode::Restart => "restart",
            CloseCode::TooSlow => "too_slow",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::Forbidden => "forbidden",
            CloseCode::TooManyMessages => "too_many_messages",
        }
    }

    /// The reason the gateway sends with it; `None` for
    /// [`CloseCode::Policy`], whose reason says why the socket was refused
    /// ([`PolicyReason`]).
    pub fn reason(self) -> Option<&'static str> {
        Some(match self {
            CloseCode::SessionDeleted => "Session deleted",
            CloseCode::Policy => return None,
            CloseCode::TooBig => "Message too big",
            CloseCode::Restart => "Service restart",
            CloseCode::TooSlow => "Too slow: reconnect and resync",
            CloseCode::HeartbeatTimeout => "Heartbeat missed",
            CloseCode::TokenExpired => "Token expired",
            CloseCode::Forbidden => "Token is not valid for this session",
            CloseCode::TooManyMessages => "Too many messages",
        })
    }

    /// Every reason it is sent with: its [`CloseCode::reason`], or for
    /// [`CloseCode::Policy`] every [`PolicyReason`].
    pub fn reasons(self) -> Vec<&'static str> {
        match self.reason() {
            Some(r) => vec![r],
            None => PolicyReason::ALL.iter().map(|r| r.reason()).collect(),
        }
    }

    /// Whether a client should reconnect after it.
    pub fn reconnect(self) -> bool {
        matches!(
            self,
            CloseCode::Restart
                | CloseCode::TooSlow
                | CloseCode::HeartbeatTimeout
                | CloseCode::TokenExpired
                | CloseCode::TooManyMessages
        )
    }
}

/// Why a socket was refused right after the upgrade, with
/// [`CloseCode::Policy`] (1008): the close frame's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyReason {
    /// The URL has no `sessionId`.
    MissingSessionId,
    /// The URL's `sessionId` is not a UUID.
    InvalidSessionId,
    /// No valid token (auth on).
    Unauthorized,
    /// The token does not allow the URL's session.
    Forbidden,
}

impl PolicyReason {
    /// Every reason, in the order docs/API.md lists them.
    pub const ALL: [PolicyReason; 4] = [
        PolicyReason::MissingSessionId,
        PolicyReason::InvalidSessionId,
        PolicyReason::Unauthorized,
        PolicyReason::Forbidden,
    ];

    /// The close frame's reason.
    pub fn reason(self) -> &'static str {
        match self {
            PolicyReason::MissingSessionId => "Missing sessionId parameter",
            PolicyReason::InvalidSessionId => "Invalid sessionId format",
            PolicyReason::Unauthorized => "Unauthorized",
            PolicyReason::Forbidden => "Forbidden",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/ws-messages.schema.json` as committed.
    const SCHEMA_FILE: &str = include_str!("../../docs/ws-messages.schema.json");

    /// The committed schema file is what [`json_schemas`] generates.
    /// `SK_WRITE_SCHEMAS=1` rewrites the file instead of comparing.
    #[test]
    fn schema_file_is_up_to_date() {
        let generated = json_schemas();
        if std::env::var_os("SK_WRITE_SCHEMAS").is_some() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../docs/ws-messages.schema.json"
            );
            let text = serde_json::to_string_pretty(&generated).expect("schemas serialize") + "\n";
            std::fs::write(path, text).expect("write docs/ws-messages.schema.json");
            return;
        }
        let committed: serde_json::Value =
            serde_json::from_str(SCHEMA_FILE).expect("docs/ws-messages.schema.json is JSON");
        assert!(
            committed == generated,
            "docs/ws-messages.schema.json is out of date with core::ws; regenerate it with\n    \
             SK_WRITE_SCHEMAS=1 cargo test -p synckairos-core\nand commit the result"
        );
    }

    #[test]
    fn schemas_describe_every_message_type() {
        let schemas = json_schemas();
        let types = |dir: &str| -> Vec<String> {
            schemas[dir]["oneOf"]
                .as_array()
                .unwrap_or_else(|| panic!("{dir} is a oneOf"))
                .iter()
                .map(|v| {
                    v["properties"]["type"]["const"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(
            types("client_to_server"),
            [
                "PING",
                "RECONNECT",
                "TIME_SYNC",
                "SUBSCRIBE",
                "UNSUBSCRIBE",
                "AUTH"
            ]
        );
        assert_eq!(
            types("server_to_client"),
            [
                "CONNECTED",
                "STATE_UPDATE",
                "STATE_SYNC",
                "SESSION_DELETED",
                "PONG",
                "TIME_SYNC",
                "AUTH_OK",
                "ERROR"
            ]
        );
        // Fields are camelCase, as on the wire; the state inside keeps its
        // snake_case (it is the REST shape).
        let connected = &schemas["server_to_client"]["oneOf"][0]["properties"];
        assert!(connected["sessionId"].is_object() && connected["session_id"].is_null());
        let update = &schemas["server_to_client"]["oneOf"][1]["properties"];
        assert!(update["state"]["properties"]["session_id"].is_object());
        assert!(
            !schemas.to_string().contains(r#""$ref""#),
            "every subschema is inlined"
        );
    }

    /// `close_codes` is [`CloseCode::ALL`], in numeric order, each with its
    /// name, reconnect advice and reasons.
    #[test]
    fn schemas_list_every_close_code() {
        let listed = json_schemas()["close_codes"].clone();
        let want: Vec<serde_json::Value> = CloseCode::ALL
            .iter()
            .map(|c| {
                serde_json::json!({"code": c.code(), "name": c.name(),
                    "reconnect": c.reconnect(), "reasons": c.reasons()})
            })
            .collect();
        assert_eq!(listed, serde_json::Value::from(want));
        let codes: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "numeric order");
        assert_eq!(
            listed[1],
            serde_json::json!({"code": 1008, "name": "policy", "reconnect": false,
                "reasons": ["Missing sessionId parameter", "Invalid sessionId format",
                    "Unauthorized", "Forbidden"]})
        );
        for c in CloseCode::ALL {
            assert!(!c.reasons().is_empty(), "{}", c.code());
            assert_eq!(c.reason().is_none(), c == CloseCode::Policy);
        }
    }

    /// docs/API.md §5 lists every close code with its reasons and reconnect
    /// advice.
    #[test]
    fn api_doc_lists_every_close_code() {
        let doc = include_str!("../../docs/API.md");
        for c in CloseCode::ALL {
            let advice = if c.reconnect() { "yes" } else { "no" };
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| {} |", c.code())))
                .unwrap_or_else(|| panic!("docs/API.md has no row for close code {}", c.code()));
            assert!(
                row.trim_end().ends_with(&format!("| {advice} |")),
                "docs/API.md: close code {} should say reconnect {advice}: {row}",
                c.code()
            );
            let reasons = row.split(" | ").nth(1).unwrap_or_default();
            for r in c.reasons() {
                assert!(
                    reasons.contains(&format!("`{r}`")),
                    "docs/API.md: close code {} should list the reason `{r}`: {row}",
                    c.code()
                );
            }
        }
    }

    #[test]
    fn client_messages_parse_by_type() {
        assert_eq!(ClientIn::parse(r#"{"type":"PING"}"#), Ok(ClientIn::Ping));
        assert_eq!(
            ClientIn::parse(r#"{"type":"TIME_SYNC","t0":12}"#),
            Ok(ClientIn::TimeSync { t0: 12 })
        );
        assert_eq!(
            ClientIn::parse(r#"{"type":"SUBSCRIBE","sessionId":"s"}"#),
            Ok(ClientIn::Subscribe {
                session_id: "s".into()
            })
        );
        assert_eq!(
            ClientIn::parse(r#"{"type":"RECONNECT"}"#),
            Ok(ClientIn::Reconnect { session_id: None })
        );
        assert_eq!(
            ClientIn::parse(r#"{"type":"DANCE"}"#),
            Err("Unknown message type".into())
        );
        assert!(ClientIn::parse("not json").is_err());
        assert!(ClientIn::parse(r#"{"type":"TIME_SYNC"}"#).is_err());
    }

    #[test]
    fn state_messages_parse_back_with_their_metadata() {
        let st: SyncState = serde_json::from_str(r#"{"session_id":"00000000-0000-4000-8000-000000000001","sync_mode":"per_participant","status":"pending","version":1,"participants":[],"active_participant_id":null,"total_time_ms":60000,"time_per_cycle_ms":null,"cycle_started_at":null,"session_started_at":null,"session_completed_at":null,"increment_ms":0,"created_at":"2026-12-01T19:10:07.707Z","updated_at":"2026-12-01T19:10:07.707Z","metadata":{"a":[1,2]},"server_time_ms":1796152207707,"expires_at":null}"#).unwrap();
        let m = ClientOut::StateSync {
            session_id: st.session_id.clone(),
            timestamp: 7,
            state: Box::new(st),
        };
        assert_eq!(ClientOut::parse(&m.to_json()), Ok(m));
        let pong = ClientOut::Pong { timestamp: 3 };
        assert_eq!(ClientOut::parse(&pong.to_json()), Ok(pong));
    }

    #[test]
    fn server_messages_are_flat_and_camel_case() {
        assert_eq!(
            ClientOut::Connected {
                session_id: "s".into(),
                timestamp: 5
            }
            .to_json(),
            r#"{"type":"CONNECTED","sessionId":"s","timestamp":5}"#
        );
        assert_eq!(
            ClientOut::TimeSync {
                t0: 1,
                t1: 2,
                t2: 3
            }
            .to_json(),
            r#"{"type":"TIME_SYNC","t0":1,"t1":2,"t2":3}"#
        );
        assert_eq!(
            ClientOut::Error {
                code: "INVALID_MESSAGE".into(),
                message: "m".into()
            }
            .to_json(),
            r#"{"type":"ERROR","code":"INVALID_MESSAGE","message":"m"}"#
        );
    }
}
