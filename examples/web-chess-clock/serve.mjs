#!/usr/bin/env node
// A tiny static server for the web chess clock, in plain Node (no
// dependencies): the example folder at `/` and the built SDK (sdk/js/dist)
// at `/synckairos/`. Every answer is `Cache-Control: no-store`; anything
// else is 404, and a path that would climb out of its folder is refused.
//
//   node examples/web-chess-clock/serve.mjs [--port 8790] [--host 127.0.0.1]
//
// Tests import it: `const { url, close } = await serve({ port: 0 })`.
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** The example's own files. */
export const EXAMPLE_DIR = here;
/** The SDK's build output (`npm run build` in sdk/js). */
export const SDK_DIST_DIR = resolve(here, "../../sdk/js/dist");

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
};

/** Where the request path points on disk, or `undefined` for a 404. */
function locate(pathname) {
  let decoded;
  try {
    decoded = decodeURIComponent(pathname);
  } catch {
    return undefined;
  }
  // No `..` segment, no NUL, no backslash: nothing that could leave the root.
  if (decoded.includes("\0") || decoded.includes("\\")) return undefined;
  const segments = decoded.split("/");
  if (segments.some((s) => s === "..")) return undefined;
  let root = EXAMPLE_DIR;
  let rest = decoded;
  if (decoded === "/synckairos" || decoded.startsWith("/synckairos/")) {
    root = SDK_DIST_DIR;
    rest = decoded.slice("/synckairos".length);
  } else if (segments.some((s) => s === "node_modules" || s === "test" || s.startsWith("."))) {
    // The example folder also holds its test and its dev dependencies: not served.
    return undefined;
  }
  if (rest === "" || rest.endsWith("/")) rest += "index.html";
  const file = resolve(root, "." + rest);
  if (file !== root && !file.startsWith(root + sep)) return undefined;
  return MIME[extname(file)] === undefined ? undefined : file;
}

async function handle(req, res) {
  const headers = { "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff" };
  const notFound = () => {
    res.writeHead(404, { ...headers, "Content-Type": "text/plain; charset=utf-8" });
    res.end("not found\n");
  };
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { ...headers, Allow: "GET, HEAD", "Content-Type": "text/plain; charset=utf-8" });
    res.end("method not allowed\n");
    return;
  }
  let pathname;
  try {
    pathname = new URL(req.url ?? "/", "http://localhost").pathname;
  } catch {
    notFound();
    return;
  }
  const file = locate(pathname);
  if (file === undefined) return notFound();
  try {
    if (!(await stat(file)).isFile()) return notFound();
    const body = await readFile(file);
    res.writeHead(200, { ...headers, "Content-Type": MIME[extname(file)], "Content-Length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  } catch {
    notFound();
  }
}

/**
 * Starts the server; port 0 takes a free one. Resolves with its base URL
 * and a `close()` that stops it.
 */
export async function serve({ port = 8790, host = "127.0.0.1" } = {}) {
  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500, { "Cache-Control": "no-store" });
      res.end();
    });
  });
  await new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, host, () => {
      server.off("error", fail);
      ok();
    });
  });
  const address = server.address();
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}`,
    close: () =>
      new Promise((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

function parseArgs(argv) {
  const options = { port: 8790, host: "127.0.0.1" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--port") options.port = Number.parseInt(value(), 10);
    else if (a === "--host") options.host = value();
    else if (a === "-h" || a === "--help") {
      console.log("usage: node examples/web-chess-clock/serve.mjs [--port 8790] [--host 127.0.0.1]");
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new Error("--port takes a number from 0 to 65535");
  }
  return options;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`${e.message}\nusage: node examples/web-chess-clock/serve.mjs [--port 8790] [--host 127.0.0.1]`);
    process.exit(2);
  }
  const { url, close } = await serve(options);
  console.log(`web chess clock on ${url}/ (the SDK at ${url}/synckairos/)`);
  const stop = () => void close().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
