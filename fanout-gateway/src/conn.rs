//! One WebSocket client: its reader (client messages), its writer (the
//! outbox, heartbeats, shutdown), and the sessions it watches.

use crate::outbox::{Out, Outbox, Rendered, Snapshot};
use crate::Shared;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use synckairos_core::api::{authorize, ApiError, Caller, Route};
use synckairos_core::validate::parse_uuid;
use synckairos_core::ws::{ClientIn, ClientOut, CloseCode};
use tokio::time::Instant;

/// Serves one upgraded socket for the URL's session `sid`.
pub async fn serve(
    shared: Arc<Shared>,
    socket: WebSocket,
    sid: String,
    mut caller: Option<Caller>,
    id: u64,
) {
    let m = &shared.metrics;
    m.connections.fetch_add(1, Relaxed);
    let outbox = Arc::new(Outbox::new(shared.config.max_control_queue));
    let alive = Arc::new(AtomicBool::new(true));
    // Sessions the writer dropped because they were deleted: the reader
    // forgets them before serving the next message.
    let deleted: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write(
        Arc::clone(&shared),
        sink,
        Arc::clone(&outbox),
        Arc::clone(&alive),
        sid.clone(),
        (id, Arc::clone(&deleted)),
    ));

    let mut watching: HashSet<String> = HashSet::new();
    outbox.push(Out::Text(
        ClientOut::Connected {
            session_id: sid.clone(),
            timestamp: shared.clock.now_ms(),
        }
        .to_json(),
    ));
    shared.hub.watch(&sid, id, Arc::clone(&outbox)).await;
    watching.insert(sid.clone());
    send_state(&shared, &outbox, &sid, false).await;

    let mut writer = writer;
    let mut expires = expiry(&shared, &caller);
    let mut rate = Rate::new(shared.config.messages_per_second);
    // Set once a close is queued: the writer ends the connection, and
    // nothing the client sends meanwhile is served.
    let mut closing = false;
    loop {
        // The writer ends the connection too (heartbeat missed, too slow,
        // shutdown): then stop reading, whatever the client does.
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = &mut writer => break,
            _ = until(expires) => {
                outbox.close(CloseCode::TokenExpired);
                (expires, closing) = (None, true);
                continue;
            }
        };
        let Some(frame) = frame else { break };
        if closing {
            continue;
        }
        if !rate.count(Instant::now()) {
            outbox.close(CloseCode::TooManyMessages);
            closing = true;
            continue;
        }
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Pong(_)) => {
                alive.store(true, Relaxed);
                continue;
            }
            Ok(Message::Ping(_)) => continue, // answered by the protocol layer
            Ok(Message::Binary(_)) => {
                invalid(&outbox, "Binary frames are not supported");
                continue;
            }
            Ok(Message::Close(_)) => break,
            Err(e) => {
                let too_big = e.to_string().to_ascii_lowercase().contains("too long")
                    || e.to_string().to_ascii_lowercase().contains("too big");
                if too_big {
                    outbox.close(CloseCode::TooBig);
                }
                tracing::debug!(error = %e, "websocket read ended");
                break;
            }
        };
        alive.store(true, Relaxed);
        for gone in std::mem::take(&mut *deleted.lock().expect("deleted lock")) {
            watching.remove(&gone);
        }
        let t1 = shared.clock.now_ms();
        match ClientIn::parse(text.as_str()) {
            Err(why) => {
                tracing::info!(reason = %why, "invalid client message");
                invalid(&outbox, &why);
            }
            Ok(ClientIn::Ping) => {
                outbox.push(Out::Text(ClientOut::Pong { timestamp: t1 }.to_json()));
            }
            Ok(ClientIn::TimeSync { t0 }) => {
                outbox.push(Out::TimeSync { t0, t1 });
            }
            Ok(ClientIn::Reconnect { session_id }) => {
                let target = session_id.as_deref().map_or(Some(sid.clone()), parse_uuid);
                match target {
                    Some(t) if watching.contains(&t) => {
                        send_state(&shared, &outbox, &t, true).await
                    }
                    _ => error(
                        &outbox,
                        "SESSION_NOT_FOUND",
                        "Not subscribed to that session",
                    ),
                }
            }
            Ok(ClientIn::Subscribe { session_id }) => {
                let Some(other) = parse_uuid(&session_id) else {
                    error(&outbox, "VALIDATION_ERROR", "Invalid sessionId format");
                    continue;
                };
                if expires.is_some_and(|e| e <= Instant::now()) {
                    outbox.close(CloseCode::TokenExpired);
                    closing = true;
                    continue;
                }
                if let Some(c) = &caller {
                    if authorize(c, &Route::Get(other.clone()), None).is_err() {
                        error(&outbox, "FORBIDDEN", "Token is not valid for this session");
                        continue;
                    }
                }
                if watching.contains(&other) {
                    send_state(&shared, &outbox, &other, true).await;
                    continue;
                }
                if watching.len() >= shared.config.max_sessions_per_connection {
                    error(
                        &outbox,
                        "LIMIT_EXCEEDED",
                        "Too many sessions on one connection",
                    );
                    continue;
                }
                shared.hub.watch(&other, id, Arc::clone(&outbox)).await;
                watching.insert(other.clone());
                send_state(&shared, &outbox, &other, true).await;
            }
            Ok(ClientIn::Auth { token }) => {
                let Some(_) = &caller else {
                    // Auth is disabled: nothing to extend.
                    let ok = ClientOut::AuthOk {
                        timestamp: t1,
                        exp: None,
                    };
                    outbox.push(Out::Text(ok.to_json()));
                    continue;
                };
                let now_s = (crate::clock::local_ms() / 1000).max(0) as u64;
                match shared.config.api.auth.verify(&token, now_s) {
                    Err(e) => {
                        let why = match e {
                            ApiError::Unauthorized(m) => m,
                            _ => "Invalid token",
                        };
                        error(&outbox, "UNAUTHORIZED", why);
                    }
                    Ok(fresh) => {
                        let allowed = watching
                            .iter()
                            .all(|s| authorize(&fresh, &Route::Get(s.clone()), None).is_ok());
                        if !allowed {
                            outbox.close(CloseCode::Forbidden);
                            closing = true;
                            continue;
                        }
                        let ok = ClientOut::AuthOk {
                            timestamp: t1,
                            exp: fresh.exp,
                        };
                        caller = Some(fresh);
                        expires = expiry(&shared, &caller);
                        outbox.push(Out::Text(ok.to_json()));
                    }
                }
            }
            Ok(ClientIn::Unsubscribe { session_id }) => {
                if let Some(other) = parse_uuid(&session_id) {
                    if watching.remove(&other) {
                        shared.hub.unwatch(&other, id);
                    }
                }
            }
        }
    }
    for s in &watching {
        shared.hub.unwatch(s, id);
    }
    outbox.stop();
    if !writer.is_finished() {
        let _ = writer.await;
    }
    m.connections.fetch_sub(1, Relaxed);
}

/// When the caller's token stops being valid (`exp` + leeway), if it ever does.
fn expiry(shared: &Shared, caller: &Option<Caller>) -> Option<Instant> {
    let exp_s = caller.as_ref()?.exp?;
    let leeway_s = shared.config.api.auth.leeway_s();
    let at_ms =
        i64::try_from(exp_s.saturating_add(leeway_s).saturating_mul(1000)).unwrap_or(i64::MAX);
    let left_ms = at_ms.saturating_sub(crate::clock::local_ms()).max(0);
    Some(Instant::now() + Duration::from_millis(left_ms as u64))
}

/// Sleeps until `at`, or forever.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A socket's inbound messages per one-second window.
struct Rate {
    limit: u64,
    window: Instant,
    seen: u64,
}

impl Rate {
    fn new(limit: u64) -> Rate {
        Rate {
            limit,
            window: Instant::now(),
            seen: 0,
        }
    }

    /// Counts a message at `now`; `false` when it is over the limit.
    fn count(&mut self, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            (self.window, self.seen) = (now, 0);
        }
        self.seen += 1;
        self.seen <= self.limit
    }
}

fn invalid(outbox: &Outbox, why: &str) {
    error(outbox, "INVALID_MESSAGE", why);
}

fn error(outbox: &Outbox, code: &str, message: &str) {
    outbox.push(Out::Text(
        ClientOut::Error {
            code: code.into(),
            message: message.into(),
        }
        .to_json(),
    ));
}

/// Queues `sid`'s state as `STATE_SYNC`: the hub's latest snapshot when it
/// has one (a reconnect storm or a client looping RECONNECT costs no Redis
/// read), else one read; a missing session is an `ERROR SESSION_NOT_FOUND`
/// when `report_missing`.
async fn send_state(shared: &Shared, outbox: &Outbox, sid: &str, report_missing: bool) {
    if let Some(state) = shared.hub.latest(sid) {
        shared.metrics.syncs_from_memory.fetch_add(1, Relaxed);
        outbox.push_snapshot(sid, Snapshot::State { state, sync: true });
        return;
    }
    match shared.engine.get(sid).await {
        Ok(Some(state)) => {
            let state = Rendered::new(&state);
            shared.hub.seen(sid, &state);
            outbox.push_snapshot(sid, Snapshot::State { state, sync: true });
        }
        Ok(None) if report_missing => error(
            outbox,
            "SESSION_NOT_FOUND",
            &format!("Session {sid} not found"),
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, session_id = sid, "snapshot read failed");
            error(
                outbox,
                "SERVICE_UNAVAILABLE",
                "Could not read the session state",
            );
        }
    }
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

async fn write(
    shared: Arc<Shared>,
    mut sink: Sink,
    outbox: Arc<Outbox>,
    alive: Arc<AtomicBool>,
    url_sid: String,
    (conn_id, deleted): (u64, Arc<std::sync::Mutex<Vec<String>>>),
) {
    let m = &shared.metrics;
    let mut ping = tokio::time::interval(shared.config.ping_interval);
    ping.tick().await;
    let mut stop = shared.stop.clone();
    // The newest version sent per session: an older snapshot never follows.
    let mut sent: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = outbox.ready() => {}
            _ = ping.tick() => {
                if !alive.swap(false, Relaxed) {
                    m.dropped_heartbeat.fetch_add(1, Relaxed);
                    outbox.close(CloseCode::HeartbeatTimeout);
                } else if send(&shared, &mut sink, Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            _ = stop.changed() => {
                outbox.close(CloseCode::Restart);
            }
        }
        while let Some(out) = outbox.take() {
            let msg = match out {
                Out::Text(t) => t,
                Out::TimeSync { t0, t1 } => ClientOut::TimeSync {
                    t0,
                    t1,
                    t2: shared.clock.now_ms(),
                }
                .to_json(),
                Out::Snapshot(sid, snap) => {
                    // Never an older state after a newer one; the same
                    // version again only when asked for (a sync).
                    let v = snap.version();
                    let asked = matches!(snap, Snapshot::State { sync: true, .. });
                    if sent.get(&sid).is_some_and(|&s| s > v || (s == v && !asked)) {
                        continue;
                    }
                    sent.insert(sid.clone(), v);
                    let now = shared.clock.now_ms();
                    match snap {
                        Snapshot::State { state, sync } => {
                            // Latency of pushed changes only: a sync's state
                            // may be any age.
                            if !sync {
                                m.fanout_latency
                                    .observe((now - state.server_time_ms) as f64);
                            }
                            state.message(&sid, now, sync)
                        }
                        Snapshot::Deleted { .. } => {
                            let text = ClientOut::SessionDeleted {
                                session_id: sid.clone(),
                                timestamp: now,
                            }
                            .to_json();
                            if sid == url_sid {
                                if send(&shared, &mut sink, Message::Text(text.into()))
                                    .await
                                    .is_ok()
                                {
                                    close(&mut sink, CloseCode::SessionDeleted).await;
                                }
                                return;
                            }
                            // A session watched by SUBSCRIBE: told, and
                            // unsubscribed, so that a re-created session of
                            // that id needs a fresh SUBSCRIBE and starts
                            // its versions afresh on this socket.
                            shared.hub.unwatch(&sid, conn_id);
                            sent.remove(&sid);
                            deleted.lock().expect("deleted lock").push(sid.clone());
                            text
                        }
                    }
                }
                Out::Close(code) => {
                    if code == CloseCode::TooSlow {
                        m.dropped_slow.fetch_add(1, Relaxed);
                    }
                    close(&mut sink, code).await;
                    return;
                }
                Out::Stop => return,
            };
            if send(&shared, &mut sink, Message::Text(msg.into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Sends one frame within the send timeout; a client that cannot take it in
/// time is closed as too slow.
async fn send(shared: &Shared, sink: &mut Sink, msg: Message) -> Result<(), ()> {
    match tokio::time::timeout(shared.config.send_timeout, sink.send(msg)).await {
        Ok(Ok(())) => {
            shared.metrics.messages_sent.fetch_add(1, Relaxed);
            Ok(())
        }
        Ok(Err(_)) => Err(()),
        Err(_) => {
            shared.metrics.dropped_slow.fetch_add(1, Relaxed);
            // Best effort: the socket is not draining, so this may not arrive.
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(100),
                close(sink, CloseCode::TooSlow),
            )
            .await;
            Err(())
        }
    }
}

/// Closes with `code` and its reason ([`CloseCode::reason`]; 1008, which
/// has none of its own, is sent before the connection is served, in
/// `lib.rs`).
async fn close(sink: &mut Sink, code: CloseCode) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from(code.reason().unwrap_or_default()),
        })))
        .await;
    let _ = sink.close().await;
}
