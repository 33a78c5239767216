//! `GET /v1/openapi.json`: the OpenAPI 3 document of the REST API, built from
//! the same Rust types the service serializes (schemas derived with
//! `schemars`), so it cannot drift from the wire.

use crate::api::{ApiError, Route, SessionAction, SwitchResponse, TimeResponse};
use crate::control::{LagCompensation, TimeControl};
use crate::error::Issue;
use crate::types::{CycleExpiry, Metadata, SyncMode, SyncState};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

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
    /// **[ext]** This participant's own time control (`per_participant` only).
    time_control: Option<TimeControl>,
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
    /// **[ext]** The time control (`per_participant` and `per_group`); not
    /// together with `increment_ms` (a `fischer` control is stored as it).
    time_control: Option<TimeControl>,
    /// **[ext]** Lag compensation (`per_participant` and `per_group`).
    lag_compensation: Option<LagCompensation>,
    /// **[ext]** When the running clock's time left reaches this (ms), a
    /// `low_time_warning` event fires, once per turn (webhooks and push
    /// carry it). Absent: the deployment's `LOW_TIME_WARNING_MS`; 0: none.
    low_time_warning_ms: Option<i64>,
}

/// The optional body of `POST /v1/sessions/:id/switch`.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct SwitchBody {
    /// Who plays next (default: rotation).
    next_participant_id: Option<String>,
    /// **[ext]** Same as `If-Match`.
    expected_version: Option<u64>,
    /// **[ext]** This move's network lag as the client estimates it (ms),
    /// credited from the mover's quota when the session compensates lag.
    lag_ms: Option<i64>,
}

/// The body of `POST /v1/sessions/:id/devices`
/// (validated by [`crate::devices::validate_registration`]).
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct RegisterDeviceBody {
    /// Whose device: a participant of the session (a participant's token
    /// may name only itself).
    participant_id: String,
    /// The push token (an FCM registration token).
    token: String,
    /// The device's platform.
    platform: crate::devices::Platform,
}

/// The body of every error response.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct ErrorResponse {
    /// The error.
    error: ErrorObject,
}

/// `details` of an [`ErrorObject`].
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ErrorDetails {
    /// `VALIDATION_ERROR`: every broken rule.
    Issues(Vec<Issue>),
    /// `CONFLICT`: the expected and the stored version.
    Conflict(crate::api::ConflictDetails),
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details: Option<ErrorDetails>,
    /// For `RATE_LIMIT_EXCEEDED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
        Scope, CREATE_INTEGERS, CREATE_UUIDS, MAX_PARTICIPANTS, MIN_PARTICIPANTS, UUID_PATTERN,
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
        let p = &mut schemas[object(scope)]["properties"][field];
        p["format"] = json!("uuid");
        p["pattern"] = json!(UUID_PATTERN);
    }
    let participants = &mut schemas["CreateSessionBody"]["properties"]["participants"];
    participants["minItems"] = json!(MIN_PARTICIPANTS);
    participants["maxItems"] = json!(MAX_PARTICIPANTS);
    let device = &mut schemas["RegisterDeviceBody"]["properties"];
    device["participant_id"]["format"] = json!("uuid");
    device["participant_id"]["pattern"] = json!(UUID_PATTERN);
    device["token"]["minLength"] = json!(1);
    device["token"]["maxLength"] = json!(crate::devices::MAX_TOKEN_LEN);
    device["token"]["pattern"] = json!(crate::devices::token_pattern());
    let next = &mut schemas["SwitchBody"]["properties"]["next_participant_id"];
    next["format"] = json!("uuid");
    next["pattern"] = json!(UUID_PATTERN);
    let bound = |p: &mut Value, b: &crate::validate::Bounds| {
        p["minimum"] = json!(b.min);
        p["maximum"] = json!(b.max);
    };
    bound(
        &mut schemas["SwitchBody"]["properties"][crate::validate::LAG.field],
        &crate::validate::LAG,
    );
    // Time controls, stages and lag compensation: every integer by its
    // declaration in `validate`.
    use crate::validate::{
        ADD, DELAY, INCREMENT_BOUNDS, LAG_AMOUNTS, MAX_STAGES, MOVES, PERIOD, PERIODS,
    };
    let control_bounds = [&INCREMENT_BOUNDS, &DELAY, &PERIODS, &PERIOD, &MOVES, &ADD];
    let mut objects: Vec<&mut Value> = Vec::new();
    for (name, s) in schemas.iter_mut() {
        match name.as_str() {
            "TimeControl" => {
                if let Some(variants) = s["oneOf"].as_array_mut() {
                    objects.extend(variants.iter_mut());
                }
            }
            "Stage" | "LagCompensation" => objects.push(s),
            _ => {}
        }
    }
    for o in objects {
        let Some(props) = o["properties"].as_object_mut() else {
            continue;
        };
        for (field, p) in props.iter_mut() {
            for b in control_bounds.iter().copied().chain(LAG_AMOUNTS.iter()) {
                if b.field == field {
                    bound(p, b);
                }
            }
            if field == "stages" {
                p["minItems"] = json!(1);
                p["maxItems"] = json!(MAX_STAGES);
            }
        }
    }
}

/// `/health` and `/ready`: `{"status"}`, plus `error` when not ready.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct ProbeBody {
    /// `ok`, `ready` or `not_ready`.
    status: String,
    /// A short public reason (`redis unreachable`), when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The routes of the document, by path and method, each with one
/// representative [`Route`] (whose [`Route::can_fail_with`] says which
/// errors it answers).
fn operations() -> Vec<(&'static str, &'static str, Route)> {
    let id = || "00000000-0000-4000-8000-000000000000".to_string();
    let mut ops = vec![
        ("/v1/sessions", "post", Route::Create),
        ("/v1/sessions/{id}", "get", Route::Get(id())),
        ("/v1/sessions/{id}", "delete", Route::Delete(id())),
    ];
    for a in [
        SessionAction::Start,
        SessionAction::Switch,
        SessionAction::Pause,
        SessionAction::Resume,
        SessionAction::Complete,
        SessionAction::Cancel,
    ] {
        let path = match a {
            SessionAction::Start => "/v1/sessions/{id}/start",
            SessionAction::Switch => "/v1/sessions/{id}/switch",
            SessionAction::Pause => "/v1/sessions/{id}/pause",
            SessionAction::Resume => "/v1/sessions/{id}/resume",
            SessionAction::Complete => "/v1/sessions/{id}/complete",
            SessionAction::Cancel => "/v1/sessions/{id}/cancel",
        };
        ops.push((path, "post", Route::Action(id(), a)));
    }
    ops.extend([
        (
            "/v1/sessions/{id}/devices",
            "post",
            Route::RegisterDevice(id()),
        ),
        (
            "/v1/sessions/{id}/devices/{token}",
            "delete",
            Route::RemoveDevice(id(), "t".into()),
        ),
        ("/v1/time", "get", Route::Time),
        ("/v1/openapi.json", "get", Route::OpenApi),
        ("/health", "get", Route::Health),
        ("/ready", "get", Route::Ready),
    ]);
    ops
}

/// The `operationId` of `route`'s operation: the name generated clients
/// (`sdk/js`) give it.
fn operation_id(route: &Route) -> &'static str {
    match route {
        Route::Create => "createSession",
        Route::Get(_) => "getSession",
        Route::Delete(_) => "deleteSession",
        Route::Action(_, a) => match a {
            SessionAction::Start => "startSession",
            SessionAction::Switch => "switchTurn",
            SessionAction::Pause => "pauseSession",
            SessionAction::Resume => "resumeSession",
            SessionAction::Complete => "completeSession",
            SessionAction::Cancel => "cancelSession",
        },
        Route::RegisterDevice(_) => "registerDevice",
        Route::RemoveDevice(..) => "removeDevice",
        Route::Time => "getTime",
        Route::OpenApi => "getOpenApi",
        Route::Health => "getHealth",
        Route::Ready => "getReady",
        Route::Preflight => unreachable!("not an operation of the document"),
    }
}

/// The error responses of `route`: every status its errors map to, each
/// with the codes it carries, derived from [`ApiError::every_kind`],
/// [`Route::can_fail_with`], [`ApiError::status`] and [`ApiError::code`].
pub fn error_statuses(route: &Route) -> BTreeMap<u16, Vec<&'static str>> {
    let mut out: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for e in ApiError::every_kind() {
        if route.can_fail_with(&e) {
            let codes = out.entry(e.status()).or_default();
            if !codes.contains(&e.code()) {
                codes.push(e.code());
            }
        }
    }
    out
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    use crate::api::{if_match_pattern, IF_MATCH_MAX_DIGITS};
    use crate::keys::{idempotency_key_pattern, IDEMPOTENCY_KEY_MAX_LEN};
    use crate::validate::UUID_PATTERN;
    // Request bodies as the server reads them, responses as it writes them
    // (a field it always writes, `null` or not, is required there).
    let mut read = SchemaSettings::openapi3()
        .for_deserialize()
        .into_generator();
    let create = json!(read.subschema_for::<CreateSessionBody>());
    let switch_body = json!(read.subschema_for::<SwitchBody>());
    let device_body = json!(read.subschema_for::<RegisterDeviceBody>());
    let mut write = SchemaSettings::openapi3().for_serialize().into_generator();
    let state = json!(write.subschema_for::<SyncState>());
    let switch = json!(write.subschema_for::<SwitchResponse<'static>>());
    let time = json!(write.subschema_for::<TimeResponse>());
    let device = json!(write.subschema_for::<crate::devices::DeviceResponse>());
    let error = json!(write.subschema_for::<ErrorResponse>());
    let probe = json!(write.subschema_for::<ProbeBody>());
    let mut schemas: serde_json::Map<String, Value> =
        write.take_definitions(true).into_iter().collect();
    for (name, schema) in read.take_definitions(true) {
        // A type both read and written (`SyncMode`, `Metadata`, …) has one
        // schema, whichever the direction.
        if let Some(other) = schemas.get(&name) {
            assert_eq!(
                other, &schema,
                "{name} differs between requests and responses"
            );
        }
        schemas.insert(name, schema);
    }
    constrain(&mut schemas);

    let id = json!({"name": "id", "in": "path", "required": true,
        "schema": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}});
    let if_match = json!({"name": "If-Match", "in": "header", "required": false,
        "description": format!("Expected version (`3`, `\"3\"` or `W/\"3\"`, at most \
            {IF_MATCH_MAX_DIGITS} digits; empty is none); 409 CONFLICT on mismatch"),
        "schema": {"type": "string", "pattern": if_match_pattern()}});
    let idem = json!({"name": "Idempotency-Key", "in": "header", "required": false,
        "description": format!("1 to {IDEMPOTENCY_KEY_MAX_LEN} visible ASCII characters (empty is \
            none). A retry with the same key gets the first response (Idempotent-Replayed: true)"),
        "schema": {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX_LEN,
            "pattern": idempotency_key_pattern()}});
    let token = json!({"name": "token", "in": "path", "required": true,
        "description": "The push token, percent-encoded",
        "schema": {"type": "string", "minLength": 1, "maxLength": crate::devices::MAX_TOKEN_LEN,
            "pattern": crate::devices::token_pattern()}});
    let state_ok = |desc: &str| json!({"description": desc, "content": content(data(&state))});

    let mut paths = serde_json::Map::new();
    for (path, method, route) in operations() {
        let (summary, parameters, body, ok_status, ok): (
            &str,
            Vec<&Value>,
            Option<Value>,
            u16,
            Value,
        ) = match &route {
            Route::Create => (
                "Create a session",
                vec![&idem],
                Some(json!({"required": true, "content": content(create.clone())})),
                201,
                state_ok("Created (pending, version 1)"),
            ),
            Route::Get(_) => (
                "Read a session",
                vec![&id],
                None,
                200,
                state_ok("The session"),
            ),
            Route::Delete(_) => (
                "Delete a session",
                vec![&id, &idem],
                None,
                204,
                json!({"description": "Deleted (also when absent)"}),
            ),
            Route::Action(_, SessionAction::Switch) => (
                "End the running turn and pass it on",
                vec![&id, &if_match, &idem],
                Some(json!({"required": false, "content": content(switch_body.clone())})),
                200,
                json!({"description": "The new turn", "content": content(data(&switch))}),
            ),
            Route::Action(_, a) => (
                match a {
                    SessionAction::Start => "pending → running",
                    SessionAction::Pause => "running → paused, charging the running turn",
                    SessionAction::Resume => "paused → running",
                    SessionAction::Complete => "→ completed, charging the running turn",
                    _ => "→ cancelled",
                },
                vec![&id, &if_match, &idem],
                None,
                200,
                state_ok("The session"),
            ),
            Route::RegisterDevice(_) => (
                "Register (or refresh) a participant's push device",
                vec![&id],
                Some(json!({"required": true, "content": content(device_body.clone())})),
                201,
                json!({"description": "Registered", "content": content(data(&device))}),
            ),
            Route::RemoveDevice(..) => (
                "Remove a push device",
                vec![&id, &token],
                None,
                204,
                json!({"description": "Removed (also when it was not registered)"}),
            ),
            Route::Time => (
                "Server (Redis) time",
                vec![],
                None,
                200,
                json!({"description": "Epoch ms", "content": content(time.clone())}),
            ),
            Route::OpenApi => (
                "This document",
                vec![],
                None,
                200,
                json!({"description": "OpenAPI 3.0", "content": content(json!({"type": "object"}))}),
            ),
            Route::Health => (
                "Liveness",
                vec![],
                None,
                200,
                json!({"description": "{\"status\":\"ok\"}", "content": content(probe.clone())}),
            ),
            Route::Ready => (
                "Redis reachable",
                vec![],
                None,
                200,
                json!({"description": "{\"status\":\"ready\"}", "content": content(probe.clone())}),
            ),
            Route::Preflight => unreachable!("not an operation of the document"),
        };
        let mut responses = serde_json::Map::new();
        responses.insert(ok_status.to_string(), ok);
        if matches!(route, Route::RegisterDevice(_)) {
            responses.insert(
                "200".into(),
                json!({"description": "Registered again: its expiry refreshed",
                    "content": content(data(&device))}),
            );
        }
        for (status, codes) in error_statuses(&route) {
            // `x-error-codes`: the same codes, machine-readable (an OpenAPI 3.0
            // extension), for generated clients.
            responses.insert(
                status.to_string(),
                json!({"description": codes.join(", "), "x-error-codes": codes,
                    "content": content(error.clone())}),
            );
        }
        if route == Route::Ready {
            // Not the error scheme: the probe's own body.
            responses.insert(
                "503".into(),
                json!({"description": "{\"status\":\"not_ready\",\"error\":…}",
                    "content": content(probe.clone())}),
            );
        }
        let mut op = json!({"operationId": operation_id(&route), "summary": summary,
            "parameters": parameters, "responses": responses});
        if let Some(body) = body {
            op["requestBody"] = body;
        }
        // Only the session routes need a token.
        if route.session_id().is_none() && route != Route::Create {
            op["security"] = json!([]);
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[method] = op;
    }

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
    use std::collections::BTreeSet;

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
        // Responses are described as written: a field always written, `null`
        // or not, is required; request bodies as read (optional fields).
        assert!(required.contains(&"active_participant_id") && required.contains(&"expires_at"));
        let create_required = schemas["CreateSessionBody"]["required"].as_array().unwrap();
        assert!(!create_required.contains(&json!("time_per_cycle_ms")));
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

    /// Each operation lists its success and exactly the statuses its
    /// errors map to, no `default`; only the session routes need a token.
    #[test]
    fn every_status_is_derived_from_the_errors_and_none_is_default() {
        let doc = document();
        let mut count = 0;
        for (path, method, route) in operations() {
            let op = &doc["paths"][path][method];
            let listed: BTreeSet<String> = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path}"))
                .keys()
                .cloned()
                .collect();
            let errors: BTreeSet<String> =
                error_statuses(&route).keys().map(u16::to_string).collect();
            assert!(!listed.contains("default"), "{method} {path}");
            let successes: BTreeSet<String> = listed
                .iter()
                .filter(|s| s.starts_with('2'))
                .cloned()
                .collect();
            // One success, but a registration is new (201) or refreshed (200).
            let n = if matches!(route, Route::RegisterDevice(_)) {
                2
            } else {
                1
            };
            assert_eq!(successes.len(), n, "{method} {path}");
            let mut want = errors.clone();
            want.extend(successes);
            if route == Route::Ready {
                want.insert("503".into());
            }
            assert_eq!(listed, want, "{method} {path}");
            let open = route.session_id().is_none() && route != Route::Create;
            assert_eq!(op["security"] == json!([]), open, "{method} {path}");
            count += 1;
        }
        assert_eq!(count, 15);
        // Every kind of error some operation answers is in the document.
        for e in ApiError::every_kind() {
            let answered = operations_answering(&e);
            let is_route_level = matches!(e, ApiError::NotFound | ApiError::MethodNotAllowed(_));
            assert_eq!(answered, !is_route_level, "{}", e.code());
        }
        let statuses = |p: &str, m: &str| -> Vec<String> {
            doc["paths"][p][m]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(
            statuses("/v1/sessions", "post"),
            ["201", "400", "401", "403", "409", "413", "422", "429", "500", "503"]
        );
        assert_eq!(statuses("/health", "get"), ["200"]);
        assert_eq!(statuses("/v1/time", "get"), ["200", "429", "500", "503"]);
        let create_409 = &doc["paths"]["/v1/sessions"]["post"]["responses"]["409"]["description"];
        assert_eq!(create_409, "SESSION_EXISTS, SESSION_DELETED");
    }

    /// Each operation has its own `operationId`, and each error response
    /// lists its codes in `x-error-codes` (the probe body of `/ready`'s 503
    /// carries none).
    #[test]
    fn operations_have_ids_and_error_responses_list_their_codes() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for (path, method, route) in operations() {
            let op = &doc["paths"][path][method];
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id), "{id} is used twice");
            let errors = error_statuses(&route);
            for (status, response) in op["responses"].as_object().unwrap() {
                let status: u16 = status.parse().unwrap();
                match errors.get(&status) {
                    Some(codes) => assert_eq!(
                        response["x-error-codes"],
                        json!(codes),
                        "{method} {path} {status}"
                    ),
                    None => assert!(
                        response.get("x-error-codes").is_none(),
                        "{method} {path} {status}"
                    ),
                }
            }
        }
        assert_eq!(
            doc["paths"]["/v1/sessions/{id}/switch"]["post"]["operationId"],
            "switchTurn"
        );
        assert_eq!(
            doc["paths"]["/v1/sessions"]["post"]["responses"]["409"]["x-error-codes"],
            json!(["SESSION_EXISTS", "SESSION_DELETED"])
        );
    }

    /// The REST `SyncState` and the one inside the WebSocket's
    /// `STATE_UPDATE` have the same fields, each required in both or in
    /// neither (clients generated from both share one type).
    #[test]
    fn rest_and_websocket_states_have_the_same_fields() {
        let doc = document();
        let rest = &doc["components"]["schemas"]["SyncState"];
        let ws = crate::ws::json_schemas();
        let ws = &ws["server_to_client"]["oneOf"][1]["properties"]["state"];
        let names = |s: &Value, key: &str| -> BTreeSet<String> {
            match &s[key] {
                Value::Object(m) => m.keys().cloned().collect(),
                Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
                _ => panic!("{key}"),
            }
        };
        assert_eq!(names(rest, "properties"), names(ws, "properties"));
        assert_eq!(names(rest, "required"), names(ws, "required"));
    }

    /// What the server writes has every field the document's response
    /// schemas require (they are derived for serialization).
    #[test]
    fn responses_have_every_required_field() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let check = |name: &str, written: &Value| {
            for field in schemas[name]["required"].as_array().unwrap() {
                let field = field.as_str().unwrap();
                assert!(
                    written.get(field).is_some(),
                    "{name} written without {field}"
                );
            }
        };
        let st: SyncState = serde_json::from_value(json!({
            "session_id": "00000000-0000-4000-8000-000000000001",
            "sync_mode": "per_participant", "status": "pending", "version": 1,
            "participants": [{"participant_id": "00000000-0000-4000-8000-000000000002",
                "participant_index": 0, "total_time_ms": 60000, "time_used_ms": 0,
                "time_remaining_ms": 60000, "cycle_count": 0, "is_active": false,
                "has_expired": false}],
            "active_participant_id": null, "total_time_ms": 60000,
            "time_per_cycle_ms": null, "cycle_started_at": null, "session_started_at": null,
            "session_completed_at": null, "increment_ms": 0,
            "created_at": "2026-12-01T19:10:07.707Z", "updated_at": "2026-12-01T19:10:07.707Z",
            "server_time_ms": 1796152207707_i64, "expires_at": null}))
        .expect("a pending state");
        let state = serde_json::to_value(&st).unwrap();
        check("SyncState", &state);
        check("Participant", &state["participants"][0]);
        let switch = serde_json::to_value(SwitchResponse::new(&st, None)).unwrap();
        check("SwitchResponse", &switch);
        check(
            "TimeResponse",
            &serde_json::to_value(TimeResponse::new(1)).unwrap(),
        );
        for e in ApiError::every_kind() {
            let body: Value = serde_json::from_str(&e.body()).unwrap();
            check("ErrorResponse", &body);
            check("ErrorObject", &body["error"]);
        }
    }

    /// `docs/openapi.json` as committed.
    const DOCUMENT_FILE: &str = include_str!("../../docs/openapi.json");

    /// The committed `docs/openapi.json` is what [`document`] builds (the
    /// SDK's types are generated from it). `SK_WRITE_SCHEMAS=1` rewrites the
    /// file instead of comparing, as for `docs/ws-messages.schema.json`.
    #[test]
    fn document_file_is_up_to_date() {
        let generated = document();
        if std::env::var_os("SK_WRITE_SCHEMAS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
            let text =
                serde_json::to_string_pretty(&generated).expect("the document serializes") + "\n";
            std::fs::write(path, text).expect("write docs/openapi.json");
            return;
        }
        let committed: Value =
            serde_json::from_str(DOCUMENT_FILE).expect("docs/openapi.json is JSON");
        assert!(
            committed == generated,
            "docs/openapi.json is out of date with core::openapi; regenerate it with\n    \
             SK_WRITE_SCHEMAS=1 cargo test -p synckairos-core\nand commit the result"
        );
    }

    fn operations_answering(e: &ApiError) -> bool {
        operations().iter().any(|(_, _, r)| r.can_fail_with(e))
    }

    fn matcher(pattern: &str) -> regex_automata::meta::Regex {
        regex_automata::meta::Regex::new(pattern).expect("a valid pattern")
    }

    proptest::proptest! {
        /// The document's header and id patterns accept exactly what the
        /// server's parsers accept.
        #[test]
        fn patterns_agree_with_the_parsers(
            s in "[0-9a-fA-F\"W/ +gx-]{0,40}",
            n in 0u64..u64::MAX,
            digits in "[0-9]{1,25}",
        ) {
            use crate::api::{if_match_pattern, parse_if_match};
            use crate::keys::{idempotency_key_pattern, valid_idempotency_key};
            use crate::validate::{parse_uuid, UUID_PATTERN};
            let if_match = matcher(&if_match_pattern());
            for h in [s.clone(), digits.clone(), format!("\"{digits}\""), format!("W/\"{n}\""), n.to_string()] {
                proptest::prop_assert_eq!(
                    if_match.is_match(&h),
                    h.is_empty() || parse_if_match(&h).is_some(),
                    "If-Match {:?}", h
                );
            }
            let uuid = matcher(UUID_PATTERN);
            let id = format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", n >> 32, n & 0xffff, n & 0xfff, (n >> 12) & 0xfff, n >> 16);
            for v in [s.clone(), id.clone(), id.to_uppercase()] {
                proptest::prop_assert_eq!(uuid.is_match(&v), parse_uuid(&v).is_some(), "UUID {:?}", v);
            }
            let token = matcher(&crate::devices::token_pattern());
            let long_token = "t".repeat(4090 + (n % 10) as usize);
            for t in [s.clone(), digits.clone(), long_token, format!("{digits}:a_b-C"), format!("{digits}\u{e9}")] {
                proptest::prop_assert_eq!(
                    token.is_match(&t),
                    crate::devices::valid_token(&t),
                    "token {:?}", t
                );
            }
            let key = matcher(&idempotency_key_pattern());
            let long = "k".repeat(200 + (n % 100) as usize);
            for k in [s, long, format!("{digits}\u{e9}")] {
                proptest::prop_assert_eq!(
                    key.is_match(&k),
                    k.is_empty() || valid_idempotency_key(&k),
                    "Idempotency-Key {:?}", k
                );
            }
        }
    }
}
