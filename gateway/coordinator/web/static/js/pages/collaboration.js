import { get, query } from "../api.js";
import { initShell, rolesIn, run, showForRoles } from "../shell.js";
import { $, badge, empty, fmtTime, h, replace, table } from "../ui.js";

const id = Number(document.querySelector("main").dataset.id);

function online(node) {
  return node.online
    ? h("span", { class: "badge s-online" }, "online")
    : h("span", { class: "badge s-offline" }, "offline");
}

async function showNodes(orgName) {
  const nodes = await get(`/nodes${query({ collaboration_id: id, limit: 1000 })}`);
  replace(
    "#nodes",
    nodes.length
      ? table(
          ["Station", "Organisation", "Status", "Last seen"],
          nodes.map((n) => [n.name, orgName.get(n.organization_id) || `#${n.organization_id}`, online(n), fmtTime(n.last_seen)]),
        )
      : empty("No stations are registered in this collaboration yet."),
  );
  return nodes;
}

// A station's profiles, disclosure settings and agent policy, as its agent last
// reported them (GET /nodes/<id>/settings). Read-only: they live in the station's
// node.yaml and agent.yaml.
const SOURCE = { profile: "the profile (node.yaml)", package: "package default" };

// A policy list: null is "*" in agent.yaml, anything.
function listed(values, any, none = "none") {
  if (values == null) return any;
  return values.join(", ") || none;
}

// "node.yaml (profiles:)": where at the station a setting lives.
function whereSet(file, key) {
  return [h("code", {}, file), " (", h("code", {}, key), ")"];
}

function factList(facts) {
  return h("dl", { class: "summary" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function policyFacts(policy) {
  const collabs =
    policy.collaborations == null
      ? "any collaboration"
      : policy.collaborations.map((c) => (c === id ? `#${c} (this one)` : `#${c}`)).join(", ") || "none";
  return [
    h(
      "p",
      { class: "hint" },
      "From the station's ",
      whereSet("agent.yaml", "policy:"),
      ": the station checks every task run and relayed call against it, whatever the coordinator asks.",
    ),
    factList([
      ["Collaborations served", collabs],
      ["Researchers", listed(policy.users, "any researcher")],
      ["Algorithms", listed(policy.algorithms, "any algorithm")],
      ["Projects task runs read", listed(policy.projects, null)],
      ["Profile task runs use", policy.profile],
    ]),
    policy.collaborations != null && !policy.collaborations.includes(id)
      ? h("p", { class: "alert info" }, "This station's policy does not serve this collaboration: it refuses its tasks and relayed calls.")
      : null,
  ];
}

function policyCard(node, policy) {
  return h(
    "div",
    { class: "policy", role: "group", "aria-label": `Agent policy of ${node.name}` },
    h("h4", {}, "Agent policy"),
    policy
      ? policyFacts(policy)
      : empty("The station did not report its agent's policy (its agent is older than the policy report)."),
  );
}

function profileCard(node, p) {
  const packages = (p.packages || []).map((k) => `${k.name} ${k.version}`).join(", ") || "none";
  const facts = [
    ["Packages served", packages],
    ["Package whitelist", p.package_whitelist == null ? "every DataSHIELD package installed" : p.package_whitelist.join(", ") || "none"],
    ["Blacklist", (p.blacklist || []).join(", ") || "none"],
  ];
  if (p.methods) facts.push(["Methods", `${p.methods.aggregate} aggregate, ${p.methods.assign} assign`]);
  return h(
    "div",
    { class: "profile" },
    h("h4", {}, `Profile ${p.name}`),
    factList(facts),
    (p.settings || []).length
      ? table(
          ["Setting", "Value", "Set by"],
          p.settings.map((x) => [h("code", {}, x.name), h("code", {}, x.value), SOURCE[x.source] || x.source]),
          `Disclosure settings of profile ${p.name} at ${node.name}`,
        )
      : empty("No disclosure settings reported for this profile."),
    (p.withheld || []).length
      ? h("p", { class: "hint" }, "Also set at the station, values not shown here: ", p.withheld.map((n) => h("code", {}, n)).flatMap((c, i) => (i ? [", ", c] : [c])), ".")
      : null,
  );
}

// What the card shows, so that a refresh redraws it only when a report (or the list of
// stations) changed: a reader's place and selection are kept otherwise.
let shownSettings = null;

async function stationSettings(me, nodes, orgName) {
  $("#station-settings").hidden = !nodes.length;
  if (!nodes.length) return;
  const reports = await Promise.all(nodes.map((n) => get(`/nodes/${n.id}/settings`)));
  const shown = JSON.stringify([nodes.map((n) => [n.id, n.name, n.organization_id, n.projects]), reports]);
  if (shown === shownSettings) return;
  shownSettings = shown;
  replace(
    "#settings",
    nodes.map((n, i) => {
      const rep = reports[i];
      const steward = (me.roles || []).some(
        (r) => ["data_steward", "admin"].includes(r.name) && r.organization_id === n.organization_id
          && (r.collaboration_id == null || r.collaboration_id === id),
      );
      return h(
        "section",
        { class: "card station-settings", "data-node": n.name, "aria-label": `Settings of ${n.name}` },
        h("h3", {}, `${n.name} (${orgName.get(n.organization_id) || `#${n.organization_id}`})`),
        rep.reported
          ? h("p", {}, "Reported by the station's agent ", h("time", { datetime: rep.reported_at }, fmtTime(rep.reported_at)), ".")
          : h("p", { class: "empty" }, "Not reported yet: the station's agent reports its settings when it starts."),
        h(
          "p",
          { class: "hint" },
          "Read-only: these live in the station's own ",
          whereSet("node.yaml", "profiles:"),
          " and ",
          whereSet("agent.yaml", "policy:"),
          " and only the station changes them, ",
          steward ? "you as its data steward (the agent reports them again when the station restarts)" : "through its data steward",
          ". See docs/guides/data-stewards.md. Relay projects handed out for it: ",
          h("code", {}, (n.projects || []).join(", ") || "none"),
          ".",
        ),
        rep.reported ? policyCard(n, rep.policy) : null,
        rep.reported ? rep.profiles.map((p) => profileCard(n, p)) : null,
      );
    }),
  );
}

run(async () => {
  const { me } = await initShell();
  const [collab, orgs, tasks] = await Promise.all([
    get(`/collaborations/${id}`),
    get("/organizations?limit=1000"),
    get(`/tasks${query({ collaboration_id: id, limit: 50 })}`),
  ]);
  const orgName = new Map(orgs.map((o) => [o.id, o.name]));
  document.title = `${collab.name} · dsgateway`;
  $("#title").textContent = collab.name;
  $("#description").textContent = collab.description || "";
  const roles = rolesIn(me, collab);
  $("#my-roles").textContent = `Your roles here: ${[...roles].sort().join(", ")}. Organisations: ${collab.organization_ids
    .map((o) => orgName.get(o) || `#${o}`)
    .join(", ")}.`;
  showForRoles(roles, $("main"));
  $("#new-task").href = `/console/tasks/new?collaboration=${id}`;
  const nodes = await showNodes(orgName);
  await stationSettings(me, nodes, orgName);
  // Online/offline and the station settings, refreshed in place (a station that
  // restarts with new settings shows them here without a reload).
  setInterval(
    () =>
      showNodes(orgName)
        .then((fresh) => stationSettings(me, fresh, orgName))
        .catch(() => {}),
    10000,
  );
  replace(
    "#tasks",
    tasks.length
      ? table(
          ["Task", "Analysis", "Status", "Created", "Finished"],
          tasks.map((t) => [
            h("a", { href: `/console/tasks/${t.id}` }, t.name || `Task ${t.id}`),
            t.algorithm,
            badge(t.status),
            fmtTime(t.created_at),
            fmtTime(t.finished_at),
          ]),
        )
      : empty("No tasks in this collaboration yet."),
  );
});
