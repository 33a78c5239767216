/**
 * The real local stack for the SDK's tests, started per test file as the
 * Rust end-to-end tests do it: a throw-away `redis-server` on a free port and
 * any number of native SyncKairos servers (the `fanout-gateway` binary with
 * REST and `/ws` on one port) over it, with JWT auth on. Nothing is mocked;
 * a missing binary fails loudly.
 *
 * Binaries: `SK_BIN_DIR`, else `$CARGO_TARGET_DIR/release`, else the
 * repository's `target/release` (`cargo build --release -p
 * synckairos-fanout-gateway` builds them; `scripts/sdk-test.sh` does).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer, Socket, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (this file is compiled to sdk/js/build/test/support/). */
export const REPO_ROOT = resolve(here, "../../../../..");

export function binDir(): string {
  const dir =
    process.env["SK_BIN_DIR"] ??
    join(process.env["CARGO_TARGET_DIR"] ?? join(REPO_ROOT, "target"), "release");
  const gateway = join(dir, "fanout-gateway");
  if (!existsSync(gateway)) {
    throw new Error(
      `${gateway} is missing: build it with \`cargo build --release --locked -p synckairos-fanout-gateway\` ` +
        "or point SK_BIN_DIR at the folder that holds it (scripts/sdk-test.sh does both)",
    );
  }
  return dir;
}

/** A TCP port of 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => ok(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` every 25 ms until it returns true, or fails after `timeoutMs`. */
export async function waitUntil(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** Sends `signal` to `child` (when there is one) and waits until it has exited. */
async function signalAndWait(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (child === undefined) return;
  child.kill(signal);
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((r) => child.once("exit", () => r()));
}

function logTail(path: string): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-30).join("\n");
  } catch {
    return "(no log)";
  }
}

/** A `redis-server` of its own, on a free port, keeping nothing on disk. */
export class Redis {
  child: ChildProcess | undefined;
  readonly port: number;
  readonly #dir: string;

  private constructor(port: number, dir: string) {
    this.port = port;
    this.#dir = dir;
  }

  static async start(): Promise<Redis> {
    const r = new Redis(await freePort(), mkdtempSync(join(tmpdir(), "sk-sdk-redis-")));
    await r.restart();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}/`;
  }

  /** (Re)starts the server on its port. */
  async restart(): Promise<void> {
    const log = join(this.#dir, "redis.log");
    const child = spawn(
      "redis-server",
      ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.#dir],
      { stdio: ["ignore", openSync(log, "a"), openSync(log, "a")] },
    );
    child.once("error", (e) => {
      throw new Error(`redis-server could not start (is it installed? scripts/test.sh installs it): ${e.message}`);
    });
    this.child = child;
    await waitUntil(`redis-server on ${this.port}\n${logTail(log)}`, () => portAnswers(this.port));
  }

  /** Stops it abruptly (SIGKILL). */
  async kill(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    await signalAndWait(c, "SIGKILL");
  }

  async close(): Promise<void> {
    await this.kill();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((ok) => {
    const s = new Socket();
    s.once("connect", () => {
      s.destroy();
      ok(true);
    });
    s.once("error", () => ok(false));
    s.connect(port, "127.0.0.1");
  });
}

/** A native SyncKairos server: REST + `/ws` + time sync + expiry on one port. */
export class Server {
  child: ChildProcess | undefined;
  readonly port: number;
  readonly metricsPort: number;
  readonly env: Record<string, string>;
  readonly #log: string;

  private constructor(port: number, metricsPort: number, env: Record<string, string>, log: string) {
    this.port = port;
    this.metricsPort = metricsPort;
    this.env = env;
    this.#log = log;
  }

  static async start(redis: Redis, secret: string, env: Record<string, string> = {}): Promise<Server> {
    const port = await freePort();
    const metricsPort = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "sk-sdk-server-"));
    const s = new Server(
      port,
      metricsPort,
      {
        REDIS_URL: redis.url,
        LISTEN: `127.0.0.1:${port}`,
        METRICS_LISTEN: `127.0.0.1:${metricsPort}`,
        REST_API: "on",
        AUTH_MODE: "jwt",
        JWT_SECRET: secret,
        // One address sends every request and opens every socket here.
        IP_RATE_LIMIT: "0",
        CONNECTIONS_PER_IP_PER_SECOND: "0",
        SHUTDOWN_GRACE_MS: "1000",
        RUST_LOG: "warn",
        ...env,
      },
      join(dir, "server.log"),
    );
    await s.restart();
    return s;
  }

  /** `http://127.0.0.1:<port>`: REST, and the WebSocket at `/ws`. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  /** (Re)starts the process on its port and waits for `/ready`. */
  async restart(): Promise<void> {
    const bin = join(binDir(), "fanout-gateway");
    const child = spawn(bin, [], {
      env: { PATH: process.env["PATH"] ?? "", ...this.env },
      stdio: ["ignore", openSync(this.#log, "a"), openSync(this.#log, "a")],
    });
    this.child = child;
    await waitUntil(`the server on ${this.port} to be ready\n${logTail(this.#log)}`, async () => {
      if (child.exitCode !== null) throw new Error(`the server exited (${child.exitCode}):\n${logTail(this.#log)}`);
      const r = await fetch(`${this.url}/ready`);
      return r.ok;
    }, 20_000);
  }

  /** SIGTERM: a graceful stop (WebSocket clients get 1012). */
  async stop(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    await signalAndWait(c, "SIGTERM");
  }

  /** SIGKILL: the process dies without a word. */
  async kill(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    await signalAndWait(c, "SIGKILL");
  }

  /** The server's log so far (for failure messages). */
  log(): string {
    return logTail(this.#log);
  }
}

/** Claims of a test token (docs/API.md §3, Auth). */
export interface Claims {
  sub?: string;
  role: "admin" | "host" | "participant" | "viewer";
  sid?: string;
  /** Lifetime from now (s; default 3600). Negative: already expired. */
  ttlSecs?: number;
}

/** An HS256 JWT signed with `secret`. */
export function mintToken(secret: string, claims: Claims): string {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString("base64url");
  const payload: Record<string, unknown> = {
    sub: claims.sub ?? "sdk-test",
    role: claims.role,
    iat: now,
    exp: now + (claims.ttlSecs ?? 3600),
  };
  if (claims.sid !== undefined) payload["sid"] = claims.sid;
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(payload)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/** Redis, `servers` native servers over it, and a JWT secret. */
export class Stack {
  readonly redis: Redis;
  readonly servers: Server[];
  readonly secret: string;

  private constructor(redis: Redis, servers: Server[], secret: string) {
    this.redis = redis;
    this.servers = servers;
    this.secret = secret;
  }

  static async start(options: { servers?: number; env?: Record<string, string> } = {}): Promise<Stack> {
    const secret = randomUUID() + randomUUID();
    const redis = await Redis.start();
    const servers: Server[] = [];
    try {
      for (let i = 0; i < (options.servers ?? 1); i++) servers.push(await Server.start(redis, secret, options.env));
    } catch (e) {
      for (const s of servers) await s.kill();
      await redis.close();
      throw e;
    }
    return new Stack(redis, servers, secret);
  }

  /** The first server. */
  get server(): Server {
    return this.servers[0] as Server;
  }

  /** A token signed with this stack's secret. */
  token(claims: Claims = { role: "admin" }): string {
    return mintToken(this.secret, claims);
  }

  async close(): Promise<void> {
    for (const s of this.servers) await s.kill();
    await this.redis.close();
  }
}

/** A fresh lower-case UUID. */
export function uuid(): string {
  return randomUUID();
}
