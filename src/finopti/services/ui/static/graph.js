// The service graph: who calls whom through the gateway, with requests per second, errors and p95 on each edge
// (Kiali's graph, drawn from the gateway's access lines). Callers on the left, callees to the right; a phone
// gets the same graph top to bottom.
import { formatDuration, formatValue } from "./format.js";

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

/** Layer of each node: 0 for nodes nobody calls, else one more than its deepest caller (cycles cut). */
export function layers(edges) {
  const nodes = [...new Set(edges.flatMap((e) => [e.source, e.target]))];
  const layer = new Map(nodes.map((n) => [n, 0]));
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const e of edges) {
      if (e.source === e.target) continue;
      const want = layer.get(e.source) + 1;
      if (want > layer.get(e.target) && want < nodes.length) { layer.set(e.target, want); changed = true; }
    }
    if (!changed) break;
  }
  return layer;
}

export function serviceGraph(edges, { seconds, vertical = window.matchMedia("(max-width: 720px)").matches } = {}) {
  const layer = layers(edges);
  const columns = [];
  for (const [node, l] of [...layer].sort((a, b) => a[0].localeCompare(b[0]))) (columns[l] ||= []).push(node);
  const nodeW = 132, nodeH = 30, gapMain = vertical ? 96 : 270, gapCross = vertical ? 150 : 64;
  const depth = columns.length, breadth = Math.max(...columns.map((c) => c.length));
  const pos = new Map();
  columns.forEach((col, l) => col.forEach((node, i) => {
    const offset = (breadth - col.length) / 2 + i;
    pos.set(node, vertical ? { x: 20 + offset * gapCross, y: 16 + l * gapMain } : { x: 20 + l * gapMain, y: 16 + offset * gapCross });
  }));
  const width = vertical ? 40 + (breadth - 1) * gapCross + nodeW : 40 + (depth - 1) * gapMain + nodeW;
  const height = vertical ? 32 + (depth - 1) * gapMain + nodeH : 32 + (breadth - 1) * gapCross + nodeH;
  // Drawn at its own size (never scaled up past it), scaled down to fit a narrow panel.
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, class: "graph", role: "img", "data-testid": "service-graph",
    "aria-label": "service graph: who calls whom through the gateway" });
  const defs = svg("defs");
  for (const [id, colour] of [["arrow", "#9aa8bd"], ["arrow-err", "#d64545"]]) {
    const marker = svg("marker", { id, viewBox: "0 0 8 8", refX: "8", refY: "4", markerWidth: "7", markerHeight: "7", orient: "auto" });
    marker.append(svg("path", { d: "M0,0 L8,4 L0,8 z", fill: colour }));
    defs.append(marker);
  }
  root.append(defs);
  const errorNodes = new Set(edges.filter((e) => e.errors).map((e) => e.target));
  for (const e of edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    let d, lx, ly;
    if (e.source === e.target) continue;
    if (vertical) {
      const x1 = a.x + nodeW / 2, y1 = a.y + nodeH, x2 = b.x + nodeW / 2, y2 = b.y;
      d = `M${x1},${y1} C${x1},${(y1 + y2) / 2} ${x2},${(y1 + y2) / 2} ${x2},${y2}`;
      // Near the callee: edges leaving one caller fan out, so their labels do not meet.
      lx = x1 + 0.8 * (x2 - x1); ly = y1 + 0.62 * (y2 - y1);
    } else {
      const x1 = a.x + nodeW, y1 = a.y + nodeH / 2, x2 = b.x, y2 = b.y + nodeH / 2;
      d = `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`;
      lx = x1 + 0.55 * (x2 - x1); ly = y1 + 0.7 * (y2 - y1) - 5;
    }
    const err = e.errors > 0;
    const g = svg("g", { class: `edge${err ? " err" : ""}`, "data-source": e.source, "data-target": e.target,
      "data-requests": String(e.requests), "data-errors": String(e.errors) });
    g.append(svg("path", { d, "stroke-width": String(Math.min(4, 1 + Math.log10(1 + e.requests))), "marker-end": `url(#${err ? "arrow-err" : "arrow"})` }));
    const rate = formatValue(e.requests / seconds, "reqps");
    const label = `${rate} · ${err ? `${Math.round((100 * e.errors) / e.requests)}% 5xx · ` : ""}p95 ${formatDuration(e.p95_ms)}`;
    g.append(svg("text", { x: lx, y: ly, "text-anchor": "middle" }, label));
    g.append(svg("title", {}, `${e.source} → ${e.target}: ${e.requests} requests, ${e.errors} errors (5xx), p95 ${formatDuration(e.p95_ms)}`));
    root.append(g);
  }
  for (const [node, p] of pos) {
    const g = svg("g", { class: `node${errorNodes.has(node) ? " err" : ""}`, "data-node": node });
    g.append(svg("rect", { x: p.x, y: p.y, width: nodeW, height: nodeH, rx: 6 }));
    g.append(svg("text", { x: p.x + nodeW / 2, y: p.y + nodeH / 2 + 4, "text-anchor": "middle" }, node));
    root.append(g);
  }
  return root;
}
