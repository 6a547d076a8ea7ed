// Plots as inline SVG, drawn here: no plotting library, nothing fetched. Each plot has a
// title and a description for screen readers, and the same numbers are always shown
// in a table next to it.
const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceTicks(lo, hi, count = 5) {
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => raw <= st);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function fmt(x) {
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? x.toExponential(2) : String(Number(x.toPrecision(4)));
}

function frame(title, desc, width, height) {
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "plot", width, height });
  const id = `plot-${Math.random().toString(36).slice(2)}`;
  svg.setAttribute("aria-labelledby", `${id}-t ${id}-d`);
  svg.append(s("title", { id: `${id}-t` }, title), s("desc", { id: `${id}-d` }, desc));
  return svg;
}

// A coefficient plot: each term's estimate with its 95% interval, on a shared x axis;
// `reference` (0, or 1 for odds ratios) drawn as a dashed line.
export function coefficientPlot(rows, { title, xLabel, reference = 0, log = false }) {
  const width = 640;
  const rowH = 28;
  const left = 170;
  const right = 30;
  const top = 30;
  const height = top + rows.length * rowH + 50;
  const tx = (v) => (log ? Math.log10(v) : v);
  const values = rows.flatMap((r) => [r.lower, r.upper, r.estimate]).concat([reference]).filter(Number.isFinite).map(tx);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const ticks = log ? niceTicks(lo, hi).map((t) => t) : niceTicks(lo, hi);
  const a = Math.min(lo, ticks[0]);
  const b = Math.max(hi, ticks[ticks.length - 1]);
  const x = (v) => left + ((tx(v) - a) / (b - a || 1)) * (width - left - right);
  const xt = (t) => left + ((t - a) / (b - a || 1)) * (width - left - right);
  const desc = rows.map((r) => `${r.term}: ${fmt(r.estimate)} (95% ${fmt(r.lower)} to ${fmt(r.upper)})`).join("; ");
  const svg = frame(title, desc, width, height);
  const axisY = top + rows.length * rowH + 8;
  for (const t of ticks) {
    svg.append(
      s("line", { x1: xt(t), x2: xt(t), y1: top - 6, y2: axisY, stroke: "#d0d7de" }),
      s("text", { x: xt(t), y: axisY + 16, "text-anchor": "middle", "font-size": 12, fill: "#24292f" }, fmt(log ? 10 ** t : t)),
    );
  }
  svg.append(
    s("line", { x1: x(reference), x2: x(reference), y1: top - 6, y2: axisY, stroke: "#57606a", "stroke-dasharray": "4 3" }),
    s("text", { x: (left + width - right) / 2, y: height - 6, "text-anchor": "middle", "font-size": 12, fill: "#24292f" }, xLabel),
  );
  rows.forEach((r, i) => {
    const y = top + i * rowH + rowH / 2;
    const g = s("g", { class: "coef" });
    g.append(s("text", { x: left - 10, y: y + 4, "text-anchor": "end", "font-size": 12, fill: "#24292f" }, r.term));
    if (Number.isFinite(r.lower) && Number.isFinite(r.upper)) {
      g.append(s("line", { x1: x(r.lower), x2: x(r.upper), y1: y, y2: y, stroke: "#0b5cad", "stroke-width": 2 }));
    }
    g.append(s("circle", { cx: x(r.estimate), cy: y, r: 5, fill: "#0b5cad" }));
    svg.append(g);
  });
  return svg;
}

// A histogram from bin edges (breaks, one more than counts) and counts.
export function histogram(breaks, counts, { title, xLabel }) {
  const width = 640;
  const height = 300;
  const left = 50;
  const bottom = 40;
  const top = 20;
  const right = 20;
  const maxC = Math.max(...counts, 1);
  const a = breaks[0];
  const b = breaks[breaks.length - 1];
  const x = (v) => left + ((v - a) / (b - a || 1)) * (width - left - right);
  const y = (c) => height - bottom - (c / maxC) * (height - top - bottom);
  const desc = counts.map((c, i) => `${fmt(breaks[i])} to ${fmt(breaks[i + 1])}: ${c}`).join("; ");
  const svg = frame(title, desc, width, height);
  counts.forEach((c, i) => {
    svg.append(s("rect", { x: x(breaks[i]) + 1, y: y(c), width: Math.max(x(breaks[i + 1]) - x(breaks[i]) - 2, 1), height: height - bottom - y(c), fill: "#0b5cad" }));
  });
  for (const t of niceTicks(0, maxC, 4)) {
    svg.append(s("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end", "font-size": 12, fill: "#24292f" }, fmt(t)));
  }
  for (const t of niceTicks(a, b)) {
    if (t < a || t > b) continue;
    svg.append(s("text", { x: x(t), y: height - bottom + 16, "text-anchor": "middle", "font-size": 12, fill: "#24292f" }, fmt(t)));
  }
  svg.append(
    s("line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, stroke: "#57606a" }),
    s("text", { x: (left + width - right) / 2, y: height - 6, "text-anchor": "middle", "font-size": 12, fill: "#24292f" }, xLabel),
  );
  return svg;
}
