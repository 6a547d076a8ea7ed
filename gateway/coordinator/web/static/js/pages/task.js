import { ApiError, get, post, query } from "../api.js";
import { initShell, run } from "../shell.js";
import { outputBlob, outputView, render, toCsv } from "../results.js";
import { $, badge, confirmAction, download, fmtTime, h, pageError, replace, table } from "../ui.js";

const id = Number(document.querySelector("main").dataset.id);
const FINAL = new Set(["completed", "failed", "cancelled"]);
const POLL_MS = 1500;

// An image task's relay: whether its script opens stations through the relay, and
// which (tasks made before `stations` existed reach their target nodes).
function relayItems(task, nodeName, item) {
  const p = task.parameters || {};
  if (task.algorithm !== "image") return [];
  if (p.relay !== true) return item("Relay", "no");
  const ids = Array.isArray(p.stations) ? p.stations : task.node_ids || [];
  return [
    item("Relay", "yes: the script reaches these stations through the coordinator's relay"),
    item("Stations reached", h("ul", { class: "inline", id: "relay-stations" }, ids.map((nid) => h("li", {}, nodeName(nid))))),
  ].flat();
}

function summary(task, collab, nodeName) {
  const item = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  return [
    item("Collaboration", h("a", { href: `/console/collaborations/${collab.id}` }, collab.name)),
    item("Analysis", task.kind === "image" || task.algorithm === "image" ? `image ${task.image || task.parameters?.image || ""}` : task.algorithm),
    relayItems(task, nodeName, item),
    item("Parameters", h("code", {}, JSON.stringify(task.parameters || {}))),
    item("Status", badge(task.status)),
    task.message ? item("Message", task.message) : [],
    item("Created", fmtTime(task.created_at)),
    item("Finished", fmtTime(task.finished_at)),
  ].flat();
}

// A failed run shows why: the message and, on request, the end of its log.
function why(r) {
  const parts = [];
  if (r.message) parts.push(h("span", {}, r.message));
  if (r.log) {
    parts.push(h("details", {}, h("summary", {}, "Log excerpt"), h("pre", { class: "log", tabindex: "0" }, r.log)));
  }
  return parts.length ? h("div", {}, parts) : "—";
}

// Multi-round tasks (glm) have one run per station per round: the round is shown then.
function runsTable(runs, nodeName) {
  const rounds = runs.some((r) => (r.round ?? 0) > 0);
  return table(
    [rounds ? "Round" : null, "Station", "Status", "Attempts", "Started", "Finished", "Message"].filter(Boolean),
    runs.map((r) => [
      rounds ? String((r.round ?? 0) + 1) : null,
      nodeName(r.node_id),
      badge(r.status + (r.phase && !FINAL.has(r.status) ? ` (${r.phase})` : "")),
      String(r.attempts ?? "—"),
      fmtTime(r.started_at),
      fmtTime(r.finished_at),
      why(r),
    ].filter((c) => c !== null)),
  );
}

// Each completed image run's output files, per station, with a download for each.
function outputsView(runs, nodeName) {
  return runs
    .filter((r) => r.result && Array.isArray(r.result.outputs))
    .map((r) => {
      const station = r.node_name || nodeName(r.node_id);
      const files = r.result.outputs;
      return h(
        "section",
        { class: "run-outputs", "aria-label": `Outputs from ${station}` },
        h("h3", {}, station),
        files.length
          ? files.map((f) =>
              h(
                "div",
                { class: "output-file" },
                h("h4", {}, `${f.name} `, h("span", { class: "hint" }, `(${f.type}, ${f.size} bytes)`)),
                outputView(f, station),
                h("p", {}, h("button", { type: "button", class: "secondary small", onclick: () => download(`${station}-${f.name}`, outputBlob(f), f.type) }, `Download ${f.name}`)),
              ),
            )
          : h("p", { class: "empty" }, "The run wrote no output files."),
      );
    });
}

run(async () => {
  const { me } = await initShell();
  let task = await get(`/tasks/${id}`);
  const [collab, nodes] = await Promise.all([
    get(`/collaborations/${task.collaboration_id}`),
    get(`/nodes${query({ collaboration_id: task.collaboration_id, limit: 1000 })}`),
  ]);
  const names = new Map(nodes.map((n) => [n.id, n.name]));
  const nodeName = (nid) => names.get(nid) || `node ${nid}`;
  const isImage = task.algorithm === "image";
  document.title = `${task.name || `Task ${task.id}`} · dsgateway`;
  $("#title").textContent = task.name || `Task ${task.id}`;
  const cancel = $("#cancel-task");
  cancel.addEventListener("click", async () => {
    if (!(await confirmAction("Cancel this task? Runs not finished yet are stopped at every station.", "Cancel task"))) return;
    try {
      task = await post(`/tasks/${id}/cancel`);
      await refresh();
    } catch (err) {
      pageError(err.message);
    }
  });

  async function runsNow() {
    if (isImage) {
      try {
        return await get(`/tasks/${id}/image-runs`);
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 404) throw err;
      }
    }
    return get(`/tasks/${id}/runs`);
  }

  async function showResult() {
    let result;
    try {
      result = await get(`/tasks/${id}/result`);
    } catch (err) {
      if (err.status === 404) return;
      throw err;
    }
    $("#result-section").hidden = false;
    // An image task's result is its runs' outputs, already shown per station above.
    replace("#result", isImage ? h("p", { class: "hint" }, "Each station's output files are shown under Outputs; the download holds them all.") : render(task, result.value, nodeName));
    const base = `task-${id}-result`;
    $("#download-json").onclick = () => download(`${base}.json`, JSON.stringify(result.value, null, 2), "application/json");
    $("#download-csv").onclick = () => download(`${base}.csv`, toCsv(task, result.value), "text/csv");
  }

  let shownOutputs = ""; // which runs' outputs are on the page: redrawn only on a change
  async function refresh() {
    const runs = await runsNow();
    replace("#summary", summary(task, collab, nodeName));
    replace("#runs", runsTable(runs, nodeName));
    if (isImage) {
      const done = runs.filter((r) => r.result && Array.isArray(r.result.outputs)).map((r) => r.run_id).join(",");
      if (done && done !== shownOutputs) {
        shownOutputs = done;
        $("#outputs-section").hidden = false;
        replace("#outputs", outputsView(runs, nodeName));
      }
    }
    cancel.hidden = FINAL.has(task.status) || task.creator_id !== me.id;
    const counts = Object.entries(task.runs || {}).map(([s, n]) => `${n} ${s}`).join(", ");
    $("#live").textContent = FINAL.has(task.status)
      ? `The task is ${task.status}.`
      : `Following the runs live (${counts || "none yet"})…`;
  }

  await refresh();
  while (!FINAL.has(task.status)) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    task = await get(`/tasks/${id}`);
    await refresh();
  }
  if (task.status === "completed") await showResult();
});
