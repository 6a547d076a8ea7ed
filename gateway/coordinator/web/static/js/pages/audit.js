import { get, query } from "../api.js";
import { initShell, run } from "../shell.js";
import { $, badge, clearErrors, empty, fmtTime, formValues, h, replace, showApiError, table } from "../ui.js";

const PAGE = 50;
const OUTCOME = { ok: "returned", refused: "refused", failed: "failed", blocked: "blocked" };
const form = $("#audit-filters");
let offset = 0;
let collabName = new Map();

// What the event was about: the task, the relayed call and its expression (a relayed
// execute or assign; past the coordinator's limit it is cut, and its text says so).
function what(e) {
  const d = e.detail || {};
  const parts = [];
  if (d.algorithm) parts.push(`${d.algorithm}${d.nodes ? ` on ${d.nodes.length} station(s)` : ""}`);
  if (d.path) parts.push(h("code", {}, `${d.method || ""} ${d.path}`));
  if (d.expression) {
    if (parts.length) parts.push(" ");
    parts.push(h("code", { class: "expression" }, d.expression));
  }
  if (d.digest) parts.push(h("code", {}, d.digest.slice(0, 19) + "…"));
  if (d.reason) parts.push(` — ${d.reason}`);
  if (d.message) parts.push(` — ${d.message}`);
  if (e.target_type) parts.push(` (${e.target_type}${e.target_id ? ` ${e.target_id}` : ""})`);
  return h("span", {}, parts);
}

function size(e) {
  const d = e.detail || {};
  const n = d.bytes ?? d.size;
  return typeof n === "number" ? `${n.toLocaleString()} B` : "—";
}

function filters() {
  const v = formValues(form);
  const day = (s, plus) => {
    if (!s) return undefined;
    const d = new Date(`${s}T00:00:00`);
    if (plus) d.setDate(d.getDate() + 1);
    return d.toISOString();
  };
  return {
    actor_name: v.actor_name,
    outcome: v.outcome,
    collaboration_id: v.collaboration_id,
    since: day(v.since, false),
    until: day(v.until, true), // the whole "to" day
  };
}

async function load(append) {
  const events = await get(`/audit${query({ ...filters(), limit: PAGE, offset })}`);
  const rows = events.map((e) => [
    fmtTime(e.time),
    e.actor_name || e.actor_type,
    e.action,
    badge(OUTCOME[e.outcome] || e.outcome),
    collabName.get(e.collaboration_id) || (e.collaboration_id ? `#${e.collaboration_id}` : "—"),
    what(e),
    size(e),
  ]);
  const headers = ["Time", "Who", "Action", "Outcome", "Collaboration", "What", "Size of what left"];
  if (append) {
    const body = $("#events tbody");
    for (const r of rows) body.append(h("tr", {}, r.map((c) => h("td", {}, c))));
  } else {
    replace("#events", rows.length ? table(headers, rows) : empty("No events match these filters."));
  }
  $("#more").hidden = events.length < PAGE;
}

run(async () => {
  await initShell();
  const collabs = await get("/collaborations");
  collabName = new Map(collabs.map((c) => [c.id, c.name]));
  form.collaboration_id.append(...collabs.map((c) => h("option", { value: c.id }, c.name)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const v = formValues(form);
    if (v.since && v.until && v.until < v.since) {
      showApiError(form, { message: "Please correct the dates.", errors: { until: ["The end is before the start."] } });
      return;
    }
    offset = 0;
    try {
      await load(false);
    } catch (err) {
      showApiError(form, err);
    }
  });
  $("#more").addEventListener("click", async () => {
    offset += PAGE;
    await load(true);
  });
  await load(false);
});
