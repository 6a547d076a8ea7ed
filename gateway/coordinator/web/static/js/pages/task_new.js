import { ApiError, get, post, query } from "../api.js";
import { initShell, rolesIn, run } from "../shell.js";
import { $, $$, clearErrors, empty, fieldError, formValues, h, replace, showApiError } from "../ui.js";

const form = $("#task-form");
let images = []; // what GET /collaborations/<id>/images answered, [] when unavailable
const OTHER = "other"; // the image select's choice for a reference typed by hand
const PINNED = /^(?:[^\s@]+@)?sha256:[0-9a-f]{64}$/;
const TABLE_LINE = /^([A-Za-z.][A-Za-z0-9._]*)\s*=\s*(\S+)$/;
let stationNodes = []; // the collaboration's nodes, for the relay's stations

function showFieldsets() {
  const algorithm = form.algorithm.value;
  for (const fs of $$("fieldset[data-algorithm]", form)) {
    const on = fs.dataset.algorithm.split(" ").includes(algorithm);
    fs.hidden = !on;
    fs.disabled = !on;
  }
  showImageRef();
  showRelay();
}

const checkedIds = (name) => $$(`input[name="${name}"]:checked`, form).map((c) => Number(c.value));

// The relay's stations are asked for only with the relay; the script runs at every
// target node, so with stations chosen one target is usually what is meant: say so,
// and offer it (a chosen station that is online, else the first chosen).
function showRelay() {
  const on = form.algorithm.value === "image" && form.relay.checked;
  const box = $("#relay-stations");
  box.hidden = !on;
  box.disabled = !on;
  const stations = checkedIds("relay_station");
  const targets = checkedIds("node_ids");
  const suggestion = $("#relay-suggestion");
  const chosen = stationNodes.filter((n) => stations.includes(n.id));
  const pick = chosen.find((n) => n.online) || chosen[0];
  suggestion.hidden = !on || !pick || targets.length === 1;
  if (suggestion.hidden) return;
  $("#relay-suggestion-text").textContent =
    `The script runs at every station checked under Stations (${targets.length} now), and each run reaches ` +
    `the ${chosen.length} station(s) above. To run it once, run it at one station, e.g. ${pick.name}.`;
  const button = $("#relay-one-target");
  button.textContent = `Run it at ${pick.name} only`;
  button.onclick = () => {
    for (const target of $$('input[name="node_ids"]', form)) target.checked = Number(target.value) === pick.id;
    showRelay();
    $(`#node-${pick.id}`).focus();
  };
}

// The reference field is for an image the stations do not know yet.
function showImageRef() {
  const on = form.image.value === OTHER;
  $("#image-ref-field").hidden = !on;
  form.image_ref.disabled = !on;
}

// Where an image may run, in words: "approved at node-a; rejected at node-b".
function whereItRuns(img) {
  const ok = img.nodes.filter((n) => n.may_run).map((n) => n.node_name);
  return ok.length ? `may run at ${ok.join(", ")}` : "approved at no station yet";
}

async function loadStations(orgName) {
  const id = Number(form.collaboration_id.value);
  if (!id) return;
  const nodes = await get(`/nodes${query({ collaboration_id: id, limit: 1000 })}`);
  replace(
    "#station-list",
    nodes.length
      ? h(
          "ul",
          { class: "checks" },
          nodes.map((n) =>
            h(
              "li",
              {},
              h("input", { type: "checkbox", id: `node-${n.id}`, name: "node_ids", value: n.id, checked: true }),
              h(
                "label",
                { for: `node-${n.id}` },
                `${n.name} (${orgName.get(n.organization_id) || "?"}) — ${n.online ? "online" : "offline"}`,
              ),
            ),
          ),
        )
      : empty("This collaboration has no stations yet."),
  );
  stationNodes = nodes;
  replace(
    "#relay-station-list",
    nodes.length
      ? h(
          "ul",
          { class: "checks" },
          nodes.map((n) =>
            h(
              "li",
              {},
              h("input", { type: "checkbox", id: `relay-node-${n.id}`, name: "relay_station", value: n.id, checked: true }),
              h("label", { for: `relay-node-${n.id}` }, `${n.name} — ${n.online ? "online" : "offline"}`),
            ),
          ),
        )
      : empty("This collaboration has no stations yet."),
  );
  showRelay();
  images = [];
  const select = form.image;
  try {
    images = await get(`/collaborations/${id}/images`);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
  }
  // Approved images first: they are what a researcher can run.
  const ordered = [...images].sort((a, b) => b.nodes.filter((n) => n.may_run).length - a.nodes.filter((n) => n.may_run).length);
  replace(select, [
    ...ordered.map((img) =>
      h("option", { value: img.digest }, `${img.image || "(no name)"} ${img.digest.slice(0, 19)}… — ${whereItRuns(img)}`),
    ),
    h("option", { value: OTHER }, "Another image (give its reference)"),
  ]);
  showImageRef();
}

// "D = demo/cohort/patients" lines -> {D: "demo/cohort/patients"}; null if a line is wrong.
function parseTables(text) {
  const tables = {};
  for (const line of (text || "").split("\n").map((l) => l.trim()).filter(Boolean)) {
    const m = TABLE_LINE.exec(line);
    if (!m) return null;
    tables[m[1]] = m[2];
  }
  return tables;
}

// Checks in the browser what the API would refuse anyway, to put the message next to
// the field at once; the API checks everything again.
function validate(values) {
  const problems = {};
  const algorithm = values.algorithm;
  if (!values.collaboration_id) problems.collaboration_id = ["Choose a collaboration."];
  if (algorithm === "glm" || algorithm === "aggregate") {
    if (!values.table) problems.table = ["Name the table, e.g. demo/cohort/patients."];
  }
  if (algorithm === "glm" && !/~/.test(values.formula || "")) {
    problems.formula = ["Write a formula with a ~, e.g. outcome ~ age + bmi."];
  }
  if (algorithm === "aggregate") {
    if (!values.symbol) problems.symbol = ["Give the symbol the table is assigned to."];
    if (!(values.expressions || "").trim()) problems.expressions = ["Give at least one expression."];
  }
  if (algorithm === "image") {
    if (!values.image) problems.image = ["Choose an image."];
    if (values.image === OTHER && !PINNED.test(values.image_ref || "")) {
      problems.image_ref = ["Give the image with its digest, e.g. registry.example/team/analysis:1.0@sha256:<64 hex digits>."];
    }
    if (parseTables(values.tables) === null) problems.tables = ["One table per line, as symbol = table, e.g. D = demo/cohort/patients."];
    if (!values.script) problems.script = ["Write the script the image runs."];
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(values.script_name || "")) {
      problems.script_name = ["Letters, digits, '.', '_', '-'; e.g. analysis.py."];
    }
    if (form.relay.checked && !checkedIds("relay_station").length) {
      problems.stations = ["Choose at least one station the script reaches, or untick the relay."];
    }
  }
  if (algorithm === "echo") {
    try {
      const parsed = JSON.parse(values.parameters || "{}");
      if (typeof parsed !== "object" || Array.isArray(parsed) || parsed === null) throw new Error();
    } catch {
      problems.parameters = ["Write a JSON object, e.g. {\"k\": 1}."];
    }
  }
  if (!$$('input[name="node_ids"]:checked', form).length) problems.node_ids = ["Choose at least one station."];
  if (values.timeout && !(Number(values.timeout) >= 1)) problems.timeout = ["A whole number of seconds, 1 or more."];
  return problems;
}

function request(values) {
  const body = {
    collaboration_id: Number(values.collaboration_id),
    node_ids: $$('input[name="node_ids"]:checked', form).map((c) => Number(c.value)),
  };
  if (values.name) body.name = values.name;
  if (values.timeout) body.timeout = Number(values.timeout);
  const algorithm = values.algorithm;
  if (algorithm === "image") {
    if (values.image === OTHER) {
      body.image = values.image_ref;
    } else {
      const img = images.find((i) => i.digest === values.image);
      body.image = img && img.image && !img.image.startsWith("sha256:") ? `${img.image.split("@")[0]}@${img.digest}` : values.image;
    }
    body.files = { [values.script_name]: values.script };
    body.parameters = { script: values.script_name };
    const tables = parseTables(values.tables);
    if (tables && Object.keys(tables).length) body.parameters.tables = tables;
    if (form.relay.checked) {
      body.relay = true;
      body.stations = checkedIds("relay_station");
    }
    return ["/image-tasks", body];
  }
  body.algorithm = algorithm;
  if (algorithm === "glm") {
    body.parameters = { table: values.table, formula: values.formula, family: values.family };
  } else if (algorithm === "aggregate") {
    body.parameters = {
      table: values.table,
      symbol: values.symbol,
      expressions: values.expressions.split("\n").map((e) => e.trim()).filter(Boolean),
    };
  } else if (algorithm === "echo") {
    body.parameters = JSON.parse(values.parameters || "{}");
  } else {
    body.parameters = {};
  }
  return ["/tasks", body];
}

// The API names parameters' fields inside `parameters`; they go next to their inputs.
function parameterErrors(messages) {
  if (!messages || Array.isArray(messages)) return fieldError(form, form.algorithm.value === "echo" ? "parameters" : "table", messages);
  let all = true;
  for (const [key, value] of Object.entries(messages)) all = fieldError(form, key, value) && all;
  return all;
}

run(async () => {
  const { me, roles } = await initShell();
  if (!roles.has("researcher")) {
    replace(form, empty("Submitting tasks needs the researcher role in a collaboration."));
    return;
  }
  const [collabs, orgs] = await Promise.all([get("/collaborations"), get("/organizations?limit=1000")]);
  const orgName = new Map(orgs.map((o) => [o.id, o.name]));
  const mine = collabs.filter((c) => rolesIn(me, c).has("researcher"));
  replace(form.collaboration_id, mine.map((c) => h("option", { value: c.id }, c.name)));
  const wanted = new URLSearchParams(location.search).get("collaboration");
  if (wanted && mine.some((c) => String(c.id) === wanted)) form.collaboration_id.value = wanted;
  form.collaboration_id.addEventListener("change", () => loadStations(orgName));
  form.algorithm.addEventListener("change", showFieldsets);
  form.image.addEventListener("change", showImageRef);
  // Ticking the relay, a station or a target may change the suggestion.
  form.addEventListener("change", (event) => {
    if (["relay", "relay_station", "node_ids"].includes(event.target.name)) showRelay();
  });
  showFieldsets();
  await loadStations(orgName);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const values = formValues(form);
    const problems = validate(values);
    if (Object.keys(problems).length) {
      showApiError(form, new ApiError(400, "Please correct the fields marked below.", problems));
      return;
    }
    const [path, body] = request(values);
    try {
      const task = await post(path, body);
      location.assign(`/console/tasks/${task.id}`);
    } catch (err) {
      const map = {
        parameters: parameterErrors,
        files: "script",
        input: "tables",
        image: form.image.value === OTHER ? "image_ref" : "image",
      };
      showApiError(form, err, map);
    }
  });
});
