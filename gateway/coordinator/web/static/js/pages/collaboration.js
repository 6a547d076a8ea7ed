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

function stationSettings(me, nodes, orgName) {
  // Stewards of an organisation see where their station's settings live.
  const mine = nodes.filter((n) =>
    (me.roles || []).some(
      (r) => r.name === "data_steward" && r.organization_id === n.organization_id
        && (r.collaboration_id == null || r.collaboration_id === id),
    ),
  );
  if (!mine.length) return;
  $("#station-settings").hidden = false;
  replace(
    "#settings",
    mine.map((n) =>
      h(
        "div",
        { class: "card" },
        h("h3", {}, `${n.name} (${orgName.get(n.organization_id) || ""})`),
        h(
          "p",
          {},
          "The coordinator does not know this station's profiles and disclosure settings: they live in the station's own configuration (node.yaml: ",
          h("code", {}, "profiles"),
          ", ",
          h("code", {}, "disclosure"),
          ", and the agent's ",
          h("code", {}, "policy"),
          "), and only the station can change them. See docs/configuration.md. The relay projects the coordinator hands out for it: ",
          h("code", {}, (n.projects || []).join(", ") || "none"),
          ".",
        ),
      ),
    ),
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
  stationSettings(me, nodes, orgName);
  setInterval(() => showNodes(orgName).catch(() => {}), 10000);
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
