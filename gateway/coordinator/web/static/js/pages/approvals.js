import { ApiError, get, post } from "../api.js";
import { initShell, run } from "../shell.js";
import { $, badge, clearErrors, confirmAction, empty, fieldError, fmtTime, h, pageError, replace, showApiError, table } from "../ui.js";

const dialog = $("#decision-dialog");
const form = $("#decision-form");
let stewardNodes = [];
let collabName = new Map();

// The nodes this user may decide for: data steward (or admin) of the node's organisation.
function decides(me, node) {
  return (me.roles || []).some(
    (r) =>
      (r.name === "data_steward" || r.name === "admin")
      && (r.organization_id == null ? r.name === "admin" && r.collaboration_id == null : r.organization_id === node.organization_id)
      && (r.collaboration_id == null || r.collaboration_id === node.collaboration_id),
  );
}

// Asks for the reason in a dialog, then sends the decision; resolves when done or cancelled.
function decide(node, entry, decision) {
  $("#decision-title").textContent = `${decision[0].toUpperCase()}${decision.slice(1)} this image at ${node.name}?`;
  $("#decision-what").textContent = `${entry.image || "(no name)"} ${entry.digest}`;
  $("#decision-ok").textContent = decision[0].toUpperCase() + decision.slice(1);
  $("#decision-ok").className = decision === "approve" ? "" : "danger";
  clearErrors(form);
  form.reason.value = "";
  return new Promise((resolve) => {
    const submit = async (event) => {
      event.preventDefault();
      clearErrors(form);
      const reason = form.reason.value.trim();
      if (!reason) {
        fieldError(form, "reason", ["Give a reason: the researcher and the audit trail see it."]);
        form.reason.focus();
        return;
      }
      try {
        const body = { digest: entry.digest, decision, reason };
        if (entry.image && decision === "approve") body.image = entry.image;
        await post(`/nodes/${node.id}/images/decisions`, body);
        close(true);
      } catch (err) {
        showApiError(form, err);
      }
    };
    const close = (done) => {
      form.removeEventListener("submit", submit);
      dialog.close();
      resolve(done);
    };
    form.addEventListener("submit", submit);
    $("#decision-cancel").onclick = () => close(false);
    dialog.addEventListener("cancel", () => close(false), { once: true });
    dialog.showModal();
    form.reason.focus();
  });
}

function decidedText(entry, queued) {
  const done = entry.decided_by ? `${entry.decided_by}, ${fmtTime(entry.decided_at)}${entry.reason ? `: ${entry.reason}` : ""}` : "";
  const waiting = queued ? `${queued.decision} queued (${queued.reason}); the station applies it on its next sync` : "";
  return [done, waiting].filter(Boolean).join(" — ") || "—";
}

function actions(node, entry, reload) {
  const btn = (label, decision, cls) =>
    h("button", {
      type: "button",
      class: `small ${cls}`,
      onclick: async () => {
        if (decision === "revoke" && !(await confirmAction(`Revoke ${entry.digest.slice(0, 19)}… at ${node.name}? Runs of it there stop being allowed.`, "Continue"))) return;
        if (await decide(node, entry, decision)) await reload();
      },
    }, label);
  if (entry.state === "approved") return btn("Revoke", "revoke", "danger");
  return h("span", { class: "actions-inline" }, btn("Approve", "approve", ""), " ", btn("Reject", "reject", "danger"));
}

async function load() {
  const state = $("#state-filter").value;
  const sections = [];
  for (const node of stewardNodes) {
    let list;
    try {
      list = await get(`/nodes/${node.id}/images`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        sections.push(h("section", {}, h("h2", {}, node.name), empty("This coordinator does not mirror image approvals (its images API is missing).")));
        continue;
      }
      throw err;
    }
    // Decisions made here wait for the station's next sync: said next to the image.
    let queued = new Map();
    try {
      const decisions = await get(`/nodes/${node.id}/images/decisions`);
      queued = new Map(decisions.filter((d) => d.status === "queued").map((d) => [d.digest, d]));
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
    }
    const shown = list.filter((e) => !state || e.state === state);
    sections.push(
      h(
        "section",
        { "aria-label": `Images at ${node.name}` },
        h("h2", {}, `${node.name} (${collabName.get(node.collaboration_id) || ""})`),
        shown.length
          ? table(
              ["Image", "Digest", "State", "Asked by", "For collaboration", "Description", "Decided", "Action"],
              shown.map((e) => [
                // The digest has its own column: the name alone keeps the table on a laptop screen.
                e.image ? h("span", { class: "ref" }, e.image.split("@")[0]) : "—",
                h("code", { title: e.digest }, `${e.digest.slice(0, 19)}…`),
                badge(e.state),
                e.requested_by || "—",
                e.requested_collaboration_id ? collabName.get(e.requested_collaboration_id) || `#${e.requested_collaboration_id}` : "—",
                Object.entries(e.labels || {}).map(([k, v]) => `${k}: ${v}`).join("; ") || "—",
                decidedText(e, queued.get(e.digest)),
                actions(node, e, load),
              ]),
            )
          : empty(state ? `No ${state} images at this station.` : "No images known at this station."),
      ),
    );
  }
  replace("#approvals", sections.length ? sections : empty("You are not data steward of any station."));
}

run(async () => {
  const { me } = await initShell();
  const [nodes, collabs] = await Promise.all([get("/nodes?limit=1000"), get("/collaborations")]);
  collabName = new Map(collabs.map((c) => [c.id, c.name]));
  stewardNodes = nodes.filter((n) => decides(me, n));
  $("#state-filter").addEventListener("change", () => load().catch((err) => pageError(err.message)));
  await load();
});
