// The session and every request to the node. The keys live in this module's memory (and,
// only if the user asks, in the tab's sessionStorage); they go to the node as headers,
// never in a URL, a cookie or a log, and are dropped on sign-out or after the idle timeout.

const STORE = "secureconf.session";
let session = null;
let config = null;
let idleTimer = null;
let lastActivity = Date.now();
const listeners = new Set();

export class APIError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export async function loadConfig() {
  if (!config) {
    const r = await fetch("/ui/config.json", { cache: "no-store" });
    config = await r.json();
  }
  return config;
}

export function current() { return session; }

export function onSignOut(listener) { listeners.add(listener); }

function persist() {
  if (session && session.remember) sessionStorage.setItem(STORE, JSON.stringify(session));
  else sessionStorage.removeItem(STORE);
}

/// A session kept in the tab, unless it has been idle past the timeout (a reload is no
/// activity: the last key press or click is kept with it).
export async function restore() {
  const raw = sessionStorage.getItem(STORE);
  if (!raw) return null;
  try {
    session = JSON.parse(raw);
  } catch {
    session = null;
  }
  const minutes = (await loadConfig()).idle_minutes;
  if (!session || !(Date.now() - (session.lastActivity || 0) < minutes * 60_000)) {
    session = null;
    sessionStorage.removeItem(STORE);
    return null;
  }
  startIdleTimer(session.lastActivity);
  return session;
}

/// Signs in: in tokens mode with a username and password (a login token comes back), in
/// apikey mode with the API key when the node requires one; the user key is checked by
/// listing what it opens (401 when it opens nothing where there are entries).
export async function signIn({ username, password, apiKey, userKey, remember }) {
  const c = await loadConfig();
  if (!userKey || userKey.length < c.min_user_key_length) {
    throw new APIError(422, `The user key must be at least ${c.min_user_key_length} characters`);
  }
  const candidate = { userKey, remember: !!remember, label: "" };
  if (c.auth_mode === "tokens") {
    if (apiKey) {
      candidate.apiKey = apiKey;
      candidate.label = "Signed in with the API key (break-glass)";
    } else {
      const r = await fetch("/auth/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username, password }),
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new APIError(r.status, body.detail || `Sign-in failed (${r.status})`);
      candidate.token = body.access_token;
      candidate.label = `Signed in as user:${username}`;
    }
  } else {
    candidate.apiKey = apiKey || undefined;
    candidate.label = apiKey ? "Signed in with a user key and the API key" : "Signed in with a user key";
  }
  candidate.lastActivity = Date.now();
  session = candidate;
  try {
    await request("GET", "/configs", { query: { limit: 1 } });
  } catch (e) {
    if (e.status !== 401 || !/user key/i.test(e.message)) {
      session = null;
      throw e;
    }
    // A user key that opens nothing yet is a new user key: signing in with it is allowed.
  }
  persist();
  startIdleTimer();
  return session;
}

export async function signOut(reason) {
  const was = session;
  session = null;
  sessionStorage.removeItem(STORE);
  clearInterval(idleTimer);
  if (was && was.token) {
    fetch("/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${was.token}` } }).catch(() => {});
  }
  for (const listener of listeners) listener(reason);
}

export function touch() {
  const now = Date.now();
  // Kept with a remembered session (at most every 10 s), so a reload cannot outlive the timeout.
  if (session && session.remember && now - (session.lastActivity || 0) > 10_000) {
    session.lastActivity = now;
    persist();
  }
  lastActivity = now;
}

function startIdleTimer(since = Date.now()) {
  clearInterval(idleTimer);
  lastActivity = since;
  idleTimer = setInterval(() => {
    const minutes = (config && config.idle_minutes) || 15;
    if (session && Date.now() - lastActivity > minutes * 60_000) signOut("idle");
  }, 5_000);
}

function headers(extra, withUserKey) {
  const h = { ...extra };
  if (!session) return h;
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  if (session.apiKey) h["X-API-Key"] = session.apiKey;
  if (withUserKey && session.userKey) h["X-User-Key"] = session.userKey;
  return h;
}

export function url(path, query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") params.set(k, v);
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

/// One request; resolves to { body, headers, status }, or throws an APIError carrying the
/// node's `detail`.
export async function request(method, path, { query, body, extraHeaders, userKey = true } = {}) {
  const init = { method, headers: headers(extraHeaders || {}, userKey), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(url(path, query), init);
  const text = await r.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
  if (!r.ok) {
    const detail = parsed && typeof parsed === "object" && parsed.detail ? parsed.detail : `${method} ${path}: ${r.status}`;
    if (r.status === 401 && session && session.token && /token/i.test(detail)) signOut("expired");
    throw new APIError(r.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return { body: parsed, headers: r.headers, status: r.status };
}

/// The node's Prometheus text, for the dashboard's charts (no credential: /metrics is open).
export async function metrics() {
  const r = await fetch("/metrics", { cache: "no-store" });
  return r.ok ? r.text() : "";
}
