/**
 * SyncKairos for JavaScript: browsers, Node ≥ 22 and React Native, with no
 * runtime dependencies (the global `fetch` and `WebSocket`).
 *
 * - {@link SyncKairos}: the REST API, every route typed, with retries and
 *   idempotency keys.
 * - {@link SessionWatcher}: live state over the WebSocket, with reconnects,
 *   resync, several sessions per socket, heartbeats and token refresh, and
 *   the server-clock estimate.
 * - {@link clocks}, {@link remainingMs}: each participant's clock at any
 *   instant, for every sync mode and time control (delays, byo-yomi periods,
 *   Canadian blocks, stages, hourglass); {@link tick} redraws them.
 * - {@link fallAfter}, {@link live}, {@link onMove}, {@link onStop}: the
 *   arithmetic of the time controls on one participant's clock.
 */
export * from "./generated/api.js";
export * from "./generated/ws.js";
export { SyncKairos, newIdempotencyKey, retryAfterMs } from "./rest.js";
export type { ApiResponse, ClientOptions, CommandOptions, ReadOptions, RetryOptions, SwitchOptions } from "./rest.js";
export { SyncKairosError, isSyncKairosError } from "./errors.js";
export type { RouteErrorCode, TransportErrorCode } from "./errors.js";
export { SessionWatcher, toWsUrl } from "./watcher.js";
export type {
  ConnectionInfo,
  ConnectionState,
  WatcherError,
  WatcherEvents,
  WatcherOptions,
  WebSocketConstructor,
  WebSocketLike,
} from "./watcher.js";
export { ServerClock, estimate, sampleOf } from "./time.js";
export type { LocalClock, TimeEstimate, TimeSample } from "./time.js";
export {
  activeIndex,
  bankSharers,
  clockOf,
  clocks,
  controlClockOf,
  controlOf,
  deadlineMs,
  hasBank,
  parseTimestamp,
  remainingMs,
} from "./clock.js";
export type { Clock } from "./clock.js";
export { creditLag, fallAfter, incrementAndDelay, live, onMove, onStop, startClock } from "./control.js";
export type { ControlClock, ControlLive, MoveEvents } from "./control.js";
export { tick, formatClock } from "./tick.js";
export type { TickOptions } from "./tick.js";
export { backoffDelay } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { tokenExpiry } from "./token.js";
export type { TokenRequestReason, TokenSource } from "./token.js";
