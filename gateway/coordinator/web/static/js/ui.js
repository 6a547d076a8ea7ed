// Small DOM helpers shared by the pages: an element builder, field messages next to
// the fields, a confirmation dialog, tables, times and statuses.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

export function replace(target, ...children) {
  const el = typeof target === "string" ? $(target) : target;
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return el;
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso.endsWith("Z") || iso.includes("+") ? iso : `${iso}Z`);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function badge(status) {
  return h("span", { class: `badge s-${status}` }, status);
}

export function table(headers, rows, caption) {
  return h(
    "table",
    {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))),
    ),
  );
}

export function empty(text) {
  return h("p", { class: "empty" }, text);
}

export function pageError(message) {
  const box = $("#page-error");
  if (!message) {
    box.hidden = true;
    return;
  }
  box.textContent = message;
  box.hidden = false;
}

// Field messages: clears the old ones, then puts each of the API's field errors
// (`{"errors": {"field": ["..."]}}`) right after its field, tied to it by
// aria-describedby; what names no field shows at the top of the form.
export function clearErrors(form) {
  for (const el of $$(".field-error", form)) el.remove();
  for (const el of $$("[aria-invalid]", form)) {
    el.removeAttribute("aria-invalid");
    const ids = (el.getAttribute("aria-describedby") || "")
      .split(" ")
      .filter((id) => id && !id.endsWith("-error"));
    if (ids.length) el.setAttribute("aria-describedby", ids.join(" "));
    else el.removeAttribute("aria-describedby");
  }
  const top = $(".form-error", form);
  if (top) {
    top.hidden = true;
    top.textContent = "";
  }
}

function flatten(messages) {
  if (Array.isArray(messages)) return messages.map((m) => (typeof m === "string" ? m : JSON.stringify(m)));
  if (messages && typeof messages === "object") {
    return Object.entries(messages).flatMap(([k, v]) => flatten(v).map((m) => `${k}: ${m}`));
  }
  return [String(messages)];
}

export function fieldError(form, name, messages) {
  const field = form.querySelector(`[name="${name}"]`) || form.querySelector(`[data-field="${name}"]`);
  if (!field) return false;
  const id = `${field.id || name}-error`;
  const p = h("p", { class: "field-error", id }, flatten(messages).join(" "));
  // A message about a fieldset goes under its legend; one about a checkbox after its
  // row (checkbox and label), not between the two.
  const row = field.type === "checkbox" ? field.closest(".check") : null;
  const anchor = field.tagName === "FIELDSET" ? field.querySelector("legend") : row || field;
  anchor.after(p);
  field.setAttribute("aria-invalid", "true");
  const described = field.getAttribute("aria-describedby");
  field.setAttribute("aria-describedby", described ? `${described} ${id}` : id);
  return true;
}

export function formError(form, message) {
  const top = $(".form-error", form);
  top.textContent = message;
  top.hidden = false;
}

// Shows an API error on a form: field messages next to their fields, the rest on top;
// focus moves to the first field in error so a keyboard user lands on it.
export function showApiError(form, err, fieldMap = {}) {
  clearErrors(form);
  const rest = [];
  if (err.errors && typeof err.errors === "object") {
    for (const [key, messages] of Object.entries(err.errors)) {
      const target = fieldMap[key] || key;
      if (typeof target === "function") {
        if (!target(messages)) rest.push(...flatten(messages));
      } else if (!fieldError(form, target, messages)) {
        rest.push(...flatten(messages).map((m) => `${key}: ${m}`));
      }
    }
  }
  formError(form, rest.length ? `${err.message} ${rest.join(" ")}` : err.message);
  const first = $("[aria-invalid]", form);
  (first && first.tagName !== "FIELDSET" ? first : $(".form-error", form)).focus?.();
}

// Every destructive action is confirmed in a modal dialog (keyboard: Tab, Escape).
export function confirmAction(text, okLabel = "Confirm") {
  const dialog = $("#confirm-dialog");
  $("#confirm-text", dialog).textContent = text;
  $("#confirm-ok", dialog).textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("#confirm-cancel", dialog).focus();
  });
}

export function download(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function formValues(form) {
  const data = {};
  for (const [k, v] of new FormData(form).entries()) data[k] = typeof v === "string" ? v.trim() : v;
  return data;
}
