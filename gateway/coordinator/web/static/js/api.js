// The REST API, called with the access token from /api/auth/login. The tokens live in
// sessionStorage: a closed tab forgets them, and other sites cannot read them.
const KEY = "dsgateway.tokens";

export class ApiError extends Error {
  constructor(status, message, errors) {
    super(message);
    this.status = status;
    this.errors = errors || null; // field -> [messages] on 400/422
  }
}

function stored() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

export function signedIn() {
  return stored() !== null;
}

async function send(method, path, body, token) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(`/api${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "The coordinator cannot be reached. Check your connection and try again.");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  if (!response.ok) {
    const message = (data && data.message) || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, data && data.errors);
  }
  return data;
}

export async function login(username, password) {
  const tokens = await send("POST", "/auth/login", { username, password });
  sessionStorage.setItem(KEY, JSON.stringify(tokens));
}

export async function logout() {
  const tokens = stored();
  sessionStorage.removeItem(KEY);
  if (tokens) {
    try {
      await send("POST", "/auth/logout", {}, tokens.access_token);
    } catch {
      // The token may have expired already; it is forgotten here either way.
    }
  }
}

async function refresh() {
  const tokens = stored();
  if (!tokens) return false;
  try {
    const fresh = await send("POST", "/auth/refresh", { refresh_token: tokens.refresh_token });
    sessionStorage.setItem(KEY, JSON.stringify(fresh));
    return true;
  } catch {
    sessionStorage.removeItem(KEY);
    return false;
  }
}

export function toLogin() {
  const next = location.pathname + location.search;
  location.assign(`/console/login?next=${encodeURIComponent(next)}`);
}

// Calls the API; an expired access token is refreshed once, and without a valid session
// the user is sent to the sign-in page.
export async function api(method, path, body) {
  const tokens = stored();
  if (!tokens) {
    toLogin();
    throw new ApiError(401, "Sign in first.");
  }
  try {
    return await send(method, path, body, tokens.access_token);
  } catch (err) {
    if (err.status !== 401) throw err;
    if (!(await refresh())) {
      toLogin();
      throw err;
    }
    return send(method, path, body, stored().access_token);
  }
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body === undefined ? {} : body);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
