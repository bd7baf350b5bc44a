// DOM builders of the operator page. Values are always set as text or attributes, never parsed
// as HTML, so names coming from the API cannot inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** An HTML element with attributes (``class`` included) and text or element children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  return append(node, children);
}

/** An SVG element (same contract as ``el``). */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  return append(node, children);
}

/**
 * Replace a table's content: ``headers`` are column titles, each row is an array of cells
 * (text or nodes) or ``{cells, className}``. An empty table shows ``empty`` in one cell.
 */
export function fillTable(table, headers, rows, empty = "nothing yet") {
  const head = el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h))));
  const body = el("tbody");
  for (const row of rows) {
    const spec = Array.isArray(row) ? { cells: row } : row;
    body.append(el("tr", { class: spec.className }, spec.cells.map((c) => el("td", {}, c))));
  }
  if (rows.length === 0) {
    body.append(el("tr", { class: "empty" }, el("td", { colspan: headers.length }, empty)));
  }
  table.replaceChildren(head, body);
}
