//! `GET /v1/openapi.json`: the OpenAPI 3 document of the REST API, built from
//! the same Rust types the service serializes (schemas derived with
//! `schemars`), so it cannot drift from the wire.

use crate::api::{SwitchResponse, TimeResponse};
use crate::error::Issue;
use crate::types::{CycleExpiry, Metadata, SyncMode, SyncState};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

/// A participant of a create body (docs/API.md §3).
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct CreateParticipant {
    /// UUID, unique in the session.
    participant_id: String,
    /// Position, ≥ 0; participants are ordered by it.
    participant_index: i64,
    /// Initial bank.
    total_time_ms: i64,
    /// Team (`per_group`).
    group_id: Option<String>,
}

/// The body of `POST /v1/sessions` (validated by [`crate::validate::validate_create`]).
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct CreateSessionBody {
    /// UUID.
    session_id: String,
    /// Clock semantics.
    sync_mode: SyncMode,
    /// 1..1000 participants.
    participants: Vec<CreateParticipant>,
    /// Session-wide time (the countdown of `global`).
    total_time_ms: i64,
    /// Time per turn; required for `per_cycle`.
    time_per_cycle_ms: Option<i64>,
    /// Fischer increment.
    increment_ms: Option<i64>,
    /// Stopwatch cap (`count_up`).
    max_time_ms: Option<i64>,
    /// **[ext]** Client data (≤ 16 KiB).
    metadata: Option<Metadata>,
    /// **[ext]** `per_cycle` only.
    cycle_expiry: Option<CycleExpiry>,
}

/// The optional body of `POST /v1/sessions/:id/switch`.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct SwitchBody {
    /// Who plays next (default: rotation).
    next_participant_id: Option<String>,
    /// **[ext]** Same as `If-Match`.
    expected_version: Option<u64>,
}

/// The body of every error response.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct ErrorResponse {
    /// The error.
    error: ErrorObject,
}

/// `error` of an [`ErrorResponse`].
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct ErrorObject {
    /// Stable code (`VALIDATION_ERROR`, `SESSION_NOT_FOUND`, …).
    code: String,
    /// For humans.
    message: String,
    /// Validation issues, or `{expected_version, actual_version}` for `CONFLICT`.
    details: Option<Vec<Issue>>,
    /// For `RATE_LIMIT_EXCEEDED`.
    retry_after_seconds: Option<u64>,
}

fn data(schema: &Value) -> Value {
    json!({"type": "object", "required": ["data"], "properties": {"data": schema}})
}

fn content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// Writes the limits that validation enforces ([`crate::validate`]'s
/// declarations) into the request schemas, so the document cannot promise
/// what validation refuses, nor the other way round.
fn constrain(schemas: &mut serde_json::Map<String, Value>) {
    use crate::validate::{
        Scope, CREATE_INTEGERS, CREATE_UUIDS, MAX_PARTICIPANTS, MIN_PARTICIPANTS,
    };
    let object = |scope| match scope {
        Scope::Body => "CreateSessionBody",
        Scope::Participant => "CreateParticipant",
    };
    for (scope, b) in CREATE_INTEGERS {
        let p = &mut schemas[object(scope)]["properties"][b.field];
        p["minimum"] = json!(b.min);
        p["maximum"] = json!(b.max);
    }
    for (scope, field) in CREATE_UUIDS {
        schemas[object(scope)]["properties"][field]["format"] = json!("uuid");
    }
    let participants = &mut schemas["CreateSessionBody"]["properties"]["participants"];
    participants["minItems"] = json!(MIN_PARTICIPANTS);
    participants["maxItems"] = json!(MAX_PARTICIPANTS);
    schemas["SwitchBody"]["properties"]["next_participant_id"]["format"] = json!("uuid");
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let state = json!(gen.subschema_for::<SyncState>());
    let create = json!(gen.subschema_for::<CreateSessionBody>());
    let switch_body = json!(gen.subschema_for::<SwitchBody>());
    let switch = json!(gen.subschema_for::<SwitchResponse<'static>>());
    let time = json!(gen.subschema_for::<TimeResponse>());
    let error = json!(gen.subschema_for::<ErrorResponse>());
    let mut schemas: serde_json::Map<String, Value> =
        gen.take_definitions(true).into_iter().collect();
    constrain(&mut schemas);

    let err = |desc: &str| json!({"description": desc, "content": content(error.clone())});
    let ok_state = |desc: &str| json!({"description": desc, "content": content(data(&state))});
    let id = json!({"name": "id", "in": "path", "required": true,
        "schema": {"type": "string", "format": "uuid"}});
    let if_match = json!({"name": "If-Match", "in": "header", "required": false,
        "description": "Expected version; 409 CONFLICT on mismatch",
        "schema": {"type": "string"}});
    let idem = json!({"name": "Idempotency-Key", "in": "header", "required": false,
        "description": "A retry with the same key gets the first response (Idempotent-Replayed: true)",
        "schema": {"type": "string", "maxLength": 255}});
    let common_errors = |extra: &[(&str, &str)]| {
        let mut r = serde_json::Map::new();
        r.insert(
            "400".into(),
            err("VALIDATION_ERROR, INVALID_JSON or INVALID_STATE_TRANSITION"),
        );
        r.insert("401".into(), err("UNAUTHORIZED"));
        r.insert("403".into(), err("FORBIDDEN"));
        r.insert("429".into(), err("RATE_LIMIT_EXCEEDED"));
        for (code, desc) in extra {
            r.insert(code.to_string(), err(desc));
        }
        r
    };
    let action = |summary: &str, ok: Value| {
        let mut responses = common_errors(&[("404", "SESSION_NOT_FOUND"), ("409", "CONFLICT")]);
        responses.insert("200".into(), ok);
        json!({"post": {"summary": summary, "parameters": [id, if_match, idem],
            "responses": responses}})
    };
    let mut paths = serde_json::Map::new();
    let mut create_responses =
        common_errors(&[("409", "SESSION_EXISTS"), ("413", "PAYLOAD_TOO_LARGE")]);
    create_responses.insert("201".into(), ok_state("Created (pending, version 1)"));
    paths.insert(
        "/v1/sessions".into(),
        json!({"post": {
        "summary": "Create a session", "parameters": [idem],
        "requestBody": {"required": true, "content": content(create)},
        "responses": create_responses}}),
    );
    let mut get_responses = common_errors(&[("404", "SESSION_NOT_FOUND")]);
    get_responses.insert("200".into(), ok_state("The session"));
    let mut delete_responses = common_errors(&[]);
    delete_responses.insert(
        "204".into(),
        json!({"description": "Deleted (also when absent)"}),
    );
    paths.insert("/v1/sessions/{id}".into(), json!({
        "get": {"summary": "Read a session", "parameters": [id], "responses": get_responses},
        "delete": {"summary": "Delete a session", "parameters": [id, idem], "responses": delete_responses}}));
    for (name, summary) in [
        ("start", "pending → running"),
        ("pause", "running → paused, charging the running turn"),
        ("resume", "paused → running"),
        ("complete", "→ completed, charging the running turn"),
        ("cancel", "→ cancelled"),
    ] {
        paths.insert(
            format!("/v1/sessions/{{id}}/{name}"),
            action(summary, ok_state("The session")),
        );
    }
    let mut switch_path = action(
        "End the running turn and pass it on",
        json!({"description": "The new turn", "content": content(data(&switch))}),
    );
    switch_path["post"]["requestBody"] =
        json!({"required": false, "content": content(switch_body)});
    paths.insert("/v1/sessions/{id}/switch".into(), switch_path);
    paths.insert(
        "/v1/time".into(),
        json!({"get": {"summary": "Server (Redis) time",
        "responses": {"200": {"description": "Epoch ms", "content": content(time)}}}}),
    );
    paths.insert(
        "/health".into(),
        json!({"get": {"summary": "Liveness",
        "responses": {"200": {"description": "{\"status\":\"ok\"}"}}}}),
    );
    paths.insert(
        "/ready".into(),
        json!({"get": {"summary": "Redis reachable",
        "responses": {"200": {"description": "{\"status\":\"ready\"}"},
            "503": {"description": "{\"status\":\"not_ready\",\"error\":…}"}}}}),
    );

    json!({
        "openapi": "3.0.3",
        "info": {"title": "SyncKairos", "version": crate::api::SERVER_VERSION,
            "description": "Server-authoritative timers kept in step across every client."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        },
        "security": [{"bearer": []}]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_route_with_derived_schemas() {
        let doc = document();
        for path in [
            "/v1/sessions",
            "/v1/sessions/{id}",
            "/v1/sessions/{id}/switch",
            "/v1/time",
            "/health",
            "/ready",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        let schemas = &doc["components"]["schemas"];
        let state = &schemas["SyncState"]["properties"];
        // The schema follows the serde shape of the type itself.
        for field in [
            "session_id",
            "participants",
            "server_time_ms",
            "expires_at",
            "metadata",
        ] {
            assert!(state[field].is_object(), "{field}");
        }
        let required: Vec<&str> = schemas["SyncState"]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(required.contains(&"version") && !required.contains(&"max_time_ms"));
        assert!(schemas["Participant"]["properties"]["group_id"].is_object());
        // Documented variants become a oneOf of single-value enums.
        assert_eq!(schemas["SyncMode"]["oneOf"].as_array().unwrap().len(), 5);
        let text = doc.to_string();
        assert!(
            !text.contains("#/$defs/"),
            "OpenAPI 3 refs point at components"
        );
    }

    #[test]
    fn the_create_schema_accepts_what_validation_accepts() {
        let body = serde_json::json!({"session_id": "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11",
            "sync_mode": "per_participant", "total_time_ms": 60000,
            "participants": [{"participant_id": "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b12",
                "participant_index": 0, "total_time_ms": 60000}]});
        assert!(crate::validate::validate_create(&body).is_ok());
        let _: CreateSessionBody = serde_json::from_value(body).expect("the documented shape");
    }

    #[test]
    fn every_limit_is_one_declaration_read_by_validation_and_the_document() {
        use crate::error::{Issue, IssueCode};
        use crate::validate::{
            validate_create, Scope, CREATE_INTEGERS, CREATE_UUIDS, MAX_PARTICIPANTS,
            MIN_PARTICIPANTS,
        };
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let object = |scope| match scope {
            Scope::Body => "CreateSessionBody",
            Scope::Participant => "CreateParticipant",
        };
        let participant = |i: usize| {
            json!({"participant_id": format!("00000000-0000-4000-8000-{i:012}"),
                "participant_index": i, "total_time_ms": 60000})
        };
        let valid = json!({"session_id": "6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
            "sync_mode": "per_cycle", "total_time_ms": 60000, "time_per_cycle_ms": 30000,
            "increment_ms": 0, "max_time_ms": 60000, "participants": [participant(0)]});
        assert!(validate_create(&valid).is_ok(), "the base body is valid");
        let mut walked = 0;
        for (scope, b) in CREATE_INTEGERS {
            let p = &schemas[object(scope)]["properties"][b.field];
            assert_eq!(
                (&p["minimum"], &p["maximum"]),
                (&json!(b.min), &json!(b.max)),
                "{}",
                b.field
            );
            let path = match scope {
                Scope::Body => b.field.to_string(),
                Scope::Participant => format!("participants.0.{}", b.field),
            };
            for (v, refusal) in [
                (b.min - 1, Some((b.too_small, IssueCode::TooSmall))),
                (b.min, None),
                (b.max, None),
                (b.max + 1, Some((b.too_big, IssueCode::TooBig))),
            ] {
                let mut body = valid.clone();
                match scope {
                    Scope::Body => body[b.field] = json!(v),
                    Scope::Participant => body["participants"][0][b.field] = json!(v),
                }
                let got = validate_create(&body).err();
                let want = refusal.map(|(message, code)| {
                    vec![Issue {
                        field: path.clone(),
                        message: message.into(),
                        code,
                    }]
                });
                assert_eq!(got, want, "{path} = {v}");
                walked += 1;
            }
        }
        assert_eq!(walked, 4 * CREATE_INTEGERS.len());

        let items = &schemas["CreateSessionBody"]["properties"]["participants"];
        assert_eq!(
            (&items["minItems"], &items["maxItems"]),
            (&json!(MIN_PARTICIPANTS), &json!(MAX_PARTICIPANTS))
        );
        for (n, ok) in [
            (MIN_PARTICIPANTS - 1, false),
            (MIN_PARTICIPANTS, true),
            (MAX_PARTICIPANTS, true),
            (MAX_PARTICIPANTS + 1, false),
        ] {
            let mut body = valid.clone();
            body["participants"] = (0..n).map(participant).collect();
            assert_eq!(validate_create(&body).is_ok(), ok, "{n} participants");
        }
        for (scope, field) in CREATE_UUIDS {
            assert_eq!(
                schemas[object(scope)]["properties"][field]["format"],
                json!("uuid"),
                "{field}"
            );
            let mut body = valid.clone();
            match scope {
                Scope::Body => body[field] = json!("not-a-uuid"),
                Scope::Participant => body["participants"][0][field] = json!("not-a-uuid"),
            }
            let issues = validate_create(&body).unwrap_err();
            assert_eq!(issues[0].code, IssueCode::InvalidFormat, "{field}");
        }
    }
}
