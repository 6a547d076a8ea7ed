import { del, get, post } from "../api.js";
import { initShell, isSuperuser, run } from "../shell.js";
import { $, $$, clearErrors, confirmAction, empty, fieldError, fmtTime, formValues, h, pageError, replace, showApiError, table } from "../ui.js";

let orgs = [];
let collabs = [];
let users = [];
let nodes = [];
const orgName = (id) => orgs.find((o) => o.id === id)?.name || (id == null ? "—" : `#${id}`);
const collabName = (id) => collabs.find((c) => c.id === id)?.name || (id == null ? "—" : `#${id}`);

function options(select, items, label, keepFirst) {
  const first = keepFirst ? select.options[0] : null;
  replace(select, first, items.map((i) => h("option", { value: i.id }, label(i))));
}

// Runs an action after a confirmation; the page reloads its lists when it is done.
function danger(label, question, action) {
  return h("button", {
    type: "button",
    class: "small danger",
    onclick: async () => {
      if (!(await confirmAction(question, label))) return;
      try {
        await action();
        await reload();
      } catch (err) {
        pageError(err.message);
      }
    },
  }, label);
}

function roleText(r) {
  const scope = [r.organization_id != null ? `for ${orgName(r.organization_id)}` : null, r.collaboration_id != null ? `in ${collabName(r.collaboration_id)}` : null]
    .filter(Boolean)
    .join(" ");
  return `${r.name}${scope ? ` ${scope}` : " (everything)"}`;
}

async function reload() {
  [orgs, collabs, users, nodes] = await Promise.all([
    get("/organizations?limit=1000"),
    get("/collaborations"),
    get("/users?limit=1000"),
    get("/nodes?limit=1000"),
  ]);
  replace("#orgs", orgs.length ? table(["Name", "Description"], orgs.map((o) => [o.name, o.description || ""])) : empty("No organisations."));
  replace(
    "#users",
    users.length
      ? table(
          ["User", "Organisation", "Roles", "Last sign-in", ""],
          users.map((u) => [
            u.username,
            orgName(u.organization_id),
            h("ul", { class: "checks" }, (u.roles || []).map((r) => h("li", {}, roleText(r), " ", danger("Revoke", `Revoke the role ${roleText(r)} from ${u.username}?`, () => del(`/users/${u.id}/roles/${r.id}`))))),
            fmtTime(u.last_login),
            danger("Delete", `Delete the user ${u.username}? This cannot be undone.`, () => del(`/users/${u.id}`)),
          ]),
        )
      : empty("No users you manage."),
  );
  replace("#collabs", collabs.length ? table(["Name", "Organisations"], collabs.map((c) => [h("a", { href: `/console/collaborations/${c.id}` }, c.name), c.organization_ids.map(orgName).join(", ")])) : empty("No collaborations."));
  replace(
    "#admin-nodes",
    nodes.length
      ? table(
          ["Station", "Organisation", "Collaboration", "Key starts", "Online", ""],
          nodes.map((n) => [
            n.name,
            orgName(n.organization_id),
            collabName(n.collaboration_id),
            h("code", {}, n.api_key_prefix || ""),
            n.online ? "online" : "offline",
            h(
              "span",
              {},
              danger("New key", `Make a new API key for ${n.name}? The old key stops working at once.`, async () => showKey(await post(`/nodes/${n.id}/api-key`))),
              " ",
              danger("Remove", `Remove the station ${n.name} from ${collabName(n.collaboration_id)}?`, () => del(`/nodes/${n.id}`)),
            ),
          ]),
        )
      : empty("No stations registered."),
  );
  options($("#user-org"), orgs, (o) => o.name);
  options($("#role-user"), users, (u) => u.username);
  options($("#role-org"), orgs, (o) => o.name, true);
  options($("#role-collab"), collabs, (c) => c.name, true);
  options($("#node-collab"), collabs, (c) => c.name);
  options($("#node-org"), orgs, (o) => o.name);
  replace(
    "#collab-orgs",
    h("ul", { class: "checks" }, orgs.map((o) => h("li", {}, h("input", { type: "checkbox", id: `co-${o.id}`, name: "organization_ids", value: o.id }), h("label", { for: `co-${o.id}` }, o.name)))),
  );
}

// The API key is in this answer only: shown once, with a reminder that it cannot be seen again.
function showKey(node) {
  const box = $("#node-key");
  replace(
    box,
    h("p", {}, `API key of ${node.name} — copy it now, it is shown only this once:`),
    h("p", {}, h("code", { class: "key", id: "api-key", tabindex: "0" }, node.api_key)),
    h("p", {}, "Give it to the station's operator, who sets it as DSGATEWAY_NODE_API_KEY for the agent (docs/coordinator.md)."),
  );
  box.hidden = false;
  box.scrollIntoView({ block: "center" });
}

function onSubmit(form, build) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const required = $$("[required]", form).filter((el) => !el.value.trim());
    for (const el of required) fieldError(form, el.name, ["This is required."]);
    if (required.length) {
      required[0].focus();
      return;
    }
    try {
      const done = await build(formValues(form));
      form.reset();
      await reload();
      if (done) done();
    } catch (err) {
      showApiError(form, err);
    }
  });
}

run(async () => {
  const { me, roles } = await initShell();
  if (!roles.has("admin")) {
    replace("main", h("h1", {}, "Administration"), empty("This page is for administrators."));
    return;
  }
  if (!isSuperuser(me)) {
    $("#org-form").hidden = true;
    $("#collab-form").hidden = true;
  }
  await reload();
  onSubmit($("#org-form"), (v) => post("/organizations", { name: v.name, description: v.description }));
  onSubmit($("#user-form"), (v) =>
    post("/users", { username: v.username, password: $("#user-password").value, email: v.email || null, organization_id: Number(v.organization_id) }),
  );
  onSubmit($("#role-form"), (v) =>
    post(`/users/${v.user_id}/roles`, {
      name: v.name,
      organization_id: v.organization_id ? Number(v.organization_id) : null,
      collaboration_id: v.collaboration_id ? Number(v.collaboration_id) : null,
    }),
  );
  onSubmit($("#collab-form"), (v) =>
    post("/collaborations", {
      name: v.name,
      description: v.description,
      organization_ids: $$('input[name="organization_ids"]:checked').map((c) => Number(c.value)),
    }),
  );
  onSubmit($("#node-form"), async (v) => {
    const body = { collaboration_id: Number(v.collaboration_id), organization_id: Number(v.organization_id) };
    if (v.name) body.name = v.name;
    const projects = (v.projects || "").split(",").map((p) => p.trim()).filter(Boolean);
    if (projects.length) body.projects = projects;
    const node = await post("/nodes", body);
    return () => showKey(node);
  });
});
