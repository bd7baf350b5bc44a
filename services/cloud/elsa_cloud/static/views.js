// Renderers of the operator page's sections, each from one JSON document of the operator API.

import { lineChart } from "./chart.js";
import { el, fillTable } from "./dom.js";
import * as fmt from "./format.js";

/** Run states in which the page keeps refreshing. */
export const ACTIVE_STATES = new Set(["created", "running", "paused"]);

/** Rounds a run has completed: round r commits global adapter version r. */
export function roundsDone(run) {
  return run.latest_version ?? 0;
}

function badge(state) {
  return el("span", { class: `state state-${state}` }, state);
}

function version(v) {
  return v === null || v === undefined ? "–" : `v${v}`;
}

/** The runs table (newest first); the selected run's row is marked. */
export function renderRuns(table, runs, selectedId) {
  const rows = [...runs].reverse().map((run) => {
    const selected = run.run_id === selectedId;
    const link = el("a", { href: `#run=${encodeURIComponent(run.run_id)}`, "aria-current": selected ? "true" : null }, run.run_id);
    return {
      className: selected ? "selected" : null,
      cells: [link, run.name, badge(run.state), `${roundsDone(run)} / ${run.cloud_rounds}`, version(run.latest_version), fmt.utc(run.created_at)],
    };
  });
  fillTable(table, ["Run", "Name", "State", "Rounds done", "Latest adapter", "Created (UTC)"], rows, "no runs yet");
}

/** The selected run's title and key facts. */
export function renderRunHeader(idNode, stateNode, facts, run) {
  idNode.textContent = run.run_id;
  stateNode.replaceChildren(badge(run.state));
  const config = run.config || {};
  const topology = config.topology || {};
  const pairs = [
    ["name", run.name],
    ["rounds done", `${roundsDone(run)} / ${run.cloud_rounds}`],
    ["current round", String(run.current_round)],
    ["latest adapter", version(run.latest_version)],
    ["created (UTC)", fmt.utc(run.created_at)],
    ["model", config.model ? `${config.model.name} (${config.model.task})` : "–"],
    ["dataset", config.data ? config.data.dataset : "–"],
    ["topology", topology.edges ? `${topology.edges} edges × ${topology.devices_per_edge} devices` : "–"],
  ];
  facts.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

/** One row per cloud round: its state machine position, version and timings. */
export function renderRounds(table, rounds) {
  const rows = rounds.map((r) => [
    String(r.round), badge(r.state), version(r.version), String(r.participants),
    fmt.utc(r.started_at), fmt.utc(r.finished_at), fmt.duration(r.started_at, r.finished_at),
  ]);
  fillTable(table, ["Round", "State", "Adapter version", "Participants", "Started (UTC)", "Finished (UTC)", "Duration"], rows, "no rounds yet");
}

/** Device-mean metrics per round, one column per metric name. */
export function renderMetrics(table, metrics) {
  const names = [...new Set(metrics.rounds.flatMap((r) => Object.keys(r.metrics)))].sort();
  const rows = metrics.rounds.map((r) => [
    String(r.round), String(r.reports), ...names.map((n) => fmt.metric(n, r.metrics[n])),
  ]);
  fillTable(table, ["Round", "Reports", ...names], rows, "no metrics yet");
}

// points [round, value] of metric ``name``; ``startName`` of round 1 (the start model) as round 0
function curve(rounds, startName, name) {
  const points = [];
  const first = rounds[0];
  if (startName && first && typeof first.metrics[startName] === "number") points.push([0, first.metrics[startName]]);
  for (const r of rounds) {
    if (typeof r.metrics[name] === "number") points.push([r.round, r.metrics[name]]);
  }
  return points;
}

/** Accuracy and loss curves per cloud round (round 0 = the start model of round 1). */
export function renderCharts(accuracySvg, lossSvg, metrics) {
  const rounds = metrics.rounds;
  lineChart(accuracySvg, {
    title: "Device-mean accuracy per cloud round",
    series: [{ label: "eval accuracy", className: "series-0", points: curve(rounds, "start_accuracy", "eval_accuracy") }],
    xLabel: "cloud round",
    yLabel: "accuracy",
    yMax: 1,
    formatY: fmt.percent,
    formatTick: (y) => `${Math.round(y * 100)} %`,
  });
  lineChart(lossSvg, {
    title: "Device-mean loss per cloud round",
    series: [
      { label: "eval loss", className: "series-0", points: curve(rounds, "start_loss", "eval_loss") },
      { label: "train loss", className: "series-1", points: curve(rounds, null, "train_loss") },
    ],
    xLabel: "cloud round",
    yLabel: "loss",
    formatY: (y) => fmt.fixed(y, 2),
  });
}

function groups(mapping) {
  const out = new Map();
  for (const [device, key] of Object.entries(mapping)) {
    const k = String(key);
    if (!out.has(k)) out.set(k, []);
    out.get(k).push(device);
  }
  return [...out.entries()].sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }));
}

/**
 * The control plane: per device its cluster, trust (quarantined marked), edge and cut;
 * ``config`` is the run's configuration (whether it clusters at all).
 */
export function renderControl(nodes, control, config) {
  const quarantined = new Set(control.quarantined);
  const devices = [...new Set([
    ...Object.keys(control.trust), ...Object.keys(control.clusters),
    ...Object.keys(control.assignment), ...Object.keys(control.split_plans),
  ])].sort();
  const rows = devices.map((d) => {
    const t = control.trust[d];
    const plan = control.split_plans[d];
    return {
      className: quarantined.has(d) ? "quarantined" : null,
      cells: [
        d,
        control.clusters[d] === undefined ? "–" : String(control.clusters[d]),
        t === undefined ? "–" : fmt.trust(t),
        quarantined.has(d) ? "quarantined" : t === undefined ? "–" : "trusted",
        control.assignment[d] ?? "–",
        plan ? `${plan[0]} / ${plan[1]}` : "–",
      ],
    };
  });
  fillTable(nodes.devices, ["Device", "Cluster", "Trust", "Status", "Edge", "Cut (head / tail blocks)"], rows, "no device has reported yet");
  nodes.caption.textContent = `As of cloud round ${control.round}; ${quarantined.size} quarantined (weight 0, still training).`;
  fillTable(nodes.clusters, ["Cluster", "Devices", "Members"],
    groups(control.clusters).map(([c, ds]) => [c, String(ds.length), ds.sort().join(", ")]),
    config?.control?.clustering === false ? "clustering is off in this run's configuration" : "no clusters yet");
  fillTable(nodes.edges, ["Edge", "Devices", "Members"],
    groups(control.assignment).map(([e, ds]) => [e, String(ds.length), ds.sort().join(", ")]), "no assignment yet");
}

/** Bytes that crossed the wire per round, by kind, in MB. */
export function renderBytes(table, metrics) {
  const rounds = metrics.rounds;
  const kinds = [...new Set(rounds.flatMap((r) => Object.keys(r.bytes)))].sort();
  const rows = kinds.map((k) => [k, ...rounds.map((r) => fmt.megabytes(r.bytes[k] ?? 0))]);
  if (kinds.length > 0) {
    const totals = rounds.map((r) => fmt.megabytes(Object.values(r.bytes).reduce((a, b) => a + b, 0)));
    rows.push({ className: "total", cells: ["total", ...totals] });
  }
  fillTable(table, ["Kind", ...rounds.map((r) => `round ${r.round}`)], rows, "no bytes recorded yet");
}

/** Every registered node and whether it is alive. */
export function renderNodes(table, nodes) {
  const sorted = [...nodes].sort((a, b) => a.role.localeCompare(b.role) || a.name.localeCompare(b.name));
  const rows = sorted.map((n) => ({
    className: n.alive ? null : "dead",
    cells: [n.name, n.role, n.alive ? "alive" : "not heard from", n.url ?? "–", fmt.utc(n.joined_at)],
  }));
  fillTable(table, ["Node", "Role", "Liveness", "URL", "Joined (UTC)"], rows, "no nodes have joined");
}

function detail(value) {
  if (Array.isArray(value)) return value.length ? value.join(",") : "none";
  if (value !== null && typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** The run's recent events, newest first. */
export function renderEvents(table, events) {
  const rows = [...events].reverse().map((e) => {
    const rest = Object.entries(e).filter(([k]) => !["at", "kind", "round"].includes(k));
    return [
      typeof e.at === "number" ? fmt.clock(e.at) : "–",
      e.kind ?? "–",
      e.round === undefined ? "–" : String(e.round),
      rest.map(([k, v]) => `${k}=${detail(v)}`).join("; "),
    ];
  });
  fillTable(table, ["Time (UTC)", "Event", "Round", "Details"], rows, "no events");
}

/** A section whose source could not be read: its table says why. */
export function renderUnavailable(table, why) {
  fillTable(table, ["unavailable"], [], why);
}
