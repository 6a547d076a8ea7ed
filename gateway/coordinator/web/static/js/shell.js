// What every signed-in page does first: who am I, which links my roles open, sign out.
import { get, logout, signedIn, toLogin } from "./api.js";
import { $, $$, pageError } from "./ui.js";

export function roleNames(me) {
  return new Set((me.roles || []).map((r) => r.name));
}

export function isSuperuser(me) {
  return (me.roles || []).some((r) => r.name === "admin" && r.organization_id == null && r.collaboration_id == null);
}

// Shows elements marked data-needs="role other" when the user holds one of those roles.
export function showForRoles(roles, root = document) {
  for (const el of $$("[data-needs]", root)) {
    el.hidden = !el.dataset.needs.split(" ").some((r) => roles.has(r));
  }
}

export async function initShell() {
  if (!signedIn()) {
    toLogin();
    return new Promise(() => {}); // the page is being left
  }
  $("#sign-out").addEventListener("click", async () => {
    await logout();
    location.assign("/console/login");
  });
  const page = document.body.dataset.page;
  for (const a of $$("[data-nav]")) {
    if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
  }
  const me = await get("/auth/me");
  const roles = roleNames(me);
  $("#whoami").textContent = `${me.username} (${[...roles].sort().join(", ") || "no roles"})`;
  showForRoles(roles);
  return { me, roles };
}

// Runs a page's main function and shows what went wrong at the top of the page.
export function run(main) {
  const go = async () => {
    try {
      await main();
    } catch (err) {
      if (err && err.status === 401) return; // on the way to the sign-in page
      pageError(err && err.message ? err.message : String(err));
    }
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", go);
  else go();
}

// The roles the user holds in a collaboration (as authz.Principal.roles_in counts them).
export function rolesIn(me, collab) {
  const names = new Set();
  for (const r of me.roles || []) {
    let reaches = true;
    if (r.collaboration_id != null) reaches = r.collaboration_id === collab.id;
    else if (r.organization_id != null) reaches = collab.organization_ids.includes(r.organization_id);
    if (reaches) names.add(r.name);
  }
  return names;
}
