// The operator page: reads the cloud's operator API with the admin token the operator types in
// (kept in this tab's sessionStorage, sent only as a bearer header) and refreshes every few
// seconds while a run is active. It only reads: nothing here changes the cloud's state.

import { getJson, TokenRejected, Unreachable } from "./api.js";
import * as fmt from "./format.js";
import * as views from "./views.js";

const TOKEN_KEY = "elsa.operator.token";
const REFRESH_MS = 4000;

const $ = (id) => document.getElementById(id);
const page = {
  form: $("token-form"),
  input: $("token-input"),
  forget: $("forget-token"),
  refresh: $("refresh-status"),
  message: $("message"),
  runsSection: $("runs-section"),
  runs: $("runs"),
  runSection: $("run-section"),
  runId: $("run-id"),
  runState: $("run-state"),
  facts: $("run-facts"),
  accuracy: $("accuracy-chart"),
  loss: $("loss-chart"),
  rounds: $("rounds"),
  metrics: $("metrics"),
  control: { devices: $("devices"), caption: $("control-round"), clusters: $("clusters"), edges: $("edges") },
  bytes: $("bytes"),
  nodes: $("nodes"),
  events: $("events"),
};

let timer = null;
let generation = 0; // a refresh that finishes after a newer one started is dropped
let lastRead = null; // when the shown data was read (HH:MM:SS UTC)

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function selectedRunId() {
  const match = /^#run=(.+)$/.exec(window.location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

function say(text, kind) {
  page.message.textContent = text;
  page.message.className = `message ${kind}`;
  page.message.hidden = false;
}

function quiet() {
  page.message.hidden = true;
  page.message.textContent = "";
}

function schedule(delayMs) {
  clearTimeout(timer);
  timer = delayMs === null ? null : setTimeout(refresh, delayMs);
}

// a section the page can do without (events live in Redis, which may be down): its error is kept
async function optional(path, name, key) {
  try {
    return { [name]: await getJson(path, key) };
  } catch (err) {
    if (err instanceof TokenRejected) throw err;
    return { [name]: null, [`${name}Error`]: err.message };
  }
}

async function loadRun(run, key) {
  const base = `v1/runs/${encodeURIComponent(run.run_id)}`;
  const [rounds, metrics, control, events, nodes] = await Promise.all([
    getJson(`${base}/rounds`, key),
    getJson(`${base}/metrics`, key),
    getJson(`${base}/control`, key),
    optional(`${base}/events?n=50`, "events", key),
    optional("v1/nodes", "nodes", key),
  ]);
  return { rounds, metrics, control, ...events, ...nodes };
}

function showRun(run, data) {
  views.renderRunHeader(page.runId, page.runState, page.facts, run);
  views.renderCharts(page.accuracy, page.loss, data.metrics);
  views.renderRounds(page.rounds, data.rounds);
  views.renderMetrics(page.metrics, data.metrics);
  views.renderControl(page.control, data.control, run.config);
  views.renderBytes(page.bytes, data.metrics);
  if (data.nodes) views.renderNodes(page.nodes, data.nodes);
  else views.renderUnavailable(page.nodes, `nodes unavailable: ${data.nodesError}`);
  if (data.events) views.renderEvents(page.events, data.events);
  else views.renderUnavailable(page.events, `events unavailable: ${data.eventsError}`);
  page.runSection.hidden = false;
}

function hideData() {
  lastRead = null;
  page.runsSection.hidden = true;
  page.runSection.hidden = true;
}

/** Read the runs (and the selected run) once; schedule the next read while a run is active. */
async function refresh() {
  schedule(null);
  const mine = ++generation;
  const key = token();
  page.forget.hidden = key === null;
  if (key === null) {
    hideData();
    page.refresh.textContent = "";
    say("Enter the admin token to see the runs.", "info");
    return;
  }
  try {
    const runs = await getJson("v1/runs", key);
    const wanted = selectedRunId();
    const run = runs.find((r) => r.run_id === wanted) ?? null;
    const data = run ? await loadRun(run, key) : null;
    if (mine !== generation) return;
    quiet();
    views.renderRuns(page.runs, runs, run ? run.run_id : null);
    page.runsSection.hidden = false;
    if (run) showRun(run, data);
    else page.runSection.hidden = true;
    if (wanted !== null && run === null) say(`There is no run ${wanted}.`, "error");
    const active = runs.some((r) => views.ACTIVE_STATES.has(r.state));
    lastRead = fmt.clock(Date.now() / 1000);
    page.refresh.textContent = active
      ? `Updated ${lastRead} UTC · refreshing every ${REFRESH_MS / 1000} s while a run is active`
      : `Updated ${lastRead} UTC · no active run: auto-refresh off`;
    schedule(active ? REFRESH_MS : null);
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof TokenRejected) {
      sessionStorage.removeItem(TOKEN_KEY);
      page.forget.hidden = true;
      hideData();
      page.refresh.textContent = "";
      say(`token rejected (${err.status}): ${err.detail}`, "error");
      page.input.focus();
    } else if (err instanceof Unreachable) {
      say(`Cloud unreachable (${err.message}); retrying every ${REFRESH_MS / 1000} s.`, "error");
      page.refresh.textContent = lastRead ? `Showing data read at ${lastRead} UTC` : "";
      schedule(REFRESH_MS);
    } else {
      say(`The cloud answered with an error: ${err.message}`, "error");
      schedule(REFRESH_MS);
    }
  }
}

page.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = page.input.value.trim();
  page.input.value = "";
  if (!value) {
    say("Enter the admin token to see the runs.", "error");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, value);
  refresh();
});

page.forget.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  refresh();
});

window.addEventListener("hashchange", refresh);
refresh();
