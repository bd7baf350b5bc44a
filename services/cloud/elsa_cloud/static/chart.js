// Line charts as inline SVG: axes with ticks and labels, one polyline (and its points) per series.

import { svg } from "./dom.js";

const WIDTH = 480;
const HEIGHT = 260;
const MARGIN = { left: 60, right: 16, top: 30, bottom: 44 };

function niceStep(span, count) {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = [1, 2, 2.5, 5, 10].find((m) => m * power >= raw);
  return unit * power;
}

/**
 * Draw ``series`` ([{label, className, points: [[x, y], ...]}]) into ``target`` (an <svg> with
 * viewBox 0 0 480 260). ``x`` are cloud rounds (integers); ``yMax`` fixes the top of the y axis
 * (else it is fitted to the data); ``formatY`` writes point values, ``formatTick`` the y ticks.
 */
export function lineChart(target, { series, xLabel, yLabel, formatY, formatTick = formatY, yMax = null, title }) {
  const all = series.flatMap((s) => s.points);
  target.setAttribute("aria-label", title);
  if (all.length === 0) {
    target.replaceChildren(
      svg("title", {}, title),
      svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "chart-empty", "text-anchor": "middle" }, "no metrics yet"),
    );
    return;
  }
  const xMax = Math.max(1, ...all.map(([x]) => x));
  const dataMax = Math.max(...all.map(([, y]) => y));
  const yStep = niceStep(yMax ?? (dataMax > 0 ? dataMax : 1), 5);
  const yTop = yMax ?? Math.max(yStep, Math.ceil(dataMax / yStep) * yStep);
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const px = (x) => MARGIN.left + (x / xMax) * plotW;
  const py = (y) => MARGIN.top + plotH - (Math.min(Math.max(y, 0), yTop) / yTop) * plotH;
  const r2 = (v) => Math.round(v * 100) / 100;

  const nodes = [svg("title", {}, title)];
  for (let y = 0; y <= yTop + yStep / 1e6; y += yStep) {
    nodes.push(svg("line", { class: "grid", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: r2(py(y)), y2: r2(py(y)) }));
    nodes.push(svg("text", { class: "tick", x: MARGIN.left - 6, y: r2(py(y)) + 4, "text-anchor": "end" }, formatTick(y)));
  }
  const xStep = Math.max(1, Math.ceil(xMax / 10));
  for (let x = 0; x <= xMax; x += xStep) {
    nodes.push(svg("line", { class: "tick-mark", x1: r2(px(x)), x2: r2(px(x)), y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 4 }));
    nodes.push(svg("text", { class: "tick", x: r2(px(x)), y: MARGIN.top + plotH + 16, "text-anchor": "middle" }, String(x)));
  }
  nodes.push(svg("line", { class: "axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: MARGIN.top + plotH }));
  nodes.push(svg("line", { class: "axis", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH }));
  nodes.push(svg("text", { class: "axis-label", x: MARGIN.left + plotW / 2, y: HEIGHT - 6, "text-anchor": "middle" }, xLabel));
  const yMid = MARGIN.top + plotH / 2;
  nodes.push(svg("text", { class: "axis-label", x: 14, y: yMid, "text-anchor": "middle", transform: `rotate(-90 14 ${yMid})` }, yLabel));

  let legendX = MARGIN.left;
  for (const s of series) {
    if (s.points.length === 0) continue;
    const points = s.points.map(([x, y]) => `${r2(px(x))},${r2(py(y))}`).join(" ");
    const group = svg("g", { class: `series ${s.className}` });
    group.append(svg("polyline", { points, "data-series": s.label }));
    for (const [x, y] of s.points) {
      group.append(svg("circle", { cx: r2(px(x)), cy: r2(py(y)), r: 3.5 }, svg("title", {}, `${s.label}, round ${x}: ${formatY(y)}`)));
    }
    group.append(svg("rect", { x: legendX, y: 10, width: 12, height: 4 }));
    group.append(svg("text", { class: "legend", x: legendX + 16, y: 16 }, s.label));
    legendX += 28 + s.label.length * 7;
    nodes.push(group);
  }
  target.replaceChildren(...nodes);
}
