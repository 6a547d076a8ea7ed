// How a task's result is shown and downloaded: a GLM as a coefficient table and plot,
// histograms as plots, aggregate answers per station, anything else as JSON.
import { coefficientPlot, histogram } from "./plots.js";
import { h, table } from "./ui.js";

const ALIASES = {
  term: ["term", "name", "variable", "coefficient"],
  estimate: ["estimate", "Estimate", "coef", "beta", "value"],
  se: ["se", "std_error", "stderr", "Std. Error", "standard_error"],
  stat: ["z", "t", "z_value", "t_value", "statistic", "z value", "t value"],
  p: ["p", "p_value", "pvalue", "Pr(>|z|)", "Pr(>|t|)"],
  lower: ["lower", "ci_low", "ci_lower", "low95"],
  upper: ["upper", "ci_high", "ci_upper", "high95"],
};

function pick(obj, key) {
  for (const name of ALIASES[key]) if (obj[name] !== undefined) return obj[name];
  return undefined;
}

// Coefficients come as a list of rows, a {term: row} map, or columns ({term: [...],
// estimate: [...]}); all become [{term, estimate, se, stat, p, lower, upper}].
export function coefficientRows(fit) {
  let c = fit.coefficients;
  if (!c) return null;
  if (!Array.isArray(c) && typeof c === "object") {
    const terms = pick(c, "term");
    if (Array.isArray(terms)) {
      c = terms.map((term, i) => Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Array.isArray(v) ? v[i] : v])));
    } else if (Object.values(c).every((v) => typeof v === "number")) {
      const se = fit.standard_errors || fit.std_errors || fit.se || {};
      const p = fit.p_values || fit.pvalues || {};
      c = Object.entries(c).map(([term, estimate]) => ({ term, estimate, se: se[term], p: p[term] }));
    } else {
      c = Object.entries(c).map(([term, row]) => ({ term, ...row }));
    }
  }
  if (!Array.isArray(c)) return null;
  return c.map((row) => {
    const r = {};
    for (const key of Object.keys(ALIASES)) r[key] = pick(row, key);
    if (r.lower === undefined && Number.isFinite(r.se)) {
      r.lower = r.estimate - 1.959964 * r.se;
      r.upper = r.estimate + 1.959964 * r.se;
    }
    return r;
  });
}

const num = (x, digits = 4) => (typeof x === "number" ? (Math.abs(x) !== 0 && Math.abs(x) < 1e-4 ? x.toExponential(2) : String(Number(x.toPrecision(digits + 2)))) : x ?? "—");

function glmView(fit, family) {
  const rows = coefficientRows(fit);
  const logistic = (fit.family || family) === "binomial";
  const parts = [
    table(
      ["Term", "Estimate", "Std. error", "z / t", "p-value", "95% interval"].concat(logistic ? ["Odds ratio"] : []),
      rows.map((r) => [r.term, num(r.estimate), num(r.se), num(r.stat), num(r.p), `${num(r.lower)} to ${num(r.upper)}`].concat(
        logistic ? [num(Math.exp(r.estimate))] : [],
      )),
      "Coefficients",
    ),
  ];
  const facts = [];
  for (const [label, key] of [["Observations", "nobs"], ["Iterations", "iterations"], ["Converged", "converged"], ["Deviance", "deviance"]]) {
    if (fit[key] !== undefined) facts.push(h("dt", {}, label), h("dd", {}, String(num(fit[key]))));
  }
  if (facts.length) parts.push(h("dl", { class: "summary" }, facts));
  const plotted = rows.filter((r) => r.term !== "(Intercept)" && Number.isFinite(r.estimate));
  if (plotted.length) {
    const figure = h("figure", { class: "plot-figure" });
    if (logistic) {
      const odds = plotted.map((r) => ({ term: r.term, estimate: Math.exp(r.estimate), lower: Math.exp(r.lower), upper: Math.exp(r.upper) }));
      figure.append(coefficientPlot(odds, { title: "Odds ratios with 95% intervals", xLabel: "odds ratio (log scale)", reference: 1, log: true }));
      figure.append(h("figcaption", {}, "Odds ratios with 95% intervals (intercept left out); 1 means no association."));
    } else {
      figure.append(coefficientPlot(plotted, { title: "Coefficients with 95% intervals", xLabel: "estimate", reference: 0 }));
      figure.append(h("figcaption", {}, "Coefficients with 95% intervals (intercept left out); 0 means no association."));
    }
    parts.push(figure);
  }
  return parts;
}

function isHistogram(v) {
  return v && typeof v === "object" && Array.isArray(v.breaks) && Array.isArray(v.counts) && v.breaks.length === v.counts.length + 1;
}

function jsonBlock(value) {
  return h("pre", { class: "json", tabindex: "0" }, JSON.stringify(value, null, 2));
}

function valueCell(v) {
  if (isHistogram(v)) return histogram(v.breaks, v.counts, { title: "Histogram", xLabel: "" });
  if (v !== null && typeof v === "object") return jsonBlock(v);
  return String(v);
}

export function render(task, value, nodeName) {
  if (value && typeof value === "object" && value.coefficients) return glmView(value, task.parameters?.family);
  if (isHistogram(value)) return [histogram(value.breaks, value.counts, { title: "Histogram", xLabel: value.variable || "" })];
  const byNode = value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).every((k) => /^\d+$/.test(k));
  if (byNode) {
    const expressions = task.parameters?.expressions || [];
    return Object.entries(value).map(([node, v]) => {
      const title = h("h3", {}, nodeName(Number(node)));
      if (v && Array.isArray(v.results)) {
        return h("section", {}, title, table(["Expression", "Answer"], v.results.map((r, i) => [h("code", {}, expressions[i] || `#${i + 1}`), valueCell(r)])));
      }
      return h("section", {}, title, valueCell(v));
    });
  }
  return [jsonBlock(value)];
}

function csvCell(v) {
  const text = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

// CSV: the coefficient table of a GLM; otherwise one row per leaf (path, value).
export function toCsv(task, value) {
  let rows;
  if (value && typeof value === "object" && value.coefficients) {
    rows = [["term", "estimate", "std_error", "statistic", "p_value", "lower95", "upper95"]];
    for (const r of coefficientRows(value)) rows.push([r.term, r.estimate, r.se, r.stat, r.p, r.lower, r.upper]);
  } else {
    rows = [["path", "value"]];
    const walk = (v, path) => {
      if (v !== null && typeof v === "object" && Object.keys(v).length) {
        for (const [k, x] of Object.entries(v)) walk(x, path ? `${path}.${k}` : k);
      } else rows.push([path, v]);
    };
    walk(value, "");
  }
  return rows.map((r) => r.map(csvCell).join(",")).join("\n") + "\n";
}

// ------------------------------------------------------------ an image run's outputs

// A small CSV reader (quotes, doubled quotes, CRLF): the runner checked the file parses.
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(cell);
      cell = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
    } else cell += c;
  }
  if (cell !== "" || row.length) rows.push([...row, cell]);
  return rows;
}

const isScalar = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);

// One output file as the researcher reads it: a JSON object of plain values as a table
// of names and values, other JSON as JSON, a CSV as a table, a PNG as an image.
export function outputView(file, station) {
  const label = `${file.name} from ${station}`;
  if (file.type === "application/json") {
    const v = file.content;
    if (v && typeof v === "object" && !Array.isArray(v) && Object.values(v).every(isScalar)) {
      return table(["Name", "Value"], Object.entries(v).map(([k, x]) => [k, x === null ? "—" : String(x)]), label);
    }
    return jsonBlock(v);
  }
  if (file.type === "text/csv") {
    const [head = [], ...rows] = parseCsv(file.content || "");
    return table(head, rows, label);
  }
  if (file.type === "image/png") {
    return h("img", { src: `data:image/png;base64,${file.content}`, alt: label, class: "output-image" });
  }
  return jsonBlock(file.content);
}

// The bytes of an output file, for its download.
export function outputBlob(file) {
  if (file.type === "image/png") {
    const bin = atob(file.content);
    return new Blob([Uint8Array.from(bin, (c) => c.charCodeAt(0))], { type: file.type });
  }
  const text = file.type === "application/json" ? JSON.stringify(file.content, null, 2) : String(file.content);
  return new Blob([text], { type: file.type });
}
