// The wasmgate console: reads the admin API every few seconds and draws what it answers.
// Data is only ever written with textContent (never parsed as HTML), and the admin token lives in
// this tab's sessionStorage and travels as an Authorization header, never in a URL.
"use strict";

const TOKEN_KEY = "wasmgate.admin-token";
const params = new URLSearchParams(location.search);
// `?refresh=SECONDS` (0.2 to 60) changes the refresh interval; the default suits a wall screen.
const INTERVAL_MS = Math.round(
  Math.min(60, Math.max(0.2, Number(params.get("refresh")) || 2)) * 1000,
);

const state = {
  // Refreshes started and finished, on <body data-started data-refreshes> for whoever watches.
  started: 0,
  refreshes: 0,
  timer: null,
  // The previous scrape of /metrics: series → value, and when it was taken.
  previous: null,
  metricsAvailable: null,
};

const $ = (id) => document.getElementById(id);

class Refused extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function get(path) {
  const headers = { Accept: path === "/metrics" ? "text/plain" : "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const res = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (res.status === 401) throw new Refused();
  return res;
}

async function getJson(path) {
  const res = await get(path);
  if (!res.ok) throw new Error(path + " answered " + res.status);
  return res.json();
}

// /metrics comes from the gateway's metrics; an older gateway answers 404 and the traffic
// table says so instead of failing the page.
async function getMetrics() {
  const res = await get("/metrics");
  if (res.status === 404) return null;
  if (!res.ok) throw new Error("/metrics answered " + res.status);
  return parseMetrics(await res.text());
}

// Prometheus text exposition: `name{label="value",...} number [timestamp]`.
function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split("\n")) {
    if (raw === "" || raw.startsWith("#")) continue;
    const m = line.exec(raw);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      for (const l of m[2].matchAll(label)) {
        labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
      }
    }
    samples.push({ name: m[1], labels, value: Number(m[3]), key: m[1] + "{" + (m[2] || "") + "}" });
  }
  return samples;
}

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

// A table row whose cells carry their column's name, for the narrow (phone) layout.
function row(table, cells, attrs) {
  const tr = document.createElement("tr");
  const heads = [...$(table).closest("table").querySelectorAll("thead th")].map((th) => th.textContent);
  cells.forEach((cell, i) => {
    const td = cell instanceof Node ? wrap(cell) : el("td", cell);
    td.dataset.label = heads[i] || "";
    tr.appendChild(td);
  });
  for (const [k, v] of Object.entries(attrs || {})) tr.dataset[k] = v;
  return tr;
}

function wrap(node) {
  if (node.tagName === "TD") return node;
  const td = document.createElement("td");
  td.appendChild(node);
  return td;
}

function fill(tbody, rows, empty) {
  const body = $(tbody);
  const columns = body.closest("table").querySelectorAll("thead th").length;
  if (rows.length === 0) {
    const td = el("td", empty, "empty");
    td.colSpan = columns;
    const tr = document.createElement("tr");
    tr.appendChild(td);
    rows = [tr];
  }
  body.replaceChildren(...rows);
}

function badge(text, kind) {
  return el("span", text, "badge " + kind);
}

function when(rfc3339) {
  if (!rfc3339) return "–";
  const t = new Date(rfc3339);
  if (isNaN(t)) return rfc3339;
  return t.toLocaleTimeString([], { hour12: false });
}

function rate(n) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

function percent(part, whole) {
  if (!whole) return "–";
  return ((100 * part) / whole).toFixed(part === whole || part === 0 ? 0 : 1) + " %";
}

function drawStatus(status) {
  $("gateway-version").textContent = "v" + status.version;
  const hash = status.config.hash;
  $("config-hash").textContent = hash ? hash.slice(0, 12) : "(built in code)";
  $("config-hash").title = hash;
  $("config-loaded").textContent = when(status.config.loadedAt);
  $("config-loaded").dateTime = status.config.loadedAt;
  const c = status.config;
  $("config-detail").textContent =
    (c.file ? c.file + ": " : "") +
    `${c.listeners} listeners, ${c.rules} rules, ${c.backendPools} backend pools, ${c.plugins} plugins; ` +
    `serving since ${when(c.loadedAt)}, gateway started ${when(status.startedAt)}.`;
  const rows = status.reloads.map((r) => {
    const detail = r.error
      ? r.error
      : r.changes
        ? summary(r.changes)
        : "";
    return row(
      "reload-rows",
      [
        when(r.at),
        badge(r.outcome, r.outcome === "applied" ? "healthy" : "unhealthy"),
        r.configHash ? r.configHash.slice(0, 12) : "–",
        detail,
      ],
      { outcome: r.outcome },
    );
  });
  fill("reload-rows", rows, "No reload since the gateway started.");
}

function summary(changes) {
  const parts = [`${changes.listeners} listeners, ${changes.rules} rules, ${changes.backendPools} pools`];
  if (changes.socketsAdded.length) parts.push("bound " + changes.socketsAdded.join("; "));
  if (changes.socketsRemoved.length) parts.push("closed " + changes.socketsRemoved.join("; "));
  if (changes.serversDraining.length) parts.push("draining " + changes.serversDraining.join("; "));
  return parts.join(" · ");
}

function drawHealth(view) {
  const rows = [];
  for (const pool of view.backendAddressPools) {
    const poolName = pool.backendAddressPool.name;
    if (pool.backendHttpSettingsCollection.length === 0) {
      rows.push(row("health-rows", [poolName, "–", "–", badge("unused", "unknown"), "", "Not used by any rule", "", "", ""], { pool: poolName }));
    }
    for (const settings of pool.backendHttpSettingsCollection) {
      const s = settings.backendHttpSettings;
      const settingsName = s.probe ? `${s.name} (probe ${s.probe})` : s.name;
      for (const server of settings.servers) {
        const health = badge(server.health, server.health.toLowerCase());
        health.classList.add("health");
        const reason = server.note ? `${server.healthProbeLog}; ${server.note}` : server.healthProbeLog;
        rows.push(
          row(
            "health-rows",
            [
              poolName,
              settingsName,
              el("code", server.address),
              health,
              server.inRotation ? "yes" : "no",
              reason,
              server.latencyMs === null ? "–" : server.latencyMs.toFixed(1) + " ms",
              when(server.lastProbeTime),
              server.consecutiveFailures,
            ],
            { pool: poolName, settings: s.name, server: server.address, health: server.health },
          ),
        );
      }
    }
  }
  fill("health-rows", rows, "No backend pools.");
}

function drawPlugins(plugins) {
  const rows = plugins.map((p) => {
    const version = p.contentHash ? el("code", p.contentHash.slice(0, 12)) : el("span", "not loaded", "muted");
    version.classList.add("version");
    if (p.contentHash) version.title = `${p.contentHash}\n${p.origin}${p.digest ? `\ndigest ${p.digest}` : ""}`;
    const errors = p.errors + (p.rejected ? ` (+${p.rejected} refused)` : "");
    const breaker = badge(
      p.breaker.replace("_", " ") + (p.breakerRetryInMs ? ` (${(p.breakerRetryInMs / 1000).toFixed(1)} s)` : ""),
      p.breaker === "closed" ? "healthy" : p.breaker === "open" ? "unhealthy" : "draining",
    );
    let shadow = "–";
    if (p.shadow) {
      shadow = `${percent(p.shadow.agreed, p.shadow.compared)} of ${p.shadow.compared} (candidate ${p.shadow.contentHash.slice(0, 12)})`;
    }
    return row(
      "plugin-rows",
      [
        el("strong", p.name),
        p.kind,
        version,
        when(p.loadedAt),
        p.calls,
        p.callP99Us === null ? "–" : p.callP99Us + " µs",
        errors,
        breaker,
        shadow,
      ],
      { plugin: p.name, version: p.contentHash || "" },
    );
  });
  fill("plugin-rows", rows, "No plugins.");
}

function drawMetrics(samples, now) {
  const note = $("metrics-note");
  if (samples === null) {
    state.metricsAvailable = false;
    note.hidden = false;
    note.textContent = "This gateway has no /metrics endpoint: request rates and WebSocket sessions are not available.";
    fill("traffic-rows", [], "–");
    fill("failure-rows", [], "–");
    fill("websocket-rows", [], "–");
    return;
  }
  state.metricsAvailable = true;
  const values = new Map(samples.map((s) => [s.key, s.value]));
  const prev = state.previous;
  const seconds = prev ? (now - prev.at) / 1000 : 0;
  // A counter's increase since the previous scrape (a restart resets it: count from zero).
  const delta = (s) => {
    if (!prev || seconds <= 0) return null;
    const before = prev.values.get(s.key);
    if (before === undefined) return null;
    return s.value >= before ? s.value - before : s.value;
  };
  state.previous = { at: now, values };

  const traffic = new Map();
  for (const s of samples) {
    if (s.name !== "wasmgate_requests_total") continue;
    const key = s.labels.listener + "\u0000" + (s.labels.rule || "");
    const t = traffic.get(key) || { listener: s.labels.listener, rule: s.labels.rule || "–", total: 0, errors: 0, dTotal: null, dErrors: null };
    t.total += s.value;
    const d = delta(s);
    if (d !== null) t.dTotal = (t.dTotal || 0) + d;
    if (s.labels.status_class === "5xx") {
      t.errors += s.value;
      if (d !== null) t.dErrors = (t.dErrors || 0) + d;
    }
    traffic.set(key, t);
  }
  note.hidden = true;
  fill(
    "traffic-rows",
    [...traffic.values()].map((t) => {
      const perSecond = t.dTotal === null ? null : t.dTotal / seconds;
      // The error rate over the last interval when there was traffic, else since the start.
      const errors = t.dTotal ? percent(t.dErrors || 0, t.dTotal) : percent(t.errors, t.total);
      return row("traffic-rows", [t.listener, t.rule, rate(perSecond), errors, t.total], { listener: t.listener, rule: t.rule });
    }),
    "No requests yet.",
  );
  fill(
    "failure-rows",
    samples
      .filter((s) => s.name === "wasmgate_failed_requests_total" && s.value > 0)
      .map((s) => {
        const d = delta(s);
        return row("failure-rows", [s.labels.listener || "–", s.labels.reason, rate(d === null ? null : d / seconds), s.value]);
      }),
    "None.",
  );
  fill(
    "websocket-rows",
    samples
      .filter((s) => s.name === "wasmgate_websocket_sessions_open")
      .map((s) => row("websocket-rows", [s.labels.backend_pool, s.value], { pool: s.labels.backend_pool })),
    "None.",
  );
}

function showLogin(message) {
  $("data").hidden = true;
  $("login").hidden = false;
  $("login-message").textContent = message;
  $("forget-token").hidden = true;
  setConnection("token needed", "unhealthy");
  document.body.dataset.auth = "required";
}

function setConnection(text, kind) {
  const c = $("connection");
  c.textContent = text;
  c.className = "badge " + kind;
}

async function refresh() {
  clearTimeout(state.timer);
  state.started += 1;
  document.body.dataset.started = String(state.started);
  try {
    const [status, health, plugins, metrics] = await Promise.all([
      getJson("/api/status"),
      getJson("/api/backend-health"),
      getJson("/api/plugins"),
      getMetrics(),
    ]);
    drawStatus(status);
    drawHealth(health);
    drawPlugins(plugins);
    drawMetrics(metrics, performance.now());
    $("login").hidden = true;
    $("data").hidden = false;
    $("forget-token").hidden = !token();
    document.body.dataset.auth = token() ? "token" : "open";
    setConnection("live", "healthy");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString([], { hour12: false });
  } catch (e) {
    if (e instanceof Refused) {
      const had = token() !== null;
      showLogin(had ? "The gateway refused this token. Enter the admin token." : "This gateway asks for its admin token.");
      document.body.dataset.auth = had ? "refused" : "required";
      state.refreshes += 1;
      document.body.dataset.refreshes = String(state.refreshes);
      // No polling with a refused token: wait for the operator.
      return;
    }
    setConnection("unreachable", "unhealthy");
    $("updated").textContent = String(e.message || e);
  }
  state.refreshes += 1;
  document.body.dataset.refreshes = String(state.refreshes);
  state.timer = setTimeout(refresh, INTERVAL_MS);
}

function start() {
  $("interval").textContent = String(INTERVAL_MS / 1000);
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    state.previous = null;
    refresh();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(state.timer);
    showLogin("Token forgotten. Enter the admin token.");
  });
  refresh();
}

start();
