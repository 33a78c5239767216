// The web chess clock: one module for both pages. index.html (data-role
// "host") creates or joins the session and sends its commands over REST;
// viewer.html (data-role "viewer") only watches. Both draw the clocks from
// the SessionWatcher: the newest state pushed over the WebSocket and the
// estimate of the server's clock. Nothing counts down here; every frame
// computes each clock from that state at the estimated server time.
//
// The host's form offers every time control of the API (docs/DESIGN.md §4);
// each face shows what its control needs beyond the main time: the delay
// left this turn, the byo-yomi period and the periods left, the moves left
// in a Canadian block or a stage, the stage.
//
// Configuration is the URL fragment (never sent to a server, so the token
// stays out of every log):
//   #api=<REST base URL>&ws=<gateway base URL>&session=<uuid>&token=<JWT>
"use strict";

import { SessionWatcher, SyncKairos, SyncKairosError, clocks, formatClock, tick } from "./synckairos/index.js";

const role = document.body.dataset.role === "viewer" ? "viewer" : "host";
const DEFAULT_NAMES = ["White", "Black"];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Under this much time left a clock is drawn as short of time (ms). */
const LOW_TIME_MS = 10_000;

const el = {
  message: byId("message"),
  status: byId("status"),
  board: byId("board"),
  controls: document.getElementById("controls"),
  start: document.getElementById("start"),
  pause: document.getElementById("pause"),
  form: document.getElementById("create"),
  minutes: document.getElementById("minutes"),
  increment: document.getElementById("increment"),
  control: document.getElementById("control"),
  delay: document.getElementById("delay"),
  periods: document.getElementById("periods"),
  period: document.getElementById("period"),
  moves: document.getElementById("moves"),
  block: document.getElementById("block"),
  controlHint: document.getElementById("control-hint"),
  createButton: document.getElementById("create-button"),
  summary: byId("summary"),
};

/** The FIDE classical control: 40 moves, then 30 min more, with 30 s a move from the first. */
const FIDE = {
  type: "stages",
  stages: [
    { moves: 40, increment_ms: 30_000 },
    { add_ms: 1_800_000, increment_ms: 30_000 },
  ],
};
/** What each choice of the form means, in a sentence. */
const CONTROL_HINTS = {
  fischer: "The increment is added after each move.",
  bronstein: "A move gets back the time it used, up to the delay.",
  simple_delay: "The clock waits for the delay before it runs, every move.",
  byoyomi: "Main time, then the periods: a move made inside a period keeps it; a period that runs out is gone.",
  canadian: "Main time, then blocks: the moves of a block within its time, then a fresh block.",
  hourglass: "The time one side uses is added to the other's.",
  fide: "Main time for 40 moves, then 30 more minutes; 30 s added after every move. 90 minutes is the classical game.",
};

/** @type {SessionWatcher | undefined} */
let watcher;
/** @type {SyncKairos | undefined} */
let client;
/** @type {{api: string, ws: string, session: string, token: string} | undefined} */
let config;
/** The last connection change: {state, code?, reason?, retryInMs?}. */
let connection = { state: "connecting" };
let deleted = false;
let commandInFlight = false;
/** The host's first read of the session failed for another reason than 404. */
let joinFailed = false;
/** @type {HTMLElement[]} one face per participant, in participant order */
let faces = [];

/** Every version this page applied, and when (Date.now()). */
const applied = [];

/** The page's API for tests and the console. */
const chessClock = {
  /** True once a state is shown. */
  ready: false,
  role,
  /** The version shown, or undefined before the first state. */
  version: () => watcher?.state()?.version,
  /** The newest SyncState, or undefined. */
  state: () => watcher?.state(),
  /** "connecting" | "open" | "reconnecting" | "closed". */
  connection: () => watcher?.connection ?? "closed",
  /** The server-clock estimate: server = local + offsetMs, within ± errorBoundMs. */
  offset: () => ({ offsetMs: watcher?.clock.offsetMs ?? 0, errorBoundMs: watcher?.clock.errorBoundMs ?? Infinity }),
  /** Each clock's remaining ms at the server time `localEpochMs + offsetMs`, in participant order. */
  remainingAt: (localEpochMs) => chessClock.clocksAt(localEpochMs).map((c) => c.remainingMs),
  /** Each clock (the SDK's `clocks()`: remaining, delay, period, moves, stage…) at server time `localEpochMs + offsetMs`. */
  clocksAt: (localEpochMs) => {
    const state = watcher?.state();
    if (watcher === undefined || state === undefined) return [];
    return clocks(state, localEpochMs + watcher.clock.offsetMs);
  },
  applied,
  /** Switches the running turn (as Space does); resolves with Date.now() taken just before the REST call. */
  tap: () => switchTurn(),
};
window.chessClock = chessClock;

main();

function main() {
  config = readConfig();
  if (typeof config === "string") {
    showMessage(config);
    el.status.textContent = "Not configured.";
    config = undefined;
    return;
  }
  const { api, ws, session, token } = config;
  if (role === "host") {
    client = new SyncKairos({ baseUrl: api, token });
    wireControls();
  }
  watcher = new SessionWatcher({ url: ws, sessionId: session, token });
  watcher.on("state", (state) => {
    applied.push({ version: state.version, at: Date.now() });
    deleted = false;
    if (el.form !== null) el.form.hidden = true;
    if (joinFailed) {
      joinFailed = false;
      hideMessage();
    }
  });
  watcher.on("connection", (info) => {
    connection = info;
    // The first look at the session failed (the API was down, say): look again.
    if (info.state === "open" && joinFailed && role === "host") void joinOrOffer();
  });
  watcher.on("deleted", () => {
    deleted = true;
    showMessage("The session was deleted.");
  });
  watcher.on("error", (e) => {
    if (e.code === "SESSION_NOT_FOUND") return; // the host's form or the viewer's wait covers it
    if (e.code.startsWith("CLOSED_")) {
      showMessage(`The gateway closed the connection for good (${e.code.slice(7)} ${e.message}): check the token and the session.`);
    } else {
      showMessage(`Gateway: ${e.code} ${e.message}`);
    }
  });
  // Redrawn every animation frame from watcher.clocks(); a frame that throws
  // is reported by the browser and the next one still comes. The watcher also
  // retries at once when the browser comes back online or the tab is shown.
  tick(draw);
  if (role === "host") void joinOrOffer();
}

/** The fragment's settings, or a message saying what is missing. */
function readConfig() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const get = (k) => (params.get(k) ?? "").trim();
  const cfg = { api: get("api"), ws: get("ws"), session: get("session").toLowerCase(), token: get("token") };
  if (cfg.ws === "" && cfg.api !== "") cfg.ws = cfg.api; // the self-hosted shape serves both on one URL
  const missing = [];
  if (role === "host" && cfg.api === "") missing.push("api");
  if (cfg.ws === "") missing.push("ws");
  if (cfg.session === "") missing.push("session");
  if (cfg.token === "") missing.push("token");
  if (missing.length > 0) {
    return (
      `Missing ${missing.join(", ")} in the address. Open this page as ` +
      `…${location.pathname}#api=<REST URL>&ws=<gateway URL>&session=<uuid>&token=<JWT> ` +
      "(scripts/up.sh prints ready-made links)."
    );
  }
  if (!UUID.test(cfg.session)) return `session=${cfg.session} is not a UUID.`;
  return cfg;
}

// --- the host's commands -------------------------------------------------------

/** Joins the session if it exists; otherwise offers the form that creates it. */
async function joinOrOffer() {
  if (client === undefined || config === undefined) return;
  joinFailed = false;
  try {
    await client.getSession(config.session);
    hideMessage();
  } catch (e) {
    if (e instanceof SyncKairosError && e.code === "SESSION_NOT_FOUND") {
      if (watcher?.state() === undefined && el.form !== null) el.form.hidden = false;
      return;
    }
    joinFailed = true;
    showMessage(`Could not read the session: ${describe(e)}`);
  }
}

function wireControls() {
  el.form?.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void create();
  });
  el.control?.addEventListener("change", showControlFields);
  showControlFields();
  el.start?.addEventListener("click", () => void command("start"));
  el.pause?.addEventListener("click", () => {
    const status = watcher?.state()?.status;
    void command(status === "paused" ? "resume" : "pause");
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.code !== "Space" && ev.key !== " ") return;
    if (isTextField(ev.target)) return;
    ev.preventDefault(); // no scrolling, and no click of a focused button
    if (ev.repeat) return;
    if (watcher?.state()?.status === "running") switchTurn().catch(showCommandError);
  });
  document.addEventListener("keyup", (ev) => {
    if ((ev.code === "Space" || ev.key === " ") && !isTextField(ev.target)) ev.preventDefault();
  });
}

function isTextField(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement;
}

/** Shows the form's fields of the chosen control (the others are hidden and not submitted). */
function showControlFields() {
  if (el.form === null || el.control === null) return;
  const kind = el.control.value;
  for (const label of el.form.querySelectorAll("label[data-for]")) {
    const on = label.dataset.for.split(" ").includes(kind);
    label.hidden = !on;
    const input = label.querySelector("input");
    if (input !== null) input.disabled = !on;
  }
  setText(el.controlHint, CONTROL_HINTS[kind] ?? "");
  // The classical FIDE game is 90 minutes; the others start from 5.
  if (el.minutes !== null) {
    if (kind === "fide" && el.minutes.value === "5") el.minutes.value = "90";
    else if (kind !== "fide" && el.minutes.value === "90") el.minutes.value = "5";
  }
}

/** The form's control as the create body's fields: `{increment_ms}` or `{time_control}`; a string says what is wrong. */
function controlFields() {
  const kind = el.control?.value ?? "fischer";
  const num = (input) => Number(input?.value);
  const ms = (x, unit) => Math.round(x * unit);
  switch (kind) {
    case "fischer": {
      const inc = num(el.increment);
      return inc >= 0 ? { increment_ms: ms(inc, 1000) } : "The increment must be 0 or more.";
    }
    case "bronstein":
    case "simple_delay": {
      const d = num(el.delay);
      return d >= 0 ? { time_control: { type: kind, delay_ms: ms(d, 1000) } } : "The delay must be 0 or more.";
    }
    case "byoyomi": {
      const n = num(el.periods);
      const p = num(el.period);
      if (!(Number.isInteger(n) && n >= 1 && p > 0)) return "Byo-yomi needs at least 1 period, of more than 0 seconds.";
      return { time_control: { type: "byoyomi", periods: n, period_ms: ms(p, 1000) } };
    }
    case "canadian": {
      const m = num(el.moves);
      const b = num(el.block);
      if (!(Number.isInteger(m) && m >= 1 && b > 0)) return "A Canadian block needs at least 1 move and more than 0 minutes.";
      return { time_control: { type: "canadian", moves: m, period_ms: ms(b, 60_000) } };
    }
    case "hourglass":
      return { time_control: { type: "hourglass" } };
    case "fide":
      return { time_control: FIDE };
    default:
      return `Unknown time control ${kind}.`;
  }
}

async function create() {
  if (client === undefined || config === undefined || el.minutes === null) return;
  const minutes = Number(el.minutes.value);
  if (!(minutes > 0)) {
    showMessage("Minutes must be above 0.");
    return;
  }
  const control = controlFields();
  if (typeof control === "string") {
    showMessage(control);
    return;
  }
  const totalMs = Math.round(minutes * 60_000);
  const ids = [randomUuid(), randomUuid()];
  const names = Object.fromEntries(ids.map((id, i) => [id, DEFAULT_NAMES[i]]));
  setDisabled(el.createButton, true);
  hideMessage();
  try {
    const created = await client.createSession({
      session_id: config.session,
      sync_mode: "per_participant",
      total_time_ms: totalMs,
      ...control,
      participants: ids.map((participant_id, participant_index) => ({
        participant_id,
        participant_index,
        total_time_ms: totalMs,
      })),
      metadata: { names },
    });
    watcher?.offer(created); // shown now, not when the socket's copy arrives
  } catch (e) {
    // Someone else created it meanwhile: join theirs.
    if (!(e instanceof SyncKairosError && e.code === "SESSION_EXISTS")) {
      showMessage(`Could not create the game: ${describe(e)}`);
      setDisabled(el.createButton, false);
      return;
    }
  }
  // The gateway pushes the new session to the watcher; should that push have
  // crossed the socket's own first read, ask for the state once more.
  watcher?.waitFor(() => true, { timeoutMs: 2_000 }).catch(() => watcher?.resync());
}

/** Switches the running turn at the version shown; resolves with Date.now() just before the REST call. */
async function switchTurn() {
  const state = watcher?.state();
  if (client === undefined || config === undefined) throw new Error("read-only page: no commands here");
  if (state === undefined) throw new Error("no session state yet");
  if (state.status !== "running") throw new Error(`the clock is ${state.status}, not running`);
  const at = Date.now();
  // If-Match: a double tap on a stale screen cannot switch twice.
  await client.switchTurn(config.session, { ifMatch: state.version });
  return at;
}

/** start, pause or resume at the version shown. */
async function command(name) {
  const state = watcher?.state();
  if (client === undefined || config === undefined || state === undefined || commandInFlight) return;
  commandInFlight = true;
  try {
    watcher?.offer(await client[name](config.session, { ifMatch: state.version }));
    hideMessage();
  } catch (e) {
    showCommandError(e);
  } finally {
    commandInFlight = false;
  }
}

function showCommandError(e) {
  // A newer state crossed this command: the screen catches up by itself.
  if (e instanceof SyncKairosError && e.code === "CONFLICT") return;
  showMessage(describe(e));
}

function describe(e) {
  if (e instanceof SyncKairosError) {
    // A refused create says which field broke which rule.
    const details = Array.isArray(e.details) ? e.details.map((d) => `${d.field}: ${d.message}`).join("; ") : "";
    return `${e.code}${e.status ? ` (${e.status})` : ""}: ${e.message}${details ? ` (${details})` : ""}`;
  }
  return e instanceof Error ? e.message : String(e);
}

// --- drawing ------------------------------------------------------------------

/** One frame: the clocks, the buttons and the status line, from the watcher. */
function draw() {
  if (watcher === undefined) return;
  const state = watcher.state();
  setText(el.status, statusLine(state));
  if (state === undefined) return;
  const live = watcher.clocks();
  ensureFaces(state);
  const running = state.status === "running";
  setText(el.summary, summaryOf(state));
  el.summary.hidden = false;
  live.forEach((c, i) => {
    const face = faces[i];
    if (face === undefined) return;
    // In byo-yomi, once main time is over, the face counts the period down.
    const shown = c.periodLeftMs !== null && c.remainingMs === 0 && c.periodsLeft ? c.periodLeftMs : c.remainingMs;
    const text = formatClock(shown);
    setText(face.querySelector(".time"), text);
    face.classList.toggle("long", text.length > 7);
    setText(face.querySelector(".detail"), detailOf(c, c.isActive && running));
    setText(face.querySelector(".flag"), c.hasExpired ? "Out of time" : c.isActive && running ? "Running" : "");
    face.classList.toggle("active", c.isActive);
    face.classList.toggle("running", c.isActive && running);
    face.classList.toggle("expired", c.hasExpired);
    face.classList.toggle("low", (c.untilFallMs ?? c.remainingMs) < LOW_TIME_MS && !c.hasExpired);
    if (face instanceof HTMLButtonElement) setDisabled(face, !(running && c.isActive));
  });
  if (role === "host" && el.controls !== null) {
    el.controls.hidden = false;
    setDisabled(el.start, state.status !== "pending");
    setText(el.pause, state.status === "paused" ? "Resume" : "Pause");
    setDisabled(el.pause, state.status !== "running" && state.status !== "paused");
  }
  el.board.hidden = false;
  if (!chessClock.ready) {
    chessClock.ready = true;
    document.body.dataset.ready = "true";
  }
}

/** One face per participant (two for a game made here), named from the metadata. */
function ensureFaces(state) {
  const names = state.metadata?.names ?? {};
  if (faces.length !== state.participants.length) {
    el.board.replaceChildren();
    faces = state.participants.map((p, i) => {
      const face = document.createElement(role === "host" ? "button" : "div");
      face.className = "clock";
      face.dataset.index = String(i);
      if (face instanceof HTMLButtonElement) {
        face.type = "button";
        face.disabled = true;
        face.addEventListener("click", () => {
          // Only the side whose turn it is can end it (the button is disabled otherwise).
          const c = watcher?.clocks()[i];
          if (c?.isActive && watcher?.state()?.status === "running") switchTurn().catch(showCommandError);
        });
      } else {
        face.setAttribute("role", "group");
      }
      face.innerHTML = '<span class="name"></span><span class="time"></span><span class="detail"></span><span class="flag"></span>';
      el.board.append(face);
      return face;
    });
  }
  state.participants.forEach((p, i) => {
    const name = typeof names[p.participant_id] === "string" ? names[p.participant_id] : DEFAULT_NAMES[i] ?? `Player ${i + 1}`;
    const face = faces[i];
    if (face !== undefined) setText(face.querySelector(".name"), name);
  });
}

/** A duration for people: `30 s`, `5 min`, `1.5 s`. */
function duration(ms) {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${ms / 1000} s`;
}

/** A control in a few words, after the main time (`5 min` + this). */
function controlText(control) {
  switch (control?.type) {
    case undefined:
      return "";
    case "fischer":
      return control.increment_ms > 0 ? ` + ${duration(control.increment_ms)} a move (Fischer)` : "";
    case "bronstein":
      return `, Bronstein delay ${duration(control.delay_ms)}`;
    case "simple_delay":
      return `, US delay ${duration(control.delay_ms)}`;
    case "byoyomi":
      return `, then byo-yomi ${control.periods} × ${duration(control.period_ms)}`;
    case "canadian":
      return `, then ${control.moves} moves in ${duration(control.period_ms)} (Canadian)`;
    case "hourglass":
      return " hourglass: the time one side uses goes to the other";
    case "stages":
      return control.stages
        .map((st, i) => {
          const parts = [];
          if (i > 0) parts.push(`then + ${duration(st.add_ms ?? 0)}`);
          if (st.moves) parts.push(`for ${st.moves} moves`);
          if (st.increment_ms) parts.push(`${duration(st.increment_ms)} a move`);
          if (st.delay_ms) parts.push(`${st.delay_kind === "simple" ? "US" : "Bronstein"} delay ${duration(st.delay_ms)}`);
          return parts.join(", ");
        })
        .map((t, i) => (i === 0 ? (t ? ` ${t}` : "") : `; ${t}`))
        .join("");
    default:
      return ` (${control.type})`;
  }
}

/** The game's time control, one line for both pages. */
function summaryOf(state) {
  const texts = clocks(state, state.server_time_ms).map((c) => controlText(c.control));
  const main = duration(state.total_time_ms);
  if (texts.every((t) => t === texts[0])) return `${main}${texts[0] ?? ""}`;
  // Each participant with its own control.
  const names = state.metadata?.names ?? {};
  return state.participants
    .map((p, i) => `${typeof names[p.participant_id] === "string" ? names[p.participant_id] : DEFAULT_NAMES[i] ?? `Player ${i + 1}`}:${texts[i]}`)
    .join(" · ");
}

/**
 * What a face shows under its time: what its control needs beyond the main
 * time. A delay counts down in the running turn; a waiting clock shows the
 * whole delay its turn will begin with.
 */
function detailOf(c, running) {
  const control = c.control;
  switch (control?.type) {
    case "bronstein":
    case "simple_delay":
      return `delay ${formatClock(running ? c.delayLeftMs ?? 0 : control.delay_ms)}`;
    case "byoyomi": {
      if (c.periodLeftMs === null) return `then ${c.periodsLeft} × ${duration(control.period_ms)}`;
      if (!c.periodsLeft) return "no period left";
      return `period ${control.periods - c.periodsLeft + 1} of ${control.periods}, ${formatClock(c.periodLeftMs)}`;
    }
    case "canadian":
      if (!c.overtime) return `then ${control.moves} moves in ${duration(control.period_ms)}`;
      return `${c.movesLeft} ${c.movesLeft === 1 ? "move" : "moves"} left in the block`;
    case "stages": {
      const stage = c.stage ?? 0;
      const parts = [`stage ${stage + 1} of ${control.stages.length}`];
      if (control.stages[stage]?.moves) parts.push(`${c.movesLeft} ${c.movesLeft === 1 ? "move" : "moves"} to go`);
      const delay = control.stages[stage]?.delay_ms ?? 0;
      if (delay > 0) parts.push(`delay ${formatClock(running ? c.delayLeftMs ?? 0 : delay)}`);
      return parts.join(" · ");
    }
    default:
      return "";
  }
}

function statusLine(state) {
  const parts = [];
  if (state === undefined) parts.push(deleted ? "deleted" : role === "host" ? "no game yet" : "waiting for the host's game");
  else parts.push(`${deleted ? "deleted" : state.status} · version ${state.version}`);
  const clock = watcher?.clock;
  if (clock?.synced) {
    const sign = clock.offsetMs >= 0 ? "+" : "−";
    parts.push(`server offset ${sign}${Math.abs(clock.offsetMs)} ± ${clock.errorBoundMs} ms`);
  } else {
    parts.push("server offset not measured yet");
  }
  parts.push(`connection ${connectionText()}`);
  return parts.join(" · ");
}

function connectionText() {
  const { state, code, reason } = connection;
  const why = code === undefined ? "" : ` (closed ${code}${reason ? ` ${reason}` : ""})`;
  return `${state}${why}`;
}

// --- small helpers ----------------------------------------------------------------

/**
 * A fresh v4 UUID: crypto.randomUUID() where the page is a secure context
 * (https, localhost, 127.0.0.1), else the same from crypto.getRandomValues()
 * (a phone opening the page over plain http on the LAN).
 */
function randomUuid() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function byId(id) {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`#${id} is missing from the page`);
  return node;
}

/** Sets text only when it changed (no needless layout, no repeated announcements). */
function setText(node, text) {
  if (node !== null && node.textContent !== text) node.textContent = text;
}

function setDisabled(node, disabled) {
  if (node !== null && node.disabled !== disabled) node.disabled = disabled;
}

function showMessage(text) {
  el.message.textContent = text;
  el.message.hidden = false;
}

function hideMessage() {
  el.message.hidden = true;
  el.message.textContent = "";
}
