// Every request to the gateway goes through this module: one place for credentials, CSRF
// tokens and the 401 hook that sends the user back to the sign-in screen.

/** An HTTP error from the gateway (status > 0) or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

const unauthorizedHandlers = new Set();

/** Call `handler(error)` whenever the gateway answers 401 (a login page hooks in here). */
export function onUnauthorized(handler) {
  unauthorizedHandlers.add(handler);
  return () => unauthorizedHandlers.delete(handler);
}

async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message);
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
const CSRF_HEADER = "X-CSRF-Token";

/** The signed-in session's CSRF token, sent with every unsafe request (cookie sessions). */
const csrf = { token: null, pending: null };

async function csrfToken() {
  if (csrf.token) return csrf.token;
  if (!csrf.pending) {
    csrf.pending = fetch("/api/session", { credentials: "same-origin", cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((body) => (csrf.token = body?.csrf_token || null))
      .catch(() => null)
      .finally(() => (csrf.pending = null));
  }
  return csrf.pending;
}

/** Forget the session's CSRF token (after signing in or out). */
export function resetSession(token = null) {
  csrf.token = token;
}

/** fetch() with the gateway's conventions; resolves to the Response when it is 2xx. */
export async function request(path, options = {}, retried = false) {
  const method = (options.method || "GET").toUpperCase();
  const headers = new Headers(options.headers || {});
  if (!SAFE_METHODS.has(method)) {
    const token = await csrfToken();
    if (token) headers.set(CSRF_HEADER, token);
  }
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", cache: "no-store", ...options, headers });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "gateway unreachable");
  }
  if (response.ok) return response;
  const error = await errorFrom(response);
  if (response.status === 403 && !retried && /CSRF/i.test(error.message)) {
    csrf.token = null; // the session changed under us: fetch its token and try once more
    return request(path, options, true);
  }
  if (response.status === 401) {
    csrf.token = null;
    unauthorizedHandlers.forEach((handler) => handler(error));
  }
  throw error;
}

/** Sign in with a session cookie; resolves to the gateway's answer ({user, csrf_token, ...}). */
export async function signIn(username, password) {
  const response = await request("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password, kind: "cookie" }),
  });
  const body = await response.json();
  resetSession(body.csrf_token);
  return body;
}

/** The signed-in session ({user, csrf_token, must_change_password, ...}), or null when there is none. */
export async function getSession() {
  try {
    const body = await (await request("/api/session")).json();
    resetSession(body.csrf_token);
    return body;
  } catch (err) {
    if (err.status === 401) return null;
    throw err;
  }
}

/**
 * End this browser's session. Never throws: a session that already ended is signed out too.
 * Resolves to the identity provider's sign-out page to go to after an OpenID Connect
 * sign-in (the provider's session ends there too), else null.
 */
export async function signOut() {
  try {
    const response = await request("/api/session", { method: "DELETE" });
    if (response.status === 200) return (await response.json()).logout_url || null;
  } catch {
    // already ended (401) or the gateway is unreachable: the cookie is useless either way
  } finally {
    resetSession(null);
  }
  return null;
}

/** The "Sign in with ..." providers ([{id, title, url}]); none when the gateway cannot say. */
export async function signInProviders() {
  try {
    return await (await request("/api/session/providers")).json();
  } catch {
    return [];
  }
}

function jsonBody(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

/** Change one's own password; a refused password throws ApiError(400) naming the rule. */
export async function changePassword(oldPassword, newPassword) {
  return (await request("/api/session/password", jsonBody("POST", { old_password: oldPassword, new_password: newPassword }))).json();
}

const userPath = (username) => `/api/users/${encodeURIComponent(username)}`;

export async function listUsers() {
  return (await request("/api/users")).json();
}

/** Create an account; resolves to {user, password} (the one-time password, shown once). */
export async function createUser(fields) {
  return (await request("/api/users", jsonBody("POST", fields))).json();
}

/** Change an account: {disabled, role, areas, all_areas, display_name, locked: false}. */
export async function updateUser(username, changes) {
  return (await request(userPath(username), jsonBody("PATCH", changes))).json();
}

/** A new one-time password for an account; resolves to {password, must_change_password}. */
export async function resetPassword(username) {
  return (await request(`${userPath(username)}/reset-password`, { method: "POST" })).json();
}

/** The audit query URL for `filters` ({user, camera, action, outcome, from, to, limit, before, format}). */
export function auditUrl(filters = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) {
    if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `/api/audit?${text}` : "/api/audit";
}

/** Audit entries, newest first: {entries, next_before}. */
export async function listAudit(filters) {
  return (await request(auditUrl(filters))).json();
}

/** The newest signed checkpoints of the audit chain, newest first: {checkpoints}. */
export async function listAuditCheckpoints(limit = 1) {
  return (await request(`/api/audit/checkpoints?limit=${limit}`)).json();
}

const cameraPath = (id) => `/api/cameras/${encodeURIComponent(id)}`;

export async function listCameras(options) {
  return (await request("/api/cameras", options)).json();
}

export function snapshotUrl(id, width = 320) {
  return `${cameraPath(id)}/snapshot.jpg?width=${width}`;
}

export function hlsUrl(id) {
  return `${cameraPath(id)}/hls/index.m3u8`;
}

/** A camera's recorded spans and gaps in [from, to) (epoch seconds): {camera, from, to, items}.
 * The gateway answers in pages (`next` is where the following one starts); all are joined. */
export async function listRecordings(id, from, to, options) {
  let answer = null;
  for (let start = from, pages = 0; start !== null && pages < 100; pages++) {
    const query = new URLSearchParams({ from: String(start), to: String(to) });
    if (answer) query.set("detail", answer.detail);
    const page = await (await request(`${cameraPath(id)}/recordings?${query}`, options)).json();
    if (answer) answer.items.push(...page.items);
    else answer = { ...page, items: [...page.items] };
    start = page.next ?? null;
  }
  return answer;
}

/** The HLS VOD playlist of a camera's recordings in [from, to); playback begins at `start` (wall clock). */
export function recordingsPlaylistUrl(id, from, to, start = null) {
  const query = new URLSearchParams({ from: String(from), to: String(to) });
  if (start !== null && start !== undefined) query.set("start", String(start));
  return `${cameraPath(id)}/recordings/playlist.m3u8?${query}`;
}

/** POST a WHEP offer for the camera's `profile` stream ("main" or "sub"); returns
 * `{answer, location, profile}`: the session URL to DELETE later, and the stream the gateway
 * sends (main when the camera has no sub stream now, e.g. while it is privacy-masked). */
export async function whepOffer(id, offerSdp, { profile = "main", ...options } = {}) {
  const query = profile && profile !== "main" ? `?profile=${encodeURIComponent(profile)}` : "";
  const response = await request(`${cameraPath(id)}/whep${query}`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: offerSdp,
    ...options,
  });
  const location = response.headers.get("Location");
  return {
    answer: await response.text(),
    location: location && new URL(location, response.url).href,
    profile: response.headers.get("Citygate-Profile") || "main",
  };
}

/** WHEP DELETEs still in flight: signing out waits for them while the session is valid. */
const pendingReleases = new Set();

/** End a WHEP session; `keepalive` lets it finish while the page unloads. Never throws. */
export function whepDelete(location) {
  const done = request(location, { method: "DELETE", keepalive: true }).then(
    () => {},
    () => {}, // the session is gone or the gateway is: either way nothing is left to release
  );
  pendingReleases.add(done);
  done.finally(() => pendingReleases.delete(done));
  return done;
}

/** Resolves when every WHEP DELETE started so far has finished. */
export async function releasesSettled() {
  await Promise.allSettled([...pendingReleases]);
}

/** True when the hls.js module can be fetched (it is installed with npm, not committed). */
export async function hlsLibraryPresent(url) {
  try {
    return (await fetch(url, { method: "HEAD", cache: "no-store" })).ok;
  } catch {
    return false;
  }
}

/** A camera's privacy masks: {camera, version, masks: [{index, points, filter, options, source, locked}], filters}. */
export async function getMasks(id) {
  return (await request(`${cameraPath(id)}/masks`)).json();
}

/** Replace a camera's (database) masks as a new version; `version` is the one last read. */
export async function saveMasks(id, masks, reason, version) {
  const body = JSON.stringify({ masks, reason, version });
  const headers = { "Content-Type": "application/json" };
  return (await request(`${cameraPath(id)}/masks`, { method: "PUT", headers, body })).json();
}
