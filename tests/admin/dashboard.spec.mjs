// Drives the admin dashboard in a real headless Chromium (playwright-core, no downloaded browser).
// Run by tests/admin/test_dashboard.py, which starts the gateway and reads the one JSON line this
// script prints on stdout. Progress goes to stderr. Everything it waits for is bounded.
//
// env: GATEWAY_BASE (http://127.0.0.1:PORT), ADMIN_KEY, CHROMIUM (executable), SERVERS (JSON list),
//      TARGET (the server to restart and follow), SCREENSHOT (PNG path), PLAYWRIGHT (module path),
//      SECRET (a string that must never be shown), STEP_TIMEOUT_MS (per wait, default 60000),
//      REPLICAS (how many replicas the cluster panel must list, default 1), ONLY ("cluster": stop
//      once the cluster panel is checked)

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const env = process.env;
const base = env.GATEWAY_BASE;
const servers = JSON.parse(env.SERVERS);
const target = env.TARGET;
const STEP = Number(env.STEP_TIMEOUT_MS || 60_000);
const { chromium } = await import(pathToFileURL(env.PLAYWRIGHT).href);

const replicas = Number(env.REPLICAS || 1);
const result = { steps: [], console_errors: [], page_errors: [], foreign_requests: [] };
class StopHere {} // thrown once what ONLY asks for is checked: the run ends there, successfully
const log = (...parts) => console.error("[dashboard.spec]", ...parts);
const step = (name, data = {}) => {
  result.steps.push(name);
  Object.assign(result, data);
  log(name, JSON.stringify(data));
};

const profile = mkdtempSync(join(tmpdir(), "dashboard-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: env.CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
    ],
    viewport: { width: 1400, height: 1100 },
    timeout: STEP,
  });
  context.setDefaultTimeout(STEP);
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (message) => {
    // The refused sign-in and the forged key are expected 401s; anything else is a fault.
    if (message.type() === "error" && !/status of 401/.test(message.text())) {
      result.console_errors.push(message.text());
    }
  });
  page.on("pageerror", (error) => result.page_errors.push(String(error)));
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(base + "/") && !url.startsWith("data:")) result.foreign_requests.push(url);
  });

  // 1. /admin/ui redirects to the page, which asks for the key.
  await page.goto(`${base}/admin/ui?refresh=1`);
  await page.getByLabel("Admin key").waitFor();
  step("login-form", { url: page.url(), title: await page.title() });

  // 2. A wrong key is refused on the form.
  await page.getByLabel("Admin key").fill("not-the-admin-key");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#login-error").filter({ hasText: /not accepted/ }).waitFor();
  step("wrong-key", { wrong_key_message: await page.locator("#login-error").textContent() });

  // 3. The right key shows the fleet, every server running, and the event stream goes live.
  await page.getByLabel("Admin key").fill(env.ADMIN_KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  const row = (name) => page.locator(`#fleet-body tr[data-server="${name}"]`);
  for (const name of servers) {
    await page.locator(`#fleet-body tr[data-server="${name}"][data-state="running"]`).waitFor();
  }
  await page.locator('#live[data-live="on"]').waitFor();
  const table = async () => page.$$eval("#fleet-body tr", (rows) => rows.map((tr) => {
    const text = (col) => tr.querySelector(`[data-col="${col}"]`).textContent.trim();
    return {
      name: tr.dataset.server, state: tr.dataset.state, health: text("health"), protocol: text("protocol"),
      uptime: text("uptime"),
      restarts: Number(text("restarts")), tools: Number(text("tools")), calls: Number(text("calls")),
      errors: text("errors"), latency: text("latency"),
    };
  }));
  const headers = await page.$$eval("#fleet thead th", (ths) => ths.map((th) => th.textContent.trim()));
  await page.locator("#endpoints-body tr").first().waitFor();
  const endpoints = await page.$$eval("#endpoints-body tr", (rows) => rows.map((tr) => Object.fromEntries(
    [...tr.querySelectorAll("[data-col]")].map((td) => [td.dataset.col, td.textContent.trim()]))));
  step("fleet", {
    endpoints,
    headers, fleet_before: await table(), session_key_stored: await page.evaluate(
      () => sessionStorage.getItem("mcp-gateway.admin-key") !== null),
  });

  // 3b. The cluster panel: every replica with each backend's state on it.
  await page.waitForFunction(({ count, rows }) => {
    const chips = [...document.querySelectorAll("#cluster-body tr .badge")];
    return document.querySelectorAll("#cluster-body tr").length === rows && chips.length === count * rows &&
      chips.every((chip) => chip.textContent.endsWith(" running"));
  }, { count: servers.length, rows: replicas }, { timeout: STEP });
  step("cluster", {
    cluster: await page.$$eval("#cluster-body tr", (rows) => rows.map((tr) => ({
      replica: tr.dataset.replica,
      text: tr.querySelector('[data-col="replica"]').textContent,
      backends: [...tr.querySelectorAll(".badge")].map((chip) => chip.textContent),
      in_flight: tr.querySelector('[data-col="in-flight"]').textContent,
    }))),
    cluster_summary: await page.locator("#cluster-summary").textContent(),
  });
  if (env.ONLY === "cluster") throw new StopHere();

  // 4. The target's log view: the backlog of its stderr.
  await page.getByRole("button", { name: `Logs ${target}` }).click();
  await page.locator(`#detail[data-server="${target}"]`).waitFor();
  await page.locator("#log-status").filter({ hasText: "live" }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll("#log .line").length >= 3, null, { timeout: STEP });
  const pids = async () => page.$$eval("#log .line", (lines) => [
    ...new Set(lines.map((l) => (/misbehave\[(\d+)\]/.exec(l.textContent) || [])[1]).filter(Boolean)),
  ]);
  const logLinesBefore = await page.locator("#log .line").count();
  step("log-backlog", { log_lines_before: logLinesBefore, log_pids_before: await pids() });

  // 5. Restart from its row: the state leaves "running" (seen through the event stream, the table
  //    refreshes only every second) and comes back; the row is busy meanwhile.
  await page.evaluate((name) => {
    const tr = document.querySelector(`#fleet-body tr[data-server="${name}"]`);
    window.__states = [tr.dataset.state];
    window.__busy = false;
    // Records come in batches: each one's old value is the state before it, so a batch of several
    // events in one chunk still yields every state the row went through.
    const push = (value) => {
      if (value && window.__states.at(-1) !== value) window.__states.push(value);
    };
    new MutationObserver((records) => {
      const states = records.filter((r) => r.attributeName === "data-state");
      states.slice(1).forEach((r) => push(r.oldValue));
      push(tr.dataset.state);
      if (tr.getAttribute("aria-busy") === "true") window.__busy = true;
    }).observe(tr, { attributes: true, attributeOldValue: true, attributeFilter: ["data-state", "aria-busy"] });
  }, target);
  const restartsBefore = (await table()).find((s) => s.name === target).restarts;
  await page.getByRole("button", { name: `Restart ${target}` }).click();
  await page.waitForFunction(() => window.__states.some((s) => s !== "running"), null, { timeout: STEP });
  await page.waitForFunction(
    (name) => {
      const tr = document.querySelector(`#fleet-body tr[data-server="${name}"]`);
      return tr.dataset.state === "running" && tr.getAttribute("aria-busy") === "false";
    },
    target,
    { timeout: STEP },
  );
  await page.locator("#notice").filter({ hasText: `${target}: restart done` }).waitFor();
  step("restarted", {
    states_after_restart: await page.evaluate(() => window.__states.slice()),
    busy_seen: await page.evaluate(() => window.__busy),
    notice: await page.locator("#notice").textContent(),
  });

  // 6. The new process's stderr streams into the open log view.
  await page.waitForFunction(
    (before) => document.querySelectorAll("#log .line").length > before, logLinesBefore, { timeout: STEP },
  );
  await page.waitForFunction(() => {
    const seen = new Set();
    for (const l of document.querySelectorAll("#log .line")) {
      const m = /misbehave\[(\d+)\]/.exec(l.textContent);
      if (m) seen.add(m[1]);
    }
    return seen.size >= 2;
  }, null, { timeout: STEP });
  step("log-streamed", { log_lines_after: await page.locator("#log .line").count(), log_pids_after: await pids() });

  // 7. The test crashes the target once it is back (a supervisor restart): its count goes up.
  await page.waitForFunction(
    ({ name, before }) => {
      const tr = document.querySelector(`#fleet-body tr[data-server="${name}"]`);
      const restarts = Number(tr.querySelector('[data-col="restarts"]').textContent);
      return restarts > before && tr.dataset.state === "running";
    },
    { name: target, before: restartsBefore },
    { timeout: STEP * 2 },
  );
  step("crash-recovered", {
    restarts_before: restartsBefore,
    states_after_crash: await page.evaluate(() => window.__states.slice()),
  });

  // 8. The table settles (the full refresh after the events: healthy, tools listed again), and the
  //    charts hold enough samples of real traffic for every line.
  await page.waitForFunction(() => [...document.querySelectorAll("#fleet-body tr")].every((tr) => {
    const text = (col) => tr.querySelector(`[data-col="${col}"]`).textContent;
    return tr.dataset.state === "running" && text("health").startsWith("healthy") && Number(text("tools")) > 0;
  }), null, { timeout: STEP });
  await page.waitForFunction(() => {
    const points = (kind) => Number(document.querySelector(`[data-chart="${kind}"]`).dataset.points || 0);
    return points("rate") >= 8 && document.querySelectorAll('[data-chart="latency"] polyline').length >= 2;
  }, null, { timeout: STEP });
  const charts = await page.$$eval("#charts figure", (figures) => figures.map((f) => ({
    kind: f.dataset.chart,
    points: Number(f.dataset.points),
    latest: f.querySelector("[data-latest]").textContent,
    label: f.querySelector("svg").getAttribute("aria-label"),
    polylines: f.querySelectorAll("polyline").length,
  })));
  const events = await page.$$eval("#events li .what", (items) => items.map((i) => i.textContent));
  const bodyText = await page.locator("body").innerText();
  step("charts", {
    charts, fleet_after: await table(), events: events.slice(0, 30),
    secret_shown: env.SECRET ? bodyText.includes(env.SECRET) : null,
    masked_line: (await page.locator("#log .line").allTextContents()).find((t) => /REDACTED|\*\*\*/.test(t)) || null,
  });

  // 9. What it looks like.
  await page.locator("#log").evaluate((el) => { el.scrollTop = 0; });
  await page.screenshot({ path: env.SCREENSHOT, fullPage: true });
  // And on a phone-sized screen: the table scrolls sideways, the panels stack.
  await page.setViewportSize({ width: 420, height: 900 });
  const narrow = env.SCREENSHOT.replace(/\.png$/, "-narrow.png");
  await page.screenshot({ path: narrow, fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  step("screenshot", { screenshot: env.SCREENSHOT, narrow_screenshot: narrow, narrow_page_overflow: overflow });
  await page.setViewportSize({ width: 1400, height: 1100 });

  // 10. A key that stops working (revoked, or forged in storage) sends the page back to sign-in.
  await page.evaluate(() => sessionStorage.setItem("mcp-gateway.admin-key", "revoked-key"));
  await page.reload();
  await page.getByLabel("Admin key").waitFor();
  step("revoked", {
    revoked_message: await page.locator("#login-error").textContent(),
    dashboard_hidden: await page.locator("#dashboard").isHidden(),
    key_cleared: await page.evaluate(() => sessionStorage.getItem("mcp-gateway.admin-key") === null),
  });
  result.ok = true;
} catch (error) {
  if (error instanceof StopHere) {
    result.ok = true;
  } else {
    result.ok = false;
    result.error = String(error && error.stack ? error.stack : error);
    try {
      const page = context?.pages()[0];
      if (page && env.SCREENSHOT) await page.screenshot({ path: env.SCREENSHOT.replace(/\.png$/, ".failed.png") });
    } catch {
      // the browser itself is gone: the error above says why
    }
  }
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(result.ok ? 0 : 1);
