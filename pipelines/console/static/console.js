// fraudstream console: the live alert queue (server-sent events), an alert's detail, verdicts.
// Every value from the server is put in the page as text (textContent), never as HTML.
"use strict";

const state = { session: null, rows: new Map(), selected: null, events: null, query: "" };
const MAX_ROWS = 500;
const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

async function api(path, options = {}) {
  const headers = { "Accept": "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.method && options.method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  const response = await fetch(path, {
    method: options.method || "GET", headers, credentials: "same-origin",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = { error: `HTTP ${response.status}` }; }
  if (response.status === 401 && path !== "/api/login") sessionEnded();
  return { status: response.status, ok: response.ok, data };
}

const time = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);
const fixed = (x, n) => (x === null || x === undefined ? "–" : Number(x).toFixed(n));
const count = (x) => (x === null || x === undefined ? "?" : Number(x).toLocaleString());

// ------------------------------------------------------------------ session
async function start() {
  const answer = await api("/api/session");
  if (answer.ok) { signedIn(answer.data); } else { showLogin(); }
}

// an open console (no users) just takes a new session; otherwise the user signs in again
function sessionEnded() {
  if (state.session && state.session.open) { state.session = null; start(); } else { showLogin(); }
}

function showLogin() {
  if (state.events) { state.events.close(); state.events = null; }
  state.session = null;
  $("app").hidden = true; $("logout").hidden = true; $("login").hidden = false; $("who").textContent = "";
}

function signedIn(session) {
  state.session = session;
  $("login").hidden = true; $("app").hidden = false;
  $("logout").hidden = session.open;
  $("who").textContent = session.open ? `${session.user} (no sign-in)` : `${session.user} · ${session.role}`;
  loadQueue();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const answer = await api("/api/login", { method: "POST", body: { username: form.get("username"), password: form.get("password") } });
  $("login-error").textContent = answer.ok ? "" : answer.data.error;
  if (answer.ok) { event.target.reset(); signedIn(answer.data); }
});

$("logout").addEventListener("click", async () => { await api("/api/logout", { method: "POST", body: {} }); showLogin(); });

// ------------------------------------------------------------------ the queue
function filterQuery() {
  const form = new FormData($("filters"));
  const params = new URLSearchParams();
  for (const [key, value] of form.entries()) if (String(value).trim()) params.append(key, String(value).trim());
  return params.toString();
}

$("filters").addEventListener("submit", (event) => { event.preventDefault(); loadQueue(); });

async function loadQueue() {
  state.query = filterQuery();
  const answer = await api(`/api/alerts?${state.query}`);
  $("filter-error").textContent = answer.ok ? "" : answer.data.error;
  if (!answer.ok) return;
  state.rows.clear();
  $("queue").tBodies[0].replaceChildren();
  for (const row of answer.data.alerts.slice().reverse()) addRow(row, false);
  listen();
}

function rowElement(row) {
  const tr = el("tr", null, row.decision);
  tr.dataset.id = row.alert_id;
  tr.dataset.time = String(row.alert_time);
  const verdict = row.verdict ? `${row.verdict.verdict} (${row.verdict.analyst})` : "";
  const models = el("td", shortVersions(row.model_versions), "models");
  models.title = Object.entries(row.model_versions).map(([k, v]) => `${k} ${v}`).join("\n");
  tr.append(el("td", time(row.alert_time)), el("td", row.account_id), el("td", fixed(row.score, 4)),
    el("td", row.decision, "decision"), el("td", row.why, "why"), models,
    el("td", `${row.latency_ms} ms`), el("td", verdict));
  tr.addEventListener("click", () => showDetail(row.alert_id));
  if (state.selected === row.alert_id) tr.classList.add("selected");
  return tr;
}

// a row's model versions in a few words: the registered classifier (and challenger) whole, how many others
// (the cell's title and the alert's detail have them all), so the queue's other columns stay on screen
function shortVersions(versions) {
  const entries = Object.entries(versions);
  const named = entries.filter(([k]) => k === "classifier" || k === "challenger");
  const shown = named.length ? named : entries.slice(0, 1);
  const rest = entries.length - shown.length;
  return shown.map(([k, v]) => (k === "classifier" ? v : `${k} ${v}`)).join(", ") + (rest ? ` +${rest}` : "");
}

function addRow(row, fresh) {
  const body = $("queue").tBodies[0];
  const old = state.rows.get(row.alert_id);
  const tr = rowElement(row);
  state.rows.set(row.alert_id, tr);
  if (old) { old.replaceWith(tr); return; }
  if (fresh) tr.classList.add("fresh");
  // newest alert time first, as the server lists them: an alert that arrives late goes where its time puts it
  const after = [...body.rows].find((other) => Number(other.dataset.time) < row.alert_time);
  body.insertBefore(tr, after || null);
  while (body.rows.length > MAX_ROWS) { const last = body.lastElementChild; state.rows.delete(last.dataset.id); last.remove(); }
}

function listen() {
  if (state.events) state.events.close();
  const source = new EventSource(`/api/events?${state.query}`);
  state.events = source;
  source.onopen = () => { $("live").textContent = "● live"; $("live").className = "live on"; };
  source.onerror = () => { $("live").textContent = "○ reconnecting"; $("live").className = "live"; };
  source.addEventListener("alert", (event) => addRow(JSON.parse(event.data), true));
  source.addEventListener("verdict", (event) => {
    const row = JSON.parse(event.data);
    if (state.rows.has(row.alert_id)) addRow(row, false);
    if (state.selected === row.alert_id) showDetail(row.alert_id);
  });
  source.addEventListener("status", (event) => showStatus(JSON.parse(event.data)));
  source.addEventListener("resync", () => loadQueue());
  source.addEventListener("feed", (event) => { $("filter-error").textContent = JSON.parse(event.data).error; });
  source.addEventListener("expired", () => { source.close(); state.events = null; sessionEnded(); });
}

function showStatus(s) {
  showRegistry(s);
  if (s.state !== "running") { $("job").textContent = `job: ${s.state}${s.message ? " · " + s.message : ""}`; return; }
  $("job").textContent = [
    `${count(Math.round(s.events_per_s))} events/s`, `lag ${count(s.lag)}`, `${fixed(s.alerts_per_s, 1)} alerts/s`,
    `p99 ${fixed(s.latency_p99_ms, 0)} ms`, `labels learned ${count(s.labels_learned)}`,
    `serving champion ${s.champion || "–"}`, `challenger ${s.challenger || "–"}`,
  ].join(" · ");
}

// the versions the registry's aliases name, beside those the job serves: marked when the running job's
// champion is another (an alias moved and the actors have not swapped yet, or the job does not follow it)
function showRegistry(s) {
  const r = s.registry, box = $("registry");
  box.hidden = !r || (!r.model && !r.message);
  if (box.hidden) return;
  const differs = s.state === "running" && Boolean(r.champion) && s.champion !== r.champion;
  box.classList.toggle("differs", differs);
  box.title = differs ? `the job serves ${s.champion || "no champion"}, the registry's champion is ${r.champion}` : "";
  box.textContent = [
    `registry champion ${r.champion || "–"}`, `challenger ${r.challenger || "–"}`,
    ...(differs ? [`≠ served ${s.champion || "–"}`] : []), ...(r.message ? [r.message] : []),
  ].join(" · ");
}

// ------------------------------------------------------------------ an alert
async function showDetail(alertId) {
  state.selected = alertId;
  for (const [id, tr] of state.rows) tr.classList.toggle("selected", id === alertId);
  const answer = await api(`/api/alerts/${encodeURIComponent(alertId)}`);
  if (!answer.ok) { $("verdict-error").textContent = answer.data.error; return; }
  const d = answer.data, a = d.alert;
  $("detail").hidden = false;
  $("detail-title").textContent = `${a.decision} · ${a.account_id} · ${fixed(a.score, 4)}`;
  const facts = [["alert", a.alert_id], ["transaction", a.transaction_id], ["event time", time(a.event_time)],
    ["alert time", time(a.alert_time)], ["latency", `${a.latency_ms} ms`], ["challenger score", fixed(a.challenger_score, 4)],
    ["models", Object.entries(a.model_versions).map(([k, v]) => `${k} ${v}`).join(", ")],
    ["features", d.feature_version], ["late", d.late ? "yes" : "no"]];
  $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  $("detail-reasons").replaceChildren(...(d.reasons_in_words.length ? d.reasons_in_words : ["no reasons recorded"]).map((r) => el("li", r)));
  $("detail-recent").replaceChildren(...(d.account_recent.length ? d.account_recent.map((r) => {
    const li = el("li", `${time(r.alert_time)} · ${r.decision} · ${fixed(r.score, 4)}${r.verdict ? " · " + r.verdict.verdict : ""}`);
    li.addEventListener("click", () => showDetail(r.alert_id));
    return li;
  }) : [el("li", "none kept")]));
  const judged = a.verdict;
  $("verdict-now").textContent = judged ? `judged ${judged.verdict} by ${judged.analyst} at ${time(judged.time)}` : "not judged yet";
  const may = state.session && state.session.may_give_verdicts;
  for (const id of ["mark-fraud", "mark-genuine"]) { $(id).hidden = !may; $(id).disabled = !may; }
  $("verdict-error").textContent = may ? "" : "viewers see verdicts but cannot give them";
}

async function giveVerdict(verdict) {
  const alertId = state.selected;
  let answer = await api(`/api/alerts/${encodeURIComponent(alertId)}/verdict`, { method: "POST", body: { verdict, replace: false } });
  if (answer.status === 409 && window.confirm(`${answer.data.error}\n\nReplace it with ${verdict}?`)) {
    answer = await api(`/api/alerts/${encodeURIComponent(alertId)}/verdict`, { method: "POST", body: { verdict, replace: true } });
  }
  $("verdict-error").textContent = answer.ok || answer.status === 409 ? "" : answer.data.error;
  if (answer.ok) showDetail(alertId);
}

$("mark-fraud").addEventListener("click", () => giveVerdict("fraud"));
$("mark-genuine").addEventListener("click", () => giveVerdict("genuine"));

start();
