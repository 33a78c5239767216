// serve.mjs: the example at `/`, the built SDK at `/synckairos/`, MIME types,
// no-store, 404 for anything else and for every way out of the two folders.
import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, test } from "node:test";
import { serve } from "../serve.mjs";

let web;
before(async () => {
  web = await serve({ port: 0 });
});
after(async () => {
  await web?.close();
});

/** A raw request: the path goes out exactly as written (fetch would normalize `..`). */
function get(path, method = "GET") {
  const { hostname, port } = new URL(web.url);
  return new Promise((ok, fail) => {
    const req = request({ hostname, port, path, method }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => ok({ status: res.statusCode, type: res.headers["content-type"], cache: res.headers["cache-control"], body }));
    });
    req.on("error", fail);
    req.end();
  });
}

test("binds 127.0.0.1 on a free port", () => {
  assert.match(web.url, /^http:\/\/127\.0\.0\.1:\d+$/);
});

test("serves the pages, the module and the SDK with their types and no-store", async () => {
  for (const [path, type, needle] of [
    ["/", "text/html", 'data-role="host"'],
    ["/index.html", "text/html", 'data-role="host"'],
    ["/viewer.html", "text/html", 'data-role="viewer"'],
    ["/app.js", "text/javascript", 'from "./synckairos/index.js"'],
    ["/style.css", "text/css", ".clock"],
    ["/synckairos/index.js", "text/javascript", "SessionWatcher"],
    ["/synckairos/index.js.map", "application/json", '"version"'],
  ]) {
    const r = await get(path);
    assert.equal(r.status, 200, path);
    assert.ok(r.type.startsWith(type), `${path}: ${r.type}`);
    assert.equal(r.cache, "no-store", path);
    assert.ok(r.body.includes(needle), `${path} holds ${needle}`);
  }
  const head = await get("/app.js", "HEAD");
  assert.equal(head.status, 200);
  assert.equal(head.body, "");
});

test("404 for anything else, and no way out of its folders", async () => {
  for (const path of [
    "/missing.html",
    "/README.md",
    "/test/browser.test.mjs",
    "/node_modules/playwright-core/package.json",
    "/.npmrc",
    "/../README.md",
    "/../../Cargo.toml",
    "/synckairos/../../../Cargo.toml",
    "/synckairos/..%2f..%2f..%2fCargo.toml",
    "/%2e%2e/%2e%2e/Cargo.toml",
    "/..%5c..%5cCargo.toml",
    "/synckairos/%00index.js",
    "/synckairos/",
  ]) {
    const r = await get(path);
    assert.equal(r.status, 404, path);
    assert.equal(r.cache, "no-store", path);
  }
  assert.equal((await get("/", "POST")).status, 405);
});
