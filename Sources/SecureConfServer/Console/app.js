// The console's shell: sign-in, navigation (hash routes), theme, idle sign-out.
import * as api from "./api.js";
import { pages } from "./pages.js";

const $ = (id) => document.getElementById(id);
let stopPage = null;

function showError(el, error) {
  el.textContent = error.message || String(error);
  el.hidden = false;
}

async function route() {
  if (stopPage) { stopPage(); stopPage = null; }
  const session = api.current();
  $("bar").hidden = !session;
  $("signin").hidden = !!session;
  $("page").hidden = !session;
  if (!session) {
    $("userkey").focus();
    return;
  }
  const [path, search] = (location.hash.slice(2) || "dashboard").split("?");
  const name = Object.hasOwn(pages, path) ? path : "dashboard";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === name || (name === "history" && a.dataset.page === "configs")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const page = $("page");
  page.replaceChildren();
  document.title = `SecureConf: ${name}`;
  try {
    stopPage = (await pages[name](page, new URLSearchParams(search || ""))) || null;
  } catch (e) {
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = e.message;
    page.append(p);
  }
  $("main").focus({ preventScroll: true });
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("secureconf.theme", theme);
}

async function start() {
  const config = await api.loadConfig();
  $("login-fields").hidden = config.auth_mode !== "tokens";
  const apiKeyLabel = $("apikey").previousElementSibling;
  if (config.auth_mode === "tokens") apiKeyLabel.textContent = "API key (break-glass, instead of a username)";
  else if (!config.api_key_required) apiKeyLabel.textContent = "API key (optional: the audit trail needs it)";
  $("signin-node").textContent = `Node ${config.node_id}${config.cluster ? " (cluster)" : ""}; signs out after ${config.idle_minutes} min without activity.`;
  const stored = localStorage.getItem("secureconf.theme");
  applyTheme(stored || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
  $("theme").addEventListener("click", () => applyTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"));

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").hidden = true;
    const button = event.submitter || $("signin-form").querySelector("button");
    button.disabled = true;
    try {
      const session = await api.signIn({
        username: $("username").value.trim(),
        password: $("password").value,
        apiKey: $("apikey").value,
        userKey: $("userkey").value,
        remember: $("remember").checked,
      });
      for (const id of ["password", "apikey", "userkey"]) $(id).value = "";
      $("who").textContent = session.label;
      if (!location.hash || location.hash === "#/") location.hash = "#/dashboard";
      else route();
    } catch (e) {
      showError($("signin-error"), e);
    } finally {
      button.disabled = false;
    }
  });
  $("signout").addEventListener("click", () => api.signOut("user"));
  api.onSignOut((reason) => {
    route();
    if (reason === "idle") showError($("signin-error"), new Error("Signed out after a period without activity."));
    if (reason === "expired") showError($("signin-error"), new Error("The session's token expired or was revoked: sign in again."));
  });
  for (const type of ["keydown", "pointerdown"]) document.addEventListener(type, api.touch, { passive: true });
  window.addEventListener("hashchange", route);
  const restored = await api.restore();
  if (restored) $("who").textContent = restored.label || "Signed in";
  route();
}

start();
