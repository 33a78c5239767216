#!/usr/bin/env node
// Generates the SDK's wire types from the server's own machine-readable
// contract, so they cannot drift from it:
//
//   docs/openapi.json            -> src/generated/api.ts
//   docs/ws-messages.schema.json -> src/generated/ws.ts
//
// Both documents are written by the server's unit tests
// (`SK_WRITE_SCHEMAS=1 cargo test -p synckairos-core`).
//
// Usage (from sdk/js):
//   node scripts/gen-types.mjs
//       writes src/generated/api.ts and src/generated/ws.ts
//   node scripts/gen-types.mjs --check [--openapi <file or URL>] [--ws <file or URL>]
//       exits 1 when the committed files differ from what the documents
//       generate. An http(s) URL for --openapi is a running server: its
//       /v1/openapi.json is fetched (a URL ending in .json is used as is).
//
// `generate(openapi, wsSchemas)` is the pure function behind it. No
// dependencies: Node >= 20 (global fetch).

import { readFile, writeFile, mkdir } from "node:fs/promises";
import { realpathSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const SDK = join(HERE, "..");
const REPO = join(SDK, "..", "..");
export const DEFAULT_OPENAPI = join(REPO, "docs", "openapi.json");
export const DEFAULT_WS = join(REPO, "docs", "ws-messages.schema.json");
export const OUT_DIR = join(SDK, "src", "generated");

const REGENERATE = "cd sdk/js && node scripts/gen-types.mjs";

// --- schema -> type tree ------------------------------------------------------

/** Keywords that say nothing about the TypeScript type. */
const ANNOTATIONS = new Set([
  "$schema",
  "title",
  "description",
  "example",
  "examples",
  "default",
  "deprecated",
  "format",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "multipleOf",
  "minLength",
  "maxLength",
  "pattern",
  "minItems",
  "maxItems",
  "uniqueItems",
]);

/** Keywords that shape the type, every one handled below. */
const STRUCTURAL = new Set([
  "$ref",
  "type",
  "nullable",
  "enum",
  "const",
  "oneOf",
  "anyOf",
  "allOf",
  "properties",
  "required",
  "additionalProperties",
  "items",
]);

const TYPES = new Set(["string", "integer", "number", "boolean", "null", "array", "object"]);

class SchemaError extends Error {
  constructor(at, message) {
    super(`${at}: ${message}`);
    this.name = "SchemaError";
  }
}

const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The type tree of `schema`:
 *   {kind: "ref", name} | {kind: "prim", name} | {kind: "lit", value}
 *   | {kind: "union", members} | {kind: "inter", members} | {kind: "array", items}
 *   | {kind: "object", props: [{name, optional, doc, type}]} | {kind: "record", values}
 * `refs` maps a `$ref` string to a schema name, or throws. Anything not
 * understood throws: nothing is ever typed `any`.
 */
function toType(schema, at, refs) {
  if (schema === true) return { kind: "prim", name: "unknown" };
  if (!isObject(schema)) throw new SchemaError(at, `not a schema: ${JSON.stringify(schema)}`);
  for (const key of Object.keys(schema)) {
    if (!ANNOTATIONS.has(key) && !STRUCTURAL.has(key)) {
      throw new SchemaError(at, `unsupported schema keyword "${key}"`);
    }
  }
  const has = (k) => Object.hasOwn(schema, k);
  const nullable = schema.nullable === true;
  if (has("nullable") && typeof schema.nullable !== "boolean") throw new SchemaError(at, "nullable is not a boolean");
  const withNull = (t) => (nullable ? union([t, { kind: "lit", value: null }]) : t);

  if (has("$ref")) {
    const others = Object.keys(schema).filter((k) => STRUCTURAL.has(k) && k !== "$ref");
    if (others.length > 0) throw new SchemaError(at, `$ref with ${others.join(", ")} beside it`);
    return { kind: "ref", name: refs(schema.$ref, at) };
  }

  const compositions = ["oneOf", "anyOf", "allOf"].filter(has);
  if (compositions.length > 0) {
    const others = Object.keys(schema).filter((k) => STRUCTURAL.has(k) && !compositions.includes(k) && k !== "nullable");
    if (others.length > 0) throw new SchemaError(at, `${compositions.join("+")} with ${others.join(", ")} beside it`);
    const parts = compositions.map((k) => {
      const list = schema[k];
      if (!Array.isArray(list) || list.length === 0) throw new SchemaError(at, `${k} is not a non-empty array`);
      const members = list.map((s, i) => toType(s, `${at}.${k}[${i}]`, refs));
      return k === "allOf" ? inter(members) : union(members);
    });
    return withNull(inter(parts));
  }

  if (has("enum") || has("const")) {
    const values = has("const") ? [schema.const] : schema.enum;
    if (!Array.isArray(values) || values.length === 0) throw new SchemaError(at, "enum is not a non-empty array");
    const declared = has("type") ? [schema.type].flat() : null;
    for (const v of values) {
      if (v !== null && typeof v === "object") throw new SchemaError(at, `non-scalar enum value ${JSON.stringify(v)}`);
      const kind = v === null ? "null" : typeof v === "number" ? (Number.isInteger(v) ? "integer" : "number") : typeof v;
      if (declared && !declared.includes(kind) && !(kind === "integer" && declared.includes("number"))) {
        throw new SchemaError(at, `enum value ${JSON.stringify(v)} is not of type ${declared.join("|")}`);
      }
    }
    for (const k of ["properties", "items", "additionalProperties", "required"]) {
      if (has(k)) throw new SchemaError(at, `enum/const with ${k}`);
    }
    return withNull(union(values.map((value) => ({ kind: "lit", value }))));
  }

  if (!has("type")) {
    if (has("properties") || has("additionalProperties") || has("required")) {
      return withNull(objectType(schema, at, refs));
    }
    if (has("items")) throw new SchemaError(at, "items without type array");
    // Only annotations: any JSON value.
    return withNull({ kind: "prim", name: "unknown" });
  }
  const types = [schema.type].flat();
  if (types.length === 0) throw new SchemaError(at, "empty type list");
  for (const t of types) {
    if (typeof t !== "string" || !TYPES.has(t)) throw new SchemaError(at, `unknown type ${JSON.stringify(t)}`);
  }
  if (has("items") && !types.includes("array")) throw new SchemaError(at, "items on a non-array type");
  for (const k of ["properties", "additionalProperties", "required"]) {
    if (has(k) && !types.includes("object")) throw new SchemaError(at, `${k} on a non-object type`);
  }
  const members = types.map((t) => {
    switch (t) {
      case "string":
        return { kind: "prim", name: "string" };
      case "integer":
      case "number":
        return { kind: "prim", name: "number" };
      case "boolean":
        return { kind: "prim", name: "boolean" };
      case "null":
        return { kind: "lit", value: null };
      case "array":
        return {
          kind: "array",
          items: has("items") ? toType(schema.items, `${at}.items`, refs) : { kind: "prim", name: "unknown" },
        };
      case "object":
        return objectType(schema, at, refs);
    }
    throw new SchemaError(at, `unknown type ${t}`);
  });
  return withNull(union(members));
}

function objectType(schema, at, refs) {
  const props = schema.properties ?? {};
  if (!isObject(props)) throw new SchemaError(at, "properties is not an object");
  const required = schema.required ?? [];
  if (!Array.isArray(required)) throw new SchemaError(at, "required is not an array");
  for (const r of required) {
    if (!Object.hasOwn(props, r)) throw new SchemaError(at, `required "${r}" is not a property`);
  }
  const extra = schema.additionalProperties;
  const names = Object.keys(props);
  if (names.length === 0) {
    if (extra === false) return { kind: "record", values: { kind: "prim", name: "never" } };
    if (extra === undefined || extra === true) return { kind: "record", values: { kind: "prim", name: "unknown" } };
    return { kind: "record", values: toType(extra, `${at}.additionalProperties`, refs) };
  }
  if (extra !== undefined && extra !== false) {
    throw new SchemaError(at, "properties together with additionalProperties are not supported");
  }
  return {
    kind: "object",
    props: names.map((name) => ({
      name,
      optional: !required.includes(name),
      doc: typeof props[name]?.description === "string" ? props[name].description : undefined,
      type: toType(props[name], `${at}.properties.${name}`, refs),
    })),
  };
}

const key = (t) => JSON.stringify(t, (k, v) => (k === "doc" ? undefined : v));

function union(members) {
  const flat = [];
  const seen = new Set();
  for (const m of members.flatMap((m) => (m.kind === "union" ? m.members : [m]))) {
    const k = key(m);
    if (!seen.has(k)) {
      seen.add(k);
      flat.push(m);
    }
  }
  return flat.length === 1 ? flat[0] : { kind: "union", members: flat };
}

function inter(members) {
  const flat = members.flatMap((m) => (m.kind === "inter" ? m.members : [m]));
  return flat.length === 1 ? flat[0] : { kind: "inter", members: flat };
}

/**
 * A canonical form of `t` with every reference expanded, for structural
 * comparison: unions are sets, property order does not matter, docs are
 * ignored.
 */
function canonical(t, resolve, depth = 0) {
  if (depth > 50) throw new Error("recursive schema");
  const c = (u) => canonical(u, resolve, depth + 1);
  switch (t.kind) {
    case "ref":
      return c(resolve(t.name));
    case "prim":
      return t.name;
    case "lit":
      return { lit: t.value };
    case "union": {
      const members = t.members.map(c).flatMap((m) => (isObject(m) && m.union ? m.union : [m]));
      const unique = [...new Map(members.map((m) => [JSON.stringify(m), m])).entries()];
      unique.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return unique.length === 1 ? unique[0][1] : { union: unique.map(([, m]) => m) };
    }
    case "inter":
      return { inter: t.members.map(c) };
    case "array":
      return { array: c(t.items) };
    case "record":
      return { record: c(t.values) };
    case "object":
      return {
        object: [...t.props]
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
          .map((p) => [p.name, p.optional, c(p.type)]),
      };
  }
  throw new Error(`unknown type node ${t.kind}`);
}

// --- rendering ------------------------------------------------------------------

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function jsdoc(text, indent) {
  if (text === undefined || text.trim() === "") return "";
  const lines = text.replaceAll("*/", "*\\/").trimEnd().split("\n");
  if (lines.length === 1) return `${indent}/** ${lines[0]} */\n`;
  return `${indent}/**\n${lines.map((l) => `${indent} *${l ? ` ${l}` : ""}`).join("\n")}\n${indent} */\n`;
}

function literal(value) {
  return value === null ? "null" : JSON.stringify(value);
}

/** `t` as a TypeScript type expression; `prec` 0 = top, 1 = in a union, 2 = in an intersection, 3 = before `[]`. */
function render(t, indent = "", prec = 0) {
  const wrap = (s, own) => (own < prec ? `(${s})` : s);
  switch (t.kind) {
    case "ref":
      return t.name;
    case "prim":
      return t.name;
    case "lit":
      return literal(t.value);
    case "union":
      return wrap(t.members.map((m) => render(m, indent, 2)).join(" | "), 1);
    case "inter":
      return wrap(t.members.map((m) => render(m, indent, 3)).join(" & "), 2);
    case "array":
      return `${render(t.items, indent, 3)}[]`;
    case "record":
      return `Record<string, ${render(t.values, indent, 0)}>`;
    case "object": {
      const inner = `${indent}  `;
      const body = t.props
        .map((p) => {
          const name = IDENT.test(p.name) ? p.name : JSON.stringify(p.name);
          return `${jsdoc(p.doc, inner)}${inner}${name}${p.optional ? "?" : ""}: ${render(p.type, inner, 0)};\n`;
        })
        .join("");
      return `{\n${body}${indent}}`;
    }
  }
  throw new Error(`unknown type node ${t.kind}`);
}

/** `export type name = …;`, a long union one member a line. */
function declaration(name, t, doc) {
  let body = render(t, "", 0);
  if (t.kind === "union" && body.length > 60) {
    body = `\n${t.members.map((m) => `  | ${render(m, "  ", 2)}`).join("\n")}`;
  } else {
    body = ` ${body}`;
  }
  return `${jsdoc(doc, "")}export type ${name} =${body};\n`;
}

/**
 * The documentation of a named schema: its description, plus one line per
 * documented variant of a `oneOf` of single values (`SyncMode`, `Status`, …).
 */
function namedDoc(schema) {
  const parts = [];
  if (typeof schema.description === "string") parts.push(schema.description);
  const variants = schema.oneOf ?? schema.anyOf;
  if (Array.isArray(variants)) {
    const lines = [];
    for (const v of variants) {
      const values = Object.hasOwn(v, "const") ? [v.const] : Array.isArray(v.enum) && v.enum.length === 1 ? v.enum : null;
      if (values && typeof v.description === "string") {
        lines.push(`- \`${literal(values[0])}\`: ${v.description.replaceAll("\n", " ")}`);
      }
    }
    if (lines.length > 0) parts.push(lines.join("\n"));
  }
  return parts.length > 0 ? parts.join("\n\n") : undefined;
}

function header(source) {
  return (
    `// Generated by sdk/js/scripts/gen-types.mjs from ${source}: do not edit.\n` +
    `// Regenerate with \`${REGENERATE}\` (and the document with\n` +
    "// `SK_WRITE_SCHEMAS=1 cargo test -p synckairos-core`); `--check` tells whether this file is up to date.\n\n"
  );
}

const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

// --- api.ts -----------------------------------------------------------------------

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

function openapiRefs(schemas) {
  return (ref, at) => {
    const m = typeof ref === "string" ? /^#\/components\/schemas\/([A-Za-z_][A-Za-z0-9_]*)$/.exec(ref) : null;
    if (!m) throw new SchemaError(at, `unsupported $ref ${JSON.stringify(ref)}`);
    if (!Object.hasOwn(schemas, m[1])) throw new SchemaError(at, `$ref to a missing schema ${m[1]}`);
    return m[1];
  };
}

function schemasOf(openapi) {
  const schemas = openapi?.components?.schemas;
  if (!isObject(schemas)) throw new SchemaError("openapi", "no components.schemas");
  return schemas;
}

/** The operations: [{id, method, path, ok, errors: [[status, codes]]}], in document order. */
function operationsOf(openapi) {
  if (!isObject(openapi.paths)) throw new SchemaError("openapi", "no paths");
  const ops = [];
  const ids = new Set();
  for (const [path, item] of Object.entries(openapi.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const at = `paths.${path}.${method}`;
      if (!METHODS.includes(method)) {
        if (method === "parameters" || method === "summary" || method === "description") continue;
        throw new SchemaError(at, "unknown path item field");
      }
      const id = op.operationId;
      if (typeof id !== "string" || !IDENT.test(id)) throw new SchemaError(at, "no operationId (or not an identifier)");
      if (ids.has(id)) throw new SchemaError(at, `operationId ${id} is used twice`);
      ids.add(id);
      const statuses = Object.keys(op.responses ?? {});
      const ok = statuses.filter((s) => /^2\d\d$/.test(s));
      // Usually one success; a registration is new (201) or renewed (200).
      // They must share their body; `ok` is the first.
      if (ok.length === 0) throw new SchemaError(at, "no 2xx response");
      const okBody = (s) => JSON.stringify(op.responses[s].content ?? null);
      if (ok.some((s) => okBody(s) !== okBody(ok[0]))) throw new SchemaError(at, `2xx responses ${ok.join(", ")} differ in their body`);
      const errors = [];
      for (const status of statuses) {
        const response = op.responses[status];
        if (!/^[45]\d\d$/.test(status)) {
          if (!/^2\d\d$/.test(status)) throw new SchemaError(at, `unsupported response status ${status}`);
          continue;
        }
        const codes = response["x-error-codes"];
        if (codes === undefined) {
          const schema = response.content?.["application/json"]?.schema;
          if (schema?.$ref === "#/components/schemas/ErrorResponse") {
            throw new SchemaError(`${at}.responses.${status}`, "an error response without x-error-codes");
          }
          continue; // not the error scheme (the probe body of /ready's 503)
        }
        if (!Array.isArray(codes) || codes.length === 0 || codes.some((c) => typeof c !== "string")) {
          throw new SchemaError(`${at}.responses.${status}`, "x-error-codes is not a non-empty list of strings");
        }
        errors.push([Number(status), codes]);
      }
      errors.sort((a, b) => a[0] - b[0]);
      // A token unless the operation opts out (`security: []`); the
      // document's own `security` applies to the rest.
      const auth = !(Array.isArray(op.security) && op.security.length === 0);
      // The success body: `{data: …}`, bare JSON, or none (204).
      const okSchema = op.responses[ok[0]].content?.["application/json"]?.schema;
      const body =
        okSchema === undefined ? "none" : okSchema.type === "object" && okSchema.required?.includes("data") && okSchema.properties?.data !== undefined ? "data" : "bare";
      ops.push({ id, method: method.toUpperCase(), path, ok: Number(ok[0]), auth, body, errors });
    }
  }
  if (ops.length === 0) throw new SchemaError("openapi", "no operations");
  return ops;
}

/** The one declaration of the `Idempotency-Key` header's schema. */
function idempotencyKey(openapi) {
  let found = null;
  for (const [path, item] of Object.entries(openapi.paths)) {
    for (const [method, op] of Object.entries(item)) {
      for (const p of op?.parameters ?? []) {
        if (p?.in !== "header" || typeof p.name !== "string" || p.name.toLowerCase() !== "idempotency-key") continue;
        const s = p.schema ?? {};
        if (!Number.isInteger(s.maxLength) || typeof s.pattern !== "string") {
          throw new SchemaError(`paths.${path}.${method}`, "Idempotency-Key without maxLength and pattern");
        }
        const here = { maxLength: s.maxLength, pattern: s.pattern };
        if (found && (found.maxLength !== here.maxLength || found.pattern !== here.pattern)) {
          throw new SchemaError(`paths.${path}.${method}`, "Idempotency-Key differs between operations");
        }
        found = here;
      }
    }
  }
  if (!found) throw new SchemaError("openapi", "no Idempotency-Key header parameter");
  return found;
}

function generateApi(openapi) {
  const schemas = schemasOf(openapi);
  const refs = openapiRefs(schemas);
  const exported = [];
  let out = header("docs/openapi.json");
  out += "// The REST API's bodies (components.schemas), its operations, their error\n";
  out += "// codes and the header limits.\n";
  const title = openapi.info?.title ?? "the API";
  const version = openapi.info?.version;
  out += `// ${title}${version ? ` ${version}` : ""}, OpenAPI ${openapi.openapi}.\n`;

  for (const [name, schema] of Object.entries(schemas)) {
    if (!IDENT.test(name)) throw new SchemaError(`components.schemas.${name}`, "not an identifier");
    const t = toType(schema, `components.schemas.${name}`, refs);
    out += `\n${declaration(name, t, namedDoc(schema))}`;
    exported.push(name);
  }

  const ops = operationsOf(openapi);
  out += "\n/**\n * Every operation of the REST API by `operationId`: its method, path (with\n";
  out += " * `{id}` for the session id), success status, whether it needs a token,\n";
  out += " * its success body (`data`: wrapped in `{data}`; `bare`; `none`) and, by\n";
  out += " * status, the error codes it can answer (`x-error-codes`).\n */\n";
  out += "export const OPERATIONS = {\n";
  for (const op of ops) {
    out += `  ${op.id}: {\n`;
    out += `    method: ${JSON.stringify(op.method)},\n`;
    out += `    path: ${JSON.stringify(op.path)},\n`;
    out += `    ok: ${op.ok},\n`;
    out += `    auth: ${op.auth},\n`;
    out += `    body: ${JSON.stringify(op.body)},\n`;
    if (op.errors.length === 0) {
      out += "    errors: {},\n";
    } else {
      out += "    errors: {\n";
      for (const [status, codes] of op.errors) {
        out += `      ${status}: [${codes.map((c) => JSON.stringify(c)).join(", ")}],\n`;
      }
      out += "    },\n";
    }
    out += "  },\n";
  }
  out += "} as const;\n";
  out += "\n/** The `operationId` of an operation. */\n";
  out += "export type OperationId = keyof typeof OPERATIONS;\n";
  out += "\n/** Every error code operation `O` can answer. */\n";
  out += "export type ErrorCodeOf<O extends OperationId> = {\n";
  out += "  [S in keyof (typeof OPERATIONS)[O][\"errors\"]]: (typeof OPERATIONS)[O][\"errors\"][S] extends readonly (infer C)[]\n";
  out += "    ? C\n";
  out += "    : never;\n";
  out += "}[keyof (typeof OPERATIONS)[O][\"errors\"]];\n";
  const codes = [...new Set(ops.flatMap((o) => o.errors.flatMap(([, c]) => c)))].sort(compare);
  out += "\n/** Every error code of every operation. */\n";
  out += declaration("ErrorCode", union(codes.map((value) => ({ kind: "lit", value }))), undefined);
  exported.push("OPERATIONS", "OperationId", "ErrorCodeOf", "ErrorCode");

  const idem = idempotencyKey(openapi);
  out += "\n/** The longest `Idempotency-Key` the server accepts (its header's `maxLength`). */\n";
  out += `export const IDEMPOTENCY_KEY_MAX_LENGTH = ${idem.maxLength};\n`;
  out += "\n/** The pattern an `Idempotency-Key` must match (its header's `pattern`; empty means none). */\n";
  out += `export const IDEMPOTENCY_KEY_PATTERN = ${JSON.stringify(idem.pattern)};\n`;
  exported.push("IDEMPOTENCY_KEY_MAX_LENGTH", "IDEMPOTENCY_KEY_PATTERN");
  return { text: out, exported };
}

// --- ws.ts ------------------------------------------------------------------------

function pascal(screaming, at) {
  if (typeof screaming !== "string" || !/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/.test(screaming)) {
    throw new SchemaError(at, `message type ${JSON.stringify(screaming)} is not SCREAMING_SNAKE_CASE`);
  }
  return screaming
    .split("_")
    .map((w) => w[0] + w.slice(1).toLowerCase())
    .join("");
}

const wsRefs = (ref, at) => {
  throw new SchemaError(at, `unexpected $ref ${JSON.stringify(ref)} (the WebSocket schemas are inlined)`);
};

/**
 * Replaces each inline object of `t` that is structurally a schema of the
 * REST API (same properties, optionality and types) by a reference to it;
 * `used` collects the names.
 */
function reuseApiTypes(t, apiObjects, used) {
  if (t.kind === "object") {
    const c = JSON.stringify(apiObjects.canon(t));
    const hit = apiObjects.byCanon.get(c);
    if (hit) {
      used.add(hit);
      return { kind: "ref", name: hit };
    }
    return { ...t, props: t.props.map((p) => ({ ...p, type: reuseApiTypes(p.type, apiObjects, used) })) };
  }
  if (t.kind === "union" || t.kind === "inter") return { ...t, members: t.members.map((m) => reuseApiTypes(m, apiObjects, used)) };
  if (t.kind === "array") return { ...t, items: reuseApiTypes(t.items, apiObjects, used) };
  if (t.kind === "record") return { ...t, values: reuseApiTypes(t.values, apiObjects, used) };
  return t;
}

function apiObjectsOf(openapi) {
  const schemas = schemasOf(openapi);
  const refs = openapiRefs(schemas);
  const types = new Map(Object.entries(schemas).map(([n, s]) => [n, toType(s, `components.schemas.${n}`, refs)]));
  const resolve = (name) => types.get(name);
  const canon = (t) => canonical(t, resolve);
  const byCanon = new Map();
  for (const [name, t] of types) {
    if (t.kind !== "object") continue;
    const c = JSON.stringify(canon(t));
    if (!byCanon.has(c)) byCanon.set(c, name);
  }
  return { canon, byCanon };
}

function generateWs(wsSchemas, openapi, apiExports) {
  if (!isObject(wsSchemas)) throw new SchemaError("ws", "not an object");
  for (const k of Object.keys(wsSchemas)) {
    if (!["client_to_server", "server_to_client", "close_codes"].includes(k)) {
      throw new SchemaError("ws", `unknown key "${k}"`);
    }
  }
  const apiObjects = apiObjectsOf(openapi);
  const used = new Set();
  const exported = [];
  let body = "";
  for (const [dir, unionName, prefix] of [
    ["client_to_server", "ClientIn", "In"],
    ["server_to_client", "ClientOut", "Out"],
  ]) {
    const root = wsSchemas[dir];
    if (!isObject(root) || !Array.isArray(root.oneOf)) throw new SchemaError(dir, "not a oneOf of messages");
    for (const k of Object.keys(root)) {
      if (!["$schema", "title", "description", "oneOf"].includes(k)) throw new SchemaError(dir, `unsupported keyword "${k}"`);
    }
    const names = [];
    for (const [i, variant] of root.oneOf.entries()) {
      const at = `${dir}.oneOf[${i}]`;
      const tag = variant?.properties?.type;
      if (!isObject(tag) || !Object.hasOwn(tag, "const") || !(variant.required ?? []).includes("type")) {
        throw new SchemaError(at, "a message without a required constant `type`");
      }
      const name = prefix + pascal(tag.const, at);
      if (names.includes(name)) throw new SchemaError(at, `two messages named ${name}`);
      let t = toType(variant, at, wsRefs);
      if (t.kind !== "object") throw new SchemaError(at, "a message that is not an object");
      t = { ...t, props: t.props.map((p) => ({ ...p, type: reuseApiTypes(p.type, apiObjects, used) })) };
      body += `\n${declaration(name, t, variant.description)}`;
      names.push(name);
    }
    const doc = [root.description, `\`${dir}\` of docs/ws-messages.schema.json.`].filter(Boolean).join("\n\n");
    body += `\n${declaration(unionName, union(names.map((name) => ({ kind: "ref", name }))), doc)}`;
    exported.push(...names, unionName);

    if (dir === "server_to_client") {
      const error = root.oneOf.find((v) => v?.properties?.type?.const === "ERROR");
      const code = error?.properties?.code;
      if (code) {
        const t = toType(code, `${dir}.ERROR.code`, wsRefs);
        const literals = t.kind === "lit" || (t.kind === "union" && t.members.every((m) => m.kind === "lit"));
        if (literals) {
          body += `\n${declaration("WsErrorCode", t, "Every `code` of an `ERROR` message.")}`;
          exported.push("WsErrorCode");
        }
      }
    }
  }

  const closeCodes = wsSchemas.close_codes;
  if (!Array.isArray(closeCodes) || closeCodes.length === 0) throw new SchemaError("close_codes", "not a non-empty array");
  const shape = { code: "integer", name: "string", reconnect: "boolean", reasons: "strings" };
  let last = -Infinity;
  const entries = closeCodes.map((c, i) => {
    const at = `close_codes[${i}]`;
    if (!isObject(c)) throw new SchemaError(at, "not an object");
    const keys = Object.keys(c);
    if (keys.length !== 4 || keys.some((k) => !Object.hasOwn(shape, k))) {
      throw new SchemaError(at, `expected exactly ${Object.keys(shape).join(", ")}; got ${keys.join(", ")}`);
    }
    if (!Number.isInteger(c.code) || typeof c.name !== "string" || typeof c.reconnect !== "boolean") {
      throw new SchemaError(at, "code, name or reconnect of the wrong type");
    }
    if (!Array.isArray(c.reasons) || c.reasons.length === 0 || c.reasons.some((r) => typeof r !== "string")) {
      throw new SchemaError(at, "reasons is not a non-empty list of strings");
    }
    if (c.code <= last) throw new SchemaError(at, "close codes are not in increasing order");
    last = c.code;
    const reasons = c.reasons.map((r) => JSON.stringify(r)).join(", ");
    return `  { code: ${c.code}, name: ${JSON.stringify(c.name)}, reconnect: ${c.reconnect}, reasons: [${reasons}] },\n`;
  });
  body += "\n/**\n * Every close code the gateway uses, in numeric order: its name, whether a\n";
  body += " * client should reconnect after it, and the reasons it is sent with.\n */\n";
  body += `export const CLOSE_CODES = [\n${entries.join("")}] as const;\n`;
  body += "\n/** A close code of {@link CLOSE_CODES}. */\n";
  body += 'export type CloseCodeNumber = (typeof CLOSE_CODES)[number]["code"];\n';
  exported.push("CLOSE_CODES", "CloseCodeNumber");

  for (const name of exported) {
    if (apiExports.includes(name)) throw new SchemaError("ws", `${name} is exported by api.ts too`);
  }
  let out = header("docs/ws-messages.schema.json");
  out += "// The WebSocket messages, by direction, and the close codes.\n";
  if (used.size > 0) {
    out += `\nimport type { ${[...used].sort(compare).join(", ")} } from "./api.js";\n`;
  }
  return { text: out + body, exported };
}

/**
 * The generated sources: `{"api.ts": …, "ws.ts": …}` from the OpenAPI
 * document and the WebSocket schemas (parsed JSON). Throws on any schema
 * construct it does not understand.
 */
export function generate(openapi, wsSchemas) {
  const api = generateApi(openapi);
  const ws = generateWs(wsSchemas, openapi, api.exported);
  return { "api.ts": api.text, "ws.ts": ws.text };
}

/** The exported names of each generated file (for tests and reports). */
export function exportedNames(openapi, wsSchemas) {
  const api = generateApi(openapi);
  return { "api.ts": api.exported, "ws.ts": generateWs(wsSchemas, openapi, api.exported).exported };
}

// --- command line -------------------------------------------------------------------

async function load(source, isOpenapi) {
  if (/^https?:\/\//.test(source)) {
    let url = source;
    if (isOpenapi && !new URL(source).pathname.endsWith(".json")) {
      url = new URL("v1/openapi.json", source.endsWith("/") ? source : `${source}/`).href;
    }
    const response = await fetch(url);
    if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
    return { json: await response.json(), label: url };
  }
  return { json: JSON.parse(await readFile(source, "utf8")), label: relative(process.cwd(), source) || source };
}

function firstDifference(a, b) {
  const x = a.split("\n");
  const y = b.split("\n");
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] !== y[i]) {
      return `line ${i + 1}:\n  committed: ${x[i] === undefined ? "(end of file)" : JSON.stringify(x[i])}\n  generated: ${y[i] === undefined ? "(end of file)" : JSON.stringify(y[i])}`;
    }
  }
  return "";
}

function parseArgs(argv) {
  const opts = { check: false, openapi: DEFAULT_OPENAPI, ws: DEFAULT_WS };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--check") opts.check = true;
    else if (a === "--openapi" || a === "--ws") {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      opts[a.slice(2)] = v;
    } else if (a === "-h" || a === "--help") opts.help = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return opts;
}

async function main(argv) {
  let opts;
  try {
    opts = parseArgs(argv);
  } catch (e) {
    console.error(`gen-types: ${e.message}`);
    return 2;
  }
  if (opts.help) {
    console.log("usage: node scripts/gen-types.mjs [--check] [--openapi <file or URL>] [--ws <file or URL>]");
    return 0;
  }
  const openapi = await load(opts.openapi, true);
  const ws = await load(opts.ws, false);
  const files = generate(openapi.json, ws.json);
  if (!opts.check) {
    await mkdir(OUT_DIR, { recursive: true });
    for (const [name, text] of Object.entries(files)) {
      await writeFile(join(OUT_DIR, name), text);
      console.log(`wrote ${relative(process.cwd(), join(OUT_DIR, name))}`);
    }
    return 0;
  }
  let stale = 0;
  for (const [name, text] of Object.entries(files)) {
    const path = join(OUT_DIR, name);
    const shown = `sdk/js/src/generated/${name}`;
    let committed;
    try {
      committed = await readFile(path, "utf8");
    } catch {
      console.error(`${shown} is missing.`);
      stale++;
      continue;
    }
    if (committed !== text) {
      const from = name === "api.ts" ? openapi.label : ws.label;
      console.error(`${shown} differs from what ${from} generates (${firstDifference(committed, text)})`);
      stale++;
    }
  }
  if (stale > 0) {
    console.error(
      `\nThe generated types are out of date. Regenerate them with\n    ${REGENERATE}\n` +
        "(after `SK_WRITE_SCHEMAS=1 cargo test -p synckairos-core` if the server changed) and commit the result.",
    );
    return 1;
  }
  console.log("sdk/js/src/generated/api.ts and ws.ts are up to date.");
  return 0;
}

const invoked = process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (invoked) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      console.error(`gen-types: ${e instanceof Error ? e.message : e}`);
      process.exit(2);
    },
  );
}

export { SchemaError };
