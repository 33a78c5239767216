/** Bearer tokens: a fixed string, or a provider that can mint a fresh one. */

/**
 * A token, or a function that returns one (sync or async). A provider is
 * called before each connection and request that needs a token, and again
 * when the server says the token expired; it may cache and refresh as it
 * likes (a backend call that mints a short-lived JWT, typically).
 */
export type TokenSource = string | ((reason: TokenRequestReason) => string | Promise<string>);

/** Why a token is asked for. */
export type TokenRequestReason =
  /** The first use. */
  | "initial"
  /** The server refused the last one as expired or invalid (REST 401, WebSocket 4001). */
  | "expired"
  /** The socket's token expires soon; the new one goes out in an `AUTH` message. */
  | "refresh";

/** The token of `source` for `reason`, or `undefined` without a source. */
export async function resolveToken(
  source: TokenSource | undefined,
  reason: TokenRequestReason,
): Promise<string | undefined> {
  if (source === undefined) return undefined;
  return typeof source === "string" ? source : await source(reason);
}

/** Whether a fresh token can be had (the source is a provider). */
export function canRefresh(source: TokenSource | undefined): boolean {
  return typeof source === "function";
}

/**
 * The `exp` claim of a JWT (epoch s), read without verifying it (the server
 * verifies); `undefined` when the token is not a JWT or has no `exp`.
 */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const b64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(b64 + "===".slice((b64.length + 3) % 4))) as unknown;
    if (typeof json === "object" && json !== null && "exp" in json) {
      const exp = (json as { exp: unknown }).exp;
      return typeof exp === "number" && Number.isFinite(exp) ? exp : undefined;
    }
  } catch {
    return undefined;
  }
  return undefined;
}
