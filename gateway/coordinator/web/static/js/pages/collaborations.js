import { get } from "../api.js";
import { initShell, rolesIn, run } from "../shell.js";
import { badge, empty, fmtTime, h, replace, table } from "../ui.js";

run(async () => {
  const { me } = await initShell();
  const [collabs, orgs, tasks] = await Promise.all([
    get("/collaborations"),
    get("/organizations?limit=1000"),
    get("/tasks?limit=20"),
  ]);
  const orgName = new Map(orgs.map((o) => [o.id, o.name]));
  const byId = new Map(collabs.map((c) => [c.id, c]));
  replace(
    "#collaborations",
    collabs.length
      ? table(
          ["Name", "Organisations", "Your roles"],
          collabs.map((c) => [
            h("a", { href: `/console/collaborations/${c.id}` }, c.name),
            c.organization_ids.map((id) => orgName.get(id) || `#${id}`).join(", "),
            [...rolesIn(me, c)].sort().join(", "),
          ]),
        )
      : empty("You hold no role in any collaboration yet. Ask an administrator."),
  );
  replace(
    "#tasks",
    tasks.length
      ? table(
          ["Task", "Collaboration", "Analysis", "Status", "Created"],
          tasks.map((t) => [
            h("a", { href: `/console/tasks/${t.id}` }, t.name || `Task ${t.id}`),
            byId.get(t.collaboration_id)?.name || `#${t.collaboration_id}`,
            t.algorithm,
            badge(t.status),
            fmtTime(t.created_at),
          ]),
        )
      : empty("No tasks yet."),
  );
});
