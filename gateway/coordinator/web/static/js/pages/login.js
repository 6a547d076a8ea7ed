import { login } from "../api.js";
import { run } from "../shell.js";
import { $, clearErrors, fieldError, formValues, showApiError } from "../ui.js";

// Only paths inside the console: a crafted ?next= must not send anyone elsewhere.
function nextPage() {
  const next = new URLSearchParams(location.search).get("next") || "";
  return /^\/console\/[^/]/.test(next) || next === "/console/" ? next : "/console/";
}

run(async () => {
  const form = $("#login-form");
  $("#username").focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const { username, password } = formValues(form);
    let missing = false;
    if (!username) missing = fieldError(form, "username", ["Enter your user name."]) || true;
    if (!form.password.value) missing = fieldError(form, "password", ["Enter your password."]) || true;
    if (missing) {
      $("[aria-invalid]", form).focus();
      return;
    }
    try {
      await login(username, form.password.value);
      location.assign(nextPage());
    } catch (err) {
      showApiError(form, err);
    }
  });
});
