// The admin dashboard: plain modules, no framework, no build step. It only talks to the admin API
// next to it (../ relative to this page), with the admin key as a Bearer token on every request.

import { drawChart, series } from "./charts.js";
import { follow as followStream } from "./sse.js";

const KEY_STORE = "mcp-gateway.admin-key";
const API = new URL("../", location.href);
const query = new URLSearchParams(location.search);
const REFRESH_MS = clamp(Number(query.get("refresh")) || 5, 1, 300) * 1000;
const HISTORY = 180; // chart samples kept per server
const LOG_LINES = 1000; // lines kept in the log view
const EVENT_ROWS = 100;
const STATES = ["running", "starting", "stopping", "stopped", "backoff", "failed"];

const $ = (id) => document.getElementById(id);
const ui = {
  login: $("login"), loginForm: $("login-form"), key: $("key"), loginError: $("login-error"),
  loginSubmit: $("login-submit"), session: $("session"), live: $("live"), logout: $("logout"),
  dashboard: $("dashboard"), notice: $("notice"), fleetBody: $("fleet-body"), fleetEmpty: $("fleet-empty"),
  fleetSummary: $("fleet-summary"), refresh: $("refresh"), detail: $("detail"), detailTitle: $("detail-title"),
  detailMeta: $("detail-meta"), detailError: $("detail-error"), detailTest: $("detail-test"),
  detailClose: $("detail-close"), log: $("log"), logStatus: $("log-status"), logFollow: $("log-follow"),
  logClear: $("log-clear"), serverEvents: $("server-events"), events: $("events"),
  endpointsBody: $("endpoints-body"),
  clusterBody: $("cluster-body"), clusterSummary: $("cluster-summary"),
};

const state = {
  key: null,
  servers: new Map(), // name -> summary from GET /admin/servers
  fetchedAt: 0, // performance.now() of that response, for the uptime ticker
  rows: new Map(), // name -> {tr, cells}
  history: new Map(), // name -> [{t, total, errors, p50, p95}]
  pending: new Map(), // name -> action in flight
  selected: null,
  session: null, // AbortController of everything that belongs to the signed-in session
  detailStream: null, // AbortController of the selected server's log stream
  timer: 0,
  ticker: 0,
  refreshQueued: 0,
  refreshing: null,
  refreshAgain: false,
};

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_error";
    this.requestId = err.request_id || null;
  }
  describe() {
    return this.requestId ? `${this.message} (request ${this.requestId})` : this.message;
  }
}

// -- the API --------------------------------------------------------------------------------------

function headers(extra = {}) {
  return { Authorization: `Bearer ${state.key}`, Accept: "application/json", ...extra };
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not the API's JSON error shape (a proxy page, say): the status says enough
  }
  return new ApiError(response.status, body);
}

async function api(path, { method = "GET", signal } = {}) {
  const response = await fetch(new URL(path, API), {
    method, headers: headers(), cache: "no-store", signal: signal || state.session?.signal,
  });
  if (response.status === 401) {
    signOut("The admin key was refused (it may have been revoked). Sign in again.");
    throw new Unauthorized();
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

// An SSE stream of the API, with the session's key; a refused key signs out.
function follow(path, handlers) {
  return followStream(new URL(path, API), {
    ...handlers,
    headers,
    failure,
    onUnauthorized: () => signOut("The admin key was refused (it may have been revoked). Sign in again."),
  });
}

// -- signing in and out ---------------------------------------------------------------------------

function showLogin(message = "") {
  ui.dashboard.hidden = true;
  ui.session.hidden = true;
  ui.login.hidden = false;
  ui.loginError.textContent = message;
  ui.key.value = "";
  ui.key.focus();
}

function signOut(message = "") {
  state.session?.abort();
  state.session = null;
  state.detailStream = null;
  clearInterval(state.timer);
  clearInterval(state.ticker);
  clearTimeout(state.refreshQueued);
  state.key = null;
  sessionStorage.removeItem(KEY_STORE);
  state.servers.clear();
  state.history.clear();
  state.pending.clear();
  state.rows.clear();
  state.selected = null;
  ui.fleetBody.replaceChildren();
  ui.events.replaceChildren();
  ui.detail.hidden = true;
  hideNotice();
  showLogin(message);
}

async function signIn(key) {
  state.key = key;
  state.session = new AbortController();
  const list = await api("servers"); // throws Unauthorized (and shows the login) on a bad key
  sessionStorage.setItem(KEY_STORE, key);
  ui.login.hidden = true;
  ui.loginError.textContent = "";
  ui.dashboard.hidden = false;
  ui.session.hidden = false;
  applyServers(list);
  applyEndpoints(await api("endpoints"));
  applyCluster(await api("cluster"));
  state.timer = setInterval(() => refresh(), REFRESH_MS);
  state.ticker = setInterval(tickUptime, 1000);
  startEvents(state.session.signal);
  loadEvents().catch(report);
  $("main").focus();
}

ui.loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = ui.key.value.trim();
  if (!key) {
    ui.loginError.textContent = "Enter an admin key.";
    return;
  }
  ui.loginSubmit.disabled = true;
  ui.loginError.textContent = "";
  try {
    await signIn(key);
  } catch (error) {
    if (!(error instanceof Unauthorized)) {
      state.session?.abort();
      state.session = null;
      state.key = null;
      ui.loginError.textContent = error instanceof ApiError
        ? (error.status === 403 ? `Refused: ${error.message}` : error.describe())
        : "The gateway cannot be reached.";
    } else {
      ui.loginError.textContent = "That key was not accepted.";
    }
  } finally {
    ui.loginSubmit.disabled = false;
  }
});

ui.logout.addEventListener("click", () => signOut("Signed out."));

// -- the fleet table ------------------------------------------------------------------------------

// One request at a time. Asked again while one is in flight (an event arrived meanwhile), it runs
// once more afterwards: the answer in flight may predate the event.
async function refresh() {
  if (!state.key) return;
  if (state.refreshing) {
    state.refreshAgain = true;
    return state.refreshing;
  }
  state.refreshing = (async () => {
    try {
      do {
        state.refreshAgain = false;
        applyServers(await api("servers"));
        applyEndpoints(await api("endpoints")); // a reload may have changed them
        applyCluster(await api("cluster"));
        if (state.selected) await loadDetail(state.selected, false);
      } while (state.refreshAgain && state.key);
    } catch (error) {
      report(error);
    } finally {
      state.refreshing = null;
    }
  })();
  return state.refreshing;
}

// Events arrive in bursts (stopping, stopped, starting, running): one refresh after the burst.
function refreshSoon() {
  clearTimeout(state.refreshQueued);
  state.refreshQueued = setTimeout(() => refresh(), 150);
}

ui.refresh.addEventListener("click", () => refresh());

function applyServers(list) {
  state.fetchedAt = performance.now();
  const now = Date.now() / 1000;
  const seen = new Set();
  for (const server of list.servers) {
    seen.add(server.name);
    state.servers.set(server.name, server);
    sample(server, now);
    renderRow(server);
  }
  for (const [name, row] of state.rows) {
    if (seen.has(name)) continue;
    row.tr.remove();
    state.rows.delete(name);
    state.servers.delete(name);
    state.history.delete(name);
    if (state.selected === name) closeDetail();
  }
  ui.fleetEmpty.hidden = list.servers.length > 0;
  const states = list.summary?.states || {};
  ui.fleetSummary.textContent = `${list.summary?.total ?? list.servers.length} servers · ` +
    Object.entries(states).map(([s, n]) => `${n} ${s}`).join(", ");
  if (state.selected) renderCharts(state.selected);
}

// -- the endpoints table --------------------------------------------------------------------------

function applyEndpoints(list) {
  const rows = list.endpoints.map((endpoint) => {
    const tr = document.createElement("tr");
    tr.dataset.endpoint = endpoint.path;
    const servers = endpoint.servers === null ? "all" : Object.keys(endpoint.servers).join(", ") || "none";
    const { roles, identities } = endpoint.auth;
    const who = [roles && `roles: ${roles.join(", ")}`, identities && `identities: ${identities.join(", ")}`]
      .filter(Boolean).join("; ") || "anyone the gateway admits";
    const counts = endpoint.counts;
    const values = {
      path: endpoint.path + (endpoint.default ? " (default)" : ""), name: endpoint.name, servers, auth: who,
      tools: counts.tools, prompts: counts.prompts, resources: counts.resources + counts.templates,
    };
    for (const [col, value] of Object.entries(values)) {
      cell(tr, col, typeof value === "number").textContent = String(value);
    }
    return tr;
  });
  ui.endpointsBody.replaceChildren(...rows);
}

// -- the cluster panel ----------------------------------------------------------------------------

// Every replica (one row each, from their heartbeats), redrawn whole: a handful of rows.
function applyCluster(view) {
  const rows = view.replicas.map((replica) => {
    const tr = document.createElement("tr");
    tr.dataset.replica = replica.replica;
    const name = cell(tr, "replica");
    name.textContent = replica.replica;
    if (replica.replica === view.replica) {
      const here = document.createElement("span");
      here.className = "type";
      here.textContent = "this replica";
      name.append(here);
    }
    cell(tr, "address").textContent = replica.address || "–";
    cell(tr, "up").textContent = replica.up_since ? new Date(replica.up_since).toLocaleString() : "–";
    cell(tr, "in-flight", true).textContent = String(replica.load.in_flight);
    const rate = replica.load.calls_per_second;
    cell(tr, "rate", true).textContent = rate == null ? "–" : rate.toFixed(1);
    const backends = cell(tr, "backends");
    backends.className = "backends";
    for (const [server, b] of Object.entries(replica.backends).sort(([x], [y]) => x.localeCompare(y))) {
      const chip = badge(b.state, "s");
      chip.dataset.server = server;
      chip.textContent = `${server} ${b.state}`;
      chip.title = `${server}: ${b.state}, ${b.restarts} restarts, ${b.in_flight} in flight`;
      backends.append(chip, " ");
    }
    return tr;
  });
  ui.clusterBody.replaceChildren(...rows);
  const count = `${rows.length} ${rows.length === 1 ? "replica" : "replicas"}`;
  ui.clusterSummary.textContent = !view.shared
    ? `${count} · a single process (no cluster.redis)`
    : view.reachable === false
      ? `${count} shown · Redis unreachable: only this replica can be seen`
      : count;
}

function sample(server, now) {
  const calls = server.calls || {};
  let points = state.history.get(server.name);
  if (!points) state.history.set(server.name, (points = []));
  const last = points[points.length - 1];
  // Event-driven refreshes can come close together; rates from tiny intervals are noise.
  if (last && now - last.t < 0.9) return;
  if (last && (calls.total ?? 0) < last.total) points.length = 0; // counters reset (server re-added)
  points.push({ t: now, total: calls.total ?? 0, errors: calls.errors ?? 0, p50: calls.p50_ms, p95: calls.p95_ms });
  if (points.length > HISTORY) points.splice(0, points.length - HISTORY);
}

function cell(tr, col, numeric = false) {
  const td = document.createElement("td");
  td.dataset.col = col;
  if (numeric) td.className = "num";
  tr.append(td);
  return td;
}

function button(label, action, name, handler) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = action;
  b.setAttribute("aria-label", `${label} ${name}`);
  b.addEventListener("click", handler);
  return b;
}

function renderRow(server) {
  const name = server.name;
  let row = state.rows.get(name);
  if (!row) {
    const tr = document.createElement("tr");
    tr.dataset.server = name;
    const cells = {};
    cells.name = cell(tr, "name");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "name-button";
    open.textContent = name;
    open.setAttribute("aria-label", `Details of ${name}`);
    open.setAttribute("aria-controls", "detail");
    open.addEventListener("click", () => openDetail(name));
    const type = document.createElement("span");
    type.className = "type";
    cells.name.append(open, type);
    cells.type = type;
    cells.state = cell(tr, "state");
    cells.health = cell(tr, "health");
    cells.protocol = cell(tr, "protocol");
    for (const col of ["uptime", "restarts", "tools", "calls", "errors", "latency"]) cells[col] = cell(tr, col, true);
    cells.actions = cell(tr, "actions");
    const actions = document.createElement("div");
    actions.className = "actions";
    cells.buttons = {};
    for (const [label, action] of [["Start", "start"], ["Stop", "stop"], ["Restart", "restart"]]) {
      cells.buttons[action] = button(label, action, name, () => act(name, action));
      actions.append(cells.buttons[action]);
    }
    const logs = button("Logs", "logs", name, () => openDetail(name));
    logs.setAttribute("aria-controls", "detail");
    actions.append(logs);
    cells.actions.append(actions);
    row = { tr, cells, opens: [open, logs] };
    state.rows.set(name, row);
    insertSorted(tr, name);
  }
  const { cells, tr } = row;
  cells.type.textContent = server.type + (server.required ? " · required" : "");
  setState(name, server.state);
  const health = server.health || {};
  cells.health.replaceChildren(badge(health.status || "unknown", "h"));
  if (health.last_error) {
    const sub = document.createElement("span");
    sub.className = "sub";
    sub.textContent = health.last_error;
    sub.title = health.last_error;
    cells.health.append(sub);
  }
  // The MCP revision the gateway speaks to it (found by probing at start); none while it is down.
  cells.protocol.textContent = server.protocol_version || "–";
  cells.uptime.textContent = uptime(server.uptime_seconds);
  cells.restarts.textContent = String(server.restarts);
  cells.tools.textContent = String(server.tools);
  const calls = server.calls || {};
  cells.calls.textContent = String(calls.total ?? 0);
  cells.errors.textContent = calls.total ? percent(calls.error_rate) : "–";
  cells.latency.textContent = calls.p50_ms == null ? "–" : `${ms(calls.p50_ms)} / ${ms(calls.p95_ms)}`;
  markSelected();
}

// The row whose details are open; its two opening buttons say so to assistive technology.
function markSelected() {
  for (const [name, row] of state.rows) {
    const on = state.selected === name;
    row.tr.dataset.selected = String(on);
    for (const b of row.opens) b.setAttribute("aria-expanded", String(on));
  }
}

function insertSorted(tr, name) {
  const after = [...ui.fleetBody.children].find((other) => other.dataset.server.localeCompare(name) > 0);
  ui.fleetBody.insertBefore(tr, after || null);
}

// The state cell and the buttons follow every event at once, ahead of the next full refresh.
function setState(name, value) {
  const row = state.rows.get(name);
  if (!row) return;
  const server = state.servers.get(name);
  if (server) server.state = value;
  const { cells, tr } = row;
  const pending = state.pending.get(name);
  cells.state.replaceChildren(badge(value, "s"));
  if (pending) {
    const note = document.createElement("span");
    note.className = "pending";
    note.textContent = `${pending} requested…`;
    cells.state.append(note);
  }
  tr.dataset.state = value;
  tr.setAttribute("aria-busy", String(Boolean(pending)));
  const b = cells.buttons;
  b.start.disabled = Boolean(pending) || value === "running" || value === "starting";
  b.stop.disabled = Boolean(pending) || value === "stopped" || value === "stopping";
  b.restart.disabled = Boolean(pending);
}

function badge(value, prefix) {
  const span = document.createElement("span");
  span.className = `badge ${prefix}-${value}`;
  span.textContent = value;
  return span;
}

function tickUptime() {
  const elapsed = (performance.now() - state.fetchedAt) / 1000;
  for (const [name, server] of state.servers) {
    const row = state.rows.get(name);
    if (row && server.uptime_seconds != null && server.state === "running") {
      row.cells.uptime.textContent = uptime(server.uptime_seconds + elapsed);
    }
  }
}

async function act(name, action) {
  state.pending.set(name, action);
  setState(name, state.servers.get(name)?.state || "unknown");
  try {
    const result = await api(`servers/${encodeURIComponent(name)}/${action}`, { method: "POST" });
    const took = result.duration_ms != null ? ` in ${(result.duration_ms / 1000).toFixed(1)} s` : "";
    if (result.ok) notice(`${name}: ${action} done${took}; now ${result.state}.`, "ok");
    else notice(`${name}: ${action} failed: ${result.error || result.state}`, "error");
  } catch (error) {
    report(error, `${name}: ${action} failed`);
  } finally {
    state.pending.delete(name);
    await refresh();
    const server = state.servers.get(name);
    if (server) setState(name, server.state);
  }
}

// -- one server: charts, log, events --------------------------------------------------------------

function openDetail(name) {
  if (state.selected !== name) {
    state.detailStream?.abort();
    state.selected = name;
    ui.log.replaceChildren();
    ui.serverEvents.replaceChildren();
    ui.detailTitle.textContent = name;
    ui.detail.dataset.server = name;
    ui.detail.hidden = false;
    markSelected();
    const stream = new AbortController();
    state.session.signal.addEventListener("abort", () => stream.abort(), { once: true });
    state.detailStream = stream;
    followLog(name, stream.signal);
    renderCharts(name);
    loadDetail(name, true).catch(report);
  }
  ui.detail.scrollIntoView({ block: "start", behavior: "smooth" });
  ui.detailTitle.focus?.();
}

function closeDetail() {
  state.detailStream?.abort();
  state.detailStream = null;
  const name = state.selected;
  state.selected = null;
  ui.detail.hidden = true;
  delete ui.detail.dataset.server;
  markSelected();
  if (name) state.rows.get(name)?.cells.name.querySelector("button")?.focus();
}

ui.detailClose.addEventListener("click", closeDetail);

async function loadDetail(name, withEvents) {
  const detail = await api(`servers/${encodeURIComponent(name)}?logs=0&events=${withEvents ? 30 : 0}`);
  if (state.selected !== name) return;
  ui.detailError.hidden = true;
  const bits = [detail.type];
  if (detail.process?.pid) bits.push(`pid ${detail.process.pid}`);
  if (detail.process?.exit_code != null) bits.push(`last exit ${detail.process.exit_code}`);
  const tools = detail.catalogue?.tools || [];
  bits.push(`${tools.filter((t) => t.exposed).length} of ${tools.length} tools exposed`);
  if (detail.started_at) bits.push(`up since ${new Date(detail.started_at).toLocaleTimeString()}`);
  if (detail.dormant) bits.push("dormant (wakes on the next call)");
  if (detail.health?.last_test) {
    const t = detail.health.last_test;
    bits.push(`last test ${t.ok ? "passed" : `failed: ${t.error}`}`);
  }
  ui.detailMeta.textContent = bits.join(" · ");
  if (withEvents) {
    ui.serverEvents.replaceChildren(...detail.events.map(eventItem));
  }
}

ui.detailTest.addEventListener("click", async () => {
  const name = state.selected;
  if (!name) return;
  ui.detailTest.disabled = true;
  try {
    const report = await api(`servers/${encodeURIComponent(name)}/test`, { method: "POST" });
    const total = report.timings?.total_ms;
    if (report.ok) notice(`${name}: connection test passed in ${ms(total)} (${report.tools} tools).`, "ok");
    else notice(`${name}: connection test failed: ${report.error}`, "error");
    await loadDetail(name, false);
  } catch (error) {
    report(error, `${name}: connection test failed`);
  } finally {
    ui.detailTest.disabled = false;
  }
});

function followLog(name, signal) {
  ui.logStatus.textContent = "connecting…";
  follow(`servers/${encodeURIComponent(name)}/logs?follow=1&tail=200`, {
    signal,
    onOpen() {
      ui.log.replaceChildren(); // a reconnect sends the backlog again
      ui.logStatus.textContent = "live";
    },
    onDown(error) {
      ui.logStatus.textContent = `reconnecting (${error.message || "disconnected"})…`;
    },
    onEvent(message) {
      const data = JSON.parse(message.data);
      if (message.event === "log") appendLog(data);
      else if (message.event === "lost") appendMark(`… ${data.lost} lines skipped (the view was too slow)`, "lost");
      else if (message.event === "end") {
        appendMark(`— the server was removed (${data.reason}) —`, "mark");
        ui.logStatus.textContent = "ended";
        return false;
      }
      return true;
    },
  });
}

function appendLog(line) {
  const ts = document.createElement("span");
  ts.className = "ts";
  ts.textContent = clock(line.ts);
  const row = document.createElement("span");
  row.className = "line";
  row.append(ts, ` ${line.text}\n`);
  pushLog(row);
}

function appendMark(text, kind) {
  const row = document.createElement("span");
  row.className = kind;
  row.textContent = `${text}\n`;
  pushLog(row);
}

function pushLog(row) {
  const stick = ui.logFollow.checked;
  ui.log.append(row);
  while (ui.log.childElementCount > LOG_LINES) ui.log.firstElementChild.remove();
  if (stick) ui.log.scrollTop = ui.log.scrollHeight;
}

ui.logClear.addEventListener("click", () => ui.log.replaceChildren());

// -- charts ---------------------------------------------------------------------------------------

function renderCharts(name) {
  const s = series(state.history.get(name) || []);
  const chart = (kind, lines, options) =>
    drawChart(ui.detail.querySelector(`[data-chart="${kind}"]`), lines, { ...options, name });
  chart("rate", [s.rate], { unit: (v) => `${v.toFixed(v < 10 ? 2 : 1)}/s`, floor: 1, what: "Calls per second" });
  chart("errors", [s.errors], { unit: (v) => `${v.toFixed(0)} %`, floor: 5, what: "Error rate" });
  chart("latency", [s.p50, s.p95], { unit: ms, floor: 1, what: "Latency p50 and p95" });
}

// -- the event log --------------------------------------------------------------------------------

async function loadEvents() {
  const page = await api(`events?limit=${EVENT_ROWS}`);
  // The stream may already have delivered newer ones: keep those and skip duplicates.
  const have = new Set([...ui.events.children].map((li) => li.dataset.id));
  for (const event of page.events) {
    if (!have.has(String(event.id))) ui.events.append(eventItem(event));
  }
}

function startEvents(signal) {
  follow("events/stream", {
    signal,
    resume: true,
    onOpen() {
      setLive("on", "Live");
      refreshSoon(); // whatever happened while the stream was down
    },
    onDown() {
      setLive("retry", "Reconnecting…");
    },
    onEvent(message) {
      if (message.event === "lost") {
        refreshSoon();
        return true;
      }
      if (message.event !== "event") return true;
      const event = JSON.parse(message.data);
      ui.events.prepend(eventItem(event));
      while (ui.events.childElementCount > EVENT_ROWS) ui.events.lastElementChild.remove();
      if (event.server && event.server === state.selected) {
        ui.serverEvents.prepend(eventItem(event));
        while (ui.serverEvents.childElementCount > 50) ui.serverEvents.lastElementChild.remove();
      }
      if (event.type === "transition" && event.server && STATES.includes(event.new)) {
        setState(event.server, event.new);
      }
      refreshSoon();
      return true;
    },
  });
}

function setLive(value, text) {
  ui.live.dataset.live = value;
  ui.live.textContent = text;
}

function eventItem(event) {
  const li = document.createElement("li");
  if (event.id != null) li.dataset.id = String(event.id);
  li.className = `sev-${event.severity}`;
  const time = document.createElement("time");
  time.dateTime = event.time;
  time.textContent = clock(event.ts);
  const what = document.createElement("span");
  what.className = "what";
  const reason = document.createElement("span");
  if (event.type === "transition") {
    what.textContent = `${event.server}: ${event.old} → ${event.new}`;
    reason.textContent = event.reason || "";
  } else {
    what.textContent = `${event.actor} ${event.action}${event.server ? ` ${event.server}` : ""}: ${event.outcome}`;
    reason.textContent = event.reason || "";
  }
  li.append(time, what, reason);
  return li;
}

// -- notices and formatting -----------------------------------------------------------------------

let noticeTimer = 0;

function notice(text, kind = "info") {
  clearTimeout(noticeTimer);
  ui.notice.textContent = text;
  ui.notice.dataset.kind = kind;
  ui.notice.setAttribute("role", kind === "error" ? "alert" : "status");
  ui.notice.hidden = false;
  noticeTimer = setTimeout(hideNotice, kind === "error" ? 15_000 : 6_000);
}

function hideNotice() {
  ui.notice.hidden = true;
  ui.notice.textContent = "";
}

function report(error, prefix = "") {
  if (error instanceof Unauthorized || error?.name === "AbortError") return;
  const text = error instanceof ApiError ? error.describe() : `the gateway cannot be reached (${error.message})`;
  notice(prefix ? `${prefix}: ${text}` : text, "error");
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

function uptime(seconds) {
  if (seconds == null) return "–";
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function ms(value) {
  if (value == null) return "–";
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
}

function percent(rate) {
  return `${(rate * 100).toFixed(rate > 0 && rate < 0.1 ? 1 : 0)} %`;
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

// -- start ----------------------------------------------------------------------------------------

const saved = sessionStorage.getItem(KEY_STORE);
if (saved) {
  signIn(saved).catch((error) => {
    if (!(error instanceof Unauthorized)) {
      state.session?.abort();
      state.session = null;
      state.key = null;
      showLogin(error instanceof ApiError ? error.describe() : "The gateway cannot be reached.");
    }
  });
} else {
  showLogin();
}
