/** What a call can fail with. */
import type { ErrorCode } from "./generated/api.js";

/**
 * Codes of requests that reached no route: a base URL with a wrong path
 * prefix (`NOT_FOUND`), or a method the path does not take. No operation of
 * the document lists them, since every operation is a route that exists.
 */
export type RouteErrorCode = "NOT_FOUND" | "METHOD_NOT_ALLOWED";

/** Codes of failures that never reached an answer of the API. */
export type TransportErrorCode =
  /** No HTTP answer: the network failed or the server is down. */
  | "NETWORK_ERROR"
  /** No answer within the timeout. */
  | "TIMEOUT"
  /** An answer that is not the documented shape. */
  | "INVALID_RESPONSE"
  /** The caller aborted (its `AbortSignal`). */
  | "ABORTED";

/**
 * A refusal of the API (`status` and the stable `code` of docs/API.md §3), or
 * a transport failure (`status` 0 and a {@link TransportErrorCode}).
 */
export class SyncKairosError extends Error {
  override readonly name = "SyncKairosError";
  /** HTTP status; 0 when there was no answer. */
  readonly status: number;
  /** The stable code. */
  readonly code: ErrorCode | RouteErrorCode | TransportErrorCode;
  /** `details` of the error body: validation issues, or the versions of a `CONFLICT`. */
  readonly details: unknown;
  /** For `RATE_LIMIT_EXCEEDED`: when to try again (s). */
  readonly retryAfterSeconds: number | undefined;
  /** How many attempts were made, retries included. */
  readonly attempts: number;

  constructor(init: {
    status: number;
    code: ErrorCode | RouteErrorCode | TransportErrorCode;
    message: string;
    details?: unknown;
    retryAfterSeconds?: number | undefined;
    attempts?: number;
    cause?: unknown;
  }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.details = init.details;
    this.retryAfterSeconds = init.retryAfterSeconds;
    this.attempts = init.attempts ?? 1;
  }

  /** Whether the failure is a transport one (no answer of the API). */
  get isTransport(): boolean {
    return this.status === 0;
  }
}

/** Whether `e` is a {@link SyncKairosError}, optionally with one of `codes`. */
export function isSyncKairosError(
  e: unknown,
  ...codes: ReadonlyArray<ErrorCode | RouteErrorCode | TransportErrorCode>
): e is SyncKairosError {
  return e instanceof SyncKairosError && (codes.length === 0 || codes.includes(e.code));
}
