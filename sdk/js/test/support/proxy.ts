/**
 * A TCP proxy for tests: delays each direction by its own time (a slow,
 * asymmetric link), and can freeze (stop forwarding without closing, as a
 * dead NAT or a phone going through a tunnel does).
 */
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";

export class Proxy {
  /** Delay from client to server (ms). */
  upMs: number;
  /** Delay from server to client (ms). */
  downMs: number;
  readonly #server: Server;
  readonly #pairs = new Set<{ client: Socket; upstream: Socket; frozen: boolean }>();
  port = 0;

  private constructor(readonly target: number, upMs: number, downMs: number) {
    this.upMs = upMs;
    this.downMs = downMs;
    this.#server = createServer((client) => this.#accept(client));
  }

  static async start(targetPort: number, upMs = 0, downMs = 0): Promise<Proxy> {
    const p = new Proxy(targetPort, upMs, downMs);
    await new Promise<void>((ok) => p.#server.listen(0, "127.0.0.1", ok));
    p.port = (p.#server.address() as AddressInfo).port;
    return p;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  #accept(client: Socket): void {
    const upstream = connect(this.target, "127.0.0.1");
    const pair = { client, upstream, frozen: false };
    this.#pairs.add(pair);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const pipe = (from: Socket, to: Socket, delay: () => number): void => {
      from.on("data", (chunk) => {
        if (pair.frozen) return; // swallowed, as by a dead link
        const d = delay();
        if (d <= 0) to.write(chunk);
        else setTimeout(() => to.writable && to.write(chunk), d);
      });
      from.on("end", () => setTimeout(() => to.end(), delay()));
      from.on("error", () => to.destroy());
      from.on("close", () => {
        to.destroy();
        this.#pairs.delete(pair);
      });
    };
    pipe(client, upstream, () => this.upMs);
    pipe(upstream, client, () => this.downMs);
  }

  /** Stops forwarding on every open connection, without closing them. New connections still work. */
  freeze(): void {
    for (const p of this.#pairs) p.frozen = true;
  }

  /** Connections open now. */
  get connections(): number {
    return this.#pairs.size;
  }

  async close(): Promise<void> {
    for (const p of this.#pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    await new Promise<void>((ok) => this.#server.close(() => ok()));
  }
}
