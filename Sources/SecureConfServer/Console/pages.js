// The console's pages. Each renders into `root` and returns what stops its timers and
// streams when the user leaves it.
import * as api from "./api.js";
import { bars, lineChart, requestTotals } from "./charts.js";
import { confirmDialog, download, field, h, table, when } from "./dom.js";

const errorBox = () => h("p", { class: "error", role: "alert", hidden: true });
function fail(box, e) { box.textContent = e.message || String(e); box.hidden = false; }
function ok(box, text) { box.textContent = text; box.hidden = false; }
const historyLink = (environment, key) => `#/history?${new URLSearchParams({ environment, key })}`;
const pretty = (value) => JSON.stringify(value, null, 2);

// ---------------------------------------------------------------- dashboard

async function dashboard(root) {
  const config = await api.loadConfig();
  const nodeCard = h("section", { class: "card", "aria-labelledby": "d-node" }, h("h2", { id: "d-node" }, "Node"));
  const entriesCard = h("section", { class: "card", "aria-labelledby": "d-entries" }, h("h2", { id: "d-entries" }, "Entries you can open"));
  const chartBox = h("div", {}, lineChart([], "Requests and errors per 5 seconds"));
  const chartNote = h("p", { class: "legend" }, h("span", { class: "l-req" }, "— requests"), h("span", { class: "l-err" }, "— errors (4xx/5xx)"),
    h("span", { class: "muted", id: "d-rate" }, ""));
  const trafficCard = h("section", { class: "card", "aria-labelledby": "d-traffic" }, h("h2", { id: "d-traffic" }, "Requests, last 5 minutes"), chartBox, chartNote);
  const feed = h("ul", { class: "feed", id: "feed", "aria-live": "polite" });
  const feedState = h("p", { class: "muted", id: "feed-state" }, "Connecting…");
  const feedCard = h("section", { class: "card", "aria-labelledby": "d-feed" }, h("h2", { id: "d-feed" }, "Live changes"), feedState, feed);
  root.append(h("h1", {}, "Dashboard"), h("div", { class: "grid" }, nodeCard, entriesCard), trafficCard, feedCard);

  // Node and cluster health.
  const info = (await api.request("GET", "/", { userKey: false })).body;
  const facts = [["Node", config.node_id], ["Version", info.version], ["Auth mode", config.auth_mode]];
  try {
    const status = (await api.request("GET", "/cluster/status", { userKey: false })).body;
    facts.push(["Cluster", status.enabled ? `${status.mode}: ${status.healthy_nodes} of ${status.total_nodes} nodes healthy` : "single node"]);
    facts.push(["Salt fingerprint", status.salt_fingerprint]);
  } catch (e) {
    facts.push(["Cluster", e.status === 403 ? "visible to administrators" : e.message]);
  }
  nodeCard.append(h("dl", {}, facts.map(([k, v]) => [h("dt", { class: "muted" }, k), h("dd", { "data-fact": k }, v)])));

  // Entries per environment and category.
  try {
    const stats = (await api.request("GET", "/stats")).body;
    entriesCard.append(h("p", {}, h("strong", { id: "d-total" }, String(stats.total_keys)), " entries open with your user key"),
      h("h3", {}, "By environment"), bars(stats.keys_by_environment, "Entries by environment"),
      h("h3", {}, "By category"), bars(stats.keys_by_category, "Entries by category"));
  } catch (e) {
    entriesCard.append(h("p", { class: "error" }, e.message));
  }

  // Requests and errors, sampled from /metrics every 5 s.
  const samples = [];
  let previous = null;
  async function sample() {
    let totals;
    try { totals = requestTotals(await api.metrics()); } catch { previous = null; return; }
    if (previous) {
      samples.push({ requests: Math.max(0, totals.requests - previous.requests), errors: Math.max(0, totals.errors - previous.errors) });
      if (samples.length > 60) samples.shift();
      chartBox.replaceChildren(lineChart(samples, "Requests and errors per 5 seconds"));
      const last = samples[samples.length - 1];
      document.getElementById("d-rate").textContent = ` last 5 s: ${last.requests} requests, ${last.errors} errors`;
    }
    previous = totals;
  }
  sample();
  const timer = setInterval(sample, 5000);

  // The change feed: a ticket (POST, with the keys as headers) opens the event stream.
  // Changes to entries the user key does not open are counted, never named (as in the list).
  let source = null;
  let closed = false;
  let retry = null;
  let backoff = 3000;
  let locked = 0;
  const openable = new Set();
  const lockedNote = h("p", { class: "warn", id: "feed-locked", hidden: true });
  feedCard.append(lockedNote);
  function reconnect(message) {
    feedState.textContent = message;
    if (closed) return;
    // With jitter, doubling to a minute: a node that is down is not hammered.
    retry = setTimeout(connect, backoff * (0.75 + Math.random() / 2));
    backoff = Math.min(60_000, backoff * 2);
  }
  async function connect() {
    let ticket;
    try {
      ticket = (await api.request("POST", "/sse/ticket")).body.ticket;
    } catch (e) {
      if (e.status === 401 || e.status === 403) { feedState.textContent = e.message; return; }
      return reconnect(`${e.message}; retrying…`);
    }
    if (closed) return;
    source = new EventSource(api.url("/sse/subscribe", { ticket }));
    source.addEventListener("connected", () => {
      backoff = 3000;
      feedState.textContent = "Connected: changes appear here as they happen.";
    });
    for (const kind of ["created", "updated", "deleted"]) {
      source.addEventListener(kind, (event) => {
        const change = JSON.parse(event.data);
        const id = `${change.environment}\u0000${change.key}`;
        if (change.data) openable.add(id);
        if (!openable.has(id)) {
          locked += 1;
          lockedNote.textContent = `${locked} ${locked === 1 ? "change" : "changes"} to entries your user key does not open.`;
          lockedNote.hidden = false;
          return;
        }
        feed.prepend(h("li", { "data-kind": kind, "data-key": change.key },
          h("strong", {}, kind), " ", h("a", { href: historyLink(change.environment, change.key) }, `${change.environment}/${change.key}`),
          h("span", { class: "muted" }, ` on ${change.node_id}, ${when(change.timestamp)}`)));
        while (feed.children.length > 100) feed.lastChild.remove();
      });
    }
    for (const kind of ["reset", "resync"]) {
      source.addEventListener(kind, () => { source.close(); reconnect("The stream restarted; reconnecting…"); });
    }
    source.onerror = () => {
      source.close();
      reconnect("Disconnected; reconnecting…");
    };
  }
  // Entries the list shows open with this key: their deletes are named too.
  api.request("GET", "/configs").then((r) => { for (const e of r.body) openable.add(`${e.environment}\u0000${e.key}`); }).catch(() => {});
  connect();
  return () => { closed = true; clearInterval(timer); clearTimeout(retry); if (source) source.close(); };
}

// ---------------------------------------------------------------- configurations

function valueEditor(prefix, value) {
  const isText = typeof value === "string";
  const json = h("input", { type: "checkbox", id: `${prefix}-json`, checked: value === undefined ? false : !isText });
  const area = h("textarea", { id: `${prefix}-value`, name: "value", "aria-describedby": `${prefix}-hint` });
  area.value = value === undefined ? "" : isText ? value : pretty(value);
  return {
    nodes: [h("label", { for: `${prefix}-value` }, "Value"), area,
      h("label", { class: "check" }, json, "The value is JSON (an object, array, number, true, false or null)"),
      h("p", { class: "muted", id: `${prefix}-hint` }, "Without the box ticked the value is stored as text.")],
    read() {
      if (!json.checked) return area.value;
      try { return JSON.parse(area.value); } catch (e) { throw new Error(`The value is not valid JSON: ${e.message}`); }
    },
  };
}

async function configs(root, params) {
  const filters = h("form", { class: "card filters", id: "filters", role: "search" },
    ...field("f-environment", "Environment", { input: { value: params.get("environment") || "", placeholder: "all" } }),
    ...field("f-category", "Category", { input: { value: params.get("category") || "", placeholder: "all" } }),
    ...field("f-key", "Key contains", { input: { value: params.get("key") || "" } }),
    h("button", { type: "submit", class: "primary" }, "Filter"));
  const status = errorBox();
  const notice = h("p", { class: "notice", role: "status", hidden: true });
  const locked = h("p", { class: "warn", id: "locked", hidden: true });
  const list = h("div", { id: "list" });
  const more = h("button", { type: "button", id: "list-more", hidden: true }, "More");
  let after = null;
  let shown = [];
  const detail = h("section", { class: "card", id: "detail", hidden: true, "aria-live": "polite" });
  const createButton = h("button", { type: "button", class: "primary", id: "new-entry" }, "New entry");
  root.append(h("h1", {}, "Configurations"), filters, h("div", { class: "actions" }, createButton), notice, status, locked, detail, list, more);

  // Pages of 500: the first on each filter, the next with More.
  async function load(next = false) {
    status.hidden = true;
    locked.hidden = true;
    const environment = document.getElementById("f-environment").value.trim();
    const category = document.getElementById("f-category").value.trim();
    const needle = document.getElementById("f-key").value.trim().toLowerCase();
    let page;
    try {
      page = await api.request("GET", "/configs", { query: { environment, category, limit: 500, after: next ? after : null } });
    } catch (e) {
      list.replaceChildren();
      return fail(status, e);
    }
    const skipped = Number(page.headers.get("X-SecureConf-Skipped") || 0);
    if (skipped > 0) {
      locked.textContent = `${skipped} ${skipped === 1 ? "entry is" : "entries are"} locked: written with another user key.`;
      locked.hidden = false;
    }
    after = page.headers.get("X-SecureConf-Next-After");
    more.hidden = !after;
    shown = (next ? shown : []).concat(page.body);
    const entries = shown.filter((e) => !needle || e.key.toLowerCase().includes(needle));
    // A browser resolves "." and ".." in a path: such keys are shown, and managed through the API.
    const addressable = (e) => e.key !== "." && e.key !== "..";
    const rows = entries.map((e) => h("tr", { "data-key": e.key, "data-environment": e.environment },
      h("td", {}, h("code", {}, e.key)), h("td", {}, e.environment), h("td", { class: "hide-narrow" }, e.category || ""),
      h("td", { class: "hide-narrow" }, when(e.updated_at)),
      !addressable(e) ? h("td", { class: "muted" }, "not addressable in a URL: use the API") : h("td", {},
        h("button", { type: "button", class: "link", onclick: () => view(e), "aria-label": `View ${e.key}` }, "View"),
        h("button", { type: "button", class: "link", onclick: () => edit(e), "aria-label": `Edit ${e.key}` }, "Edit"),
        h("a", { href: historyLink(e.environment, e.key), "aria-label": `History of ${e.key}` }, "History"),
        h("button", { type: "button", class: "link", onclick: () => remove(e), "aria-label": `Delete ${e.key}` }, "Delete"))));
    list.replaceChildren(entries.length
      ? table(["Key", "Environment", { title: "Category", narrow: true }, { title: "Updated", narrow: true }, "Actions"], rows)
      : h("p", { class: "muted" }, "No entries open with your user key here."));
  }

  function view(e) {
    const raw = h("pre", { id: "value-raw", hidden: true }, JSON.stringify(e.value));
    const formatted = h("pre", { id: "value-pretty" }, pretty(e.value));
    const toggle = h("button", { type: "button", id: "toggle-raw", onclick: () => {
      raw.hidden = !raw.hidden; formatted.hidden = !formatted.hidden;
      toggle.textContent = raw.hidden ? "Show raw" : "Show formatted";
    } }, "Show raw");
    detail.replaceChildren(h("h2", {}, `${e.environment}/${e.key}`),
      h("p", { class: "muted" }, `Category: ${e.category || "none"}. Created ${when(e.created_at)}, updated ${when(e.updated_at)}.`),
      formatted, raw, h("div", { class: "actions" }, toggle, h("button", { type: "button", onclick: () => { detail.hidden = true; } }, "Close")));
    detail.hidden = false;
  }

  function form(entry) {
    const creating = !entry;
    const box = errorBox();
    const editor = valueEditor("e", entry ? entry.value : undefined);
    const key = field("e-key", "Key", { input: { value: entry ? entry.key : "", required: true, maxlength: 255, readonly: !creating } });
    const env = field("e-environment", "Environment", { input: { value: entry ? entry.environment : (document.getElementById("f-environment").value || "default"), readonly: !creating } });
    const cat = field("e-category", "Category", { input: { value: entry ? entry.category || "" : "" } });
    const f = h("form", { id: "entry-form", novalidate: true }, h("h2", {}, creating ? "New entry" : `Edit ${entry.environment}/${entry.key}`),
      ...key, ...env, ...cat, ...editor.nodes, box,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, creating ? "Create" : "Save"),
        h("button", { type: "button", onclick: () => { detail.hidden = true; } }, "Cancel")));
    f.addEventListener("submit", async (event) => {
      event.preventDefault();
      box.hidden = true;
      const k = key[1].value.trim();
      const environment = env[1].value.trim() || "default";
      const category = cat[1].value.trim() || null;
      if (!k) return fail(box, new Error("The key is required."));
      let value;
      try { value = editor.read(); } catch (e) { return fail(box, e); }
      try {
        if (creating) await api.request("POST", "/configs", { body: { key: k, value, category, environment } });
        else await api.request("PUT", `/configs/${encodeURIComponent(k)}`, { query: { environment }, body: { value, category } });
        detail.hidden = true;
        ok(notice, `${creating ? "Created" : "Saved"} ${environment}/${k}.`);
        await load();
      } catch (e) { fail(box, e); }
    });
    detail.replaceChildren(f);
    detail.hidden = false;
    (creating ? key[1] : editor.nodes[1]).focus();
  }
  const edit = (e) => form(e);

  async function remove(e) {
    if (!(await confirmDialog(`Delete ${e.environment}/${e.key}? Its history is kept, and it can be brought back from there.`, "Delete"))) return;
    try {
      await api.request("DELETE", `/configs/${encodeURIComponent(e.key)}`, { query: { environment: e.environment } });
      ok(notice, `Deleted ${e.environment}/${e.key}.`);
      await load();
    } catch (error) { fail(status, error); }
  }

  filters.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  more.addEventListener("click", () => load(true));
  createButton.addEventListener("click", () => form(null));
  await load();
}

// ---------------------------------------------------------------- history

async function history(root, params) {
  const environment = params.get("environment") || "default";
  const key = params.get("key") || "";
  const status = errorBox();
  const notice = h("p", { class: "notice", role: "status", hidden: true });
  const versionsBox = h("div", { id: "versions" });
  const output = h("section", { class: "card", id: "history-output", hidden: true, "aria-live": "polite" });
  root.append(h("h1", {}, "History of ", h("code", {}, `${environment}/${key}`)), h("p", {}, h("a", { href: "#/configs" }, "← Configurations")),
    notice, status, output, versionsBox);

  async function load() {
    let listing;
    try {
      listing = (await api.request("GET", `/configs/${encodeURIComponent(key)}/versions`, { query: { environment } })).body;
    } catch (e) { return fail(status, e); }
    const versions = listing.versions;
    const last = versions[versions.length - 1];
    const options = versions.filter((v) => !v.deleted).map((v) => [String(v.version), `version ${v.version}`]);
    const from = field("diff-from", "From", { tag: "select", options });
    const to = field("diff-to", "To", { tag: "select", options });
    if (options.length > 1) { from[1].value = options[options.length - 2][0]; to[1].value = options[options.length - 1][0]; }
    const diffForm = h("form", { class: "filters", id: "diff-form" }, ...from, ...to, h("button", { type: "submit" }, "Compare"));
    diffForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const d = (await api.request("GET", `/configs/${encodeURIComponent(key)}/diff`, { query: { environment, from: from[1].value, to: to[1].value } })).body;
        output.replaceChildren(h("h2", {}, `Changes from version ${d.from} to ${d.to}`),
          d.operations.length ? h("pre", { id: "diff" }, d.operations.map((op) => JSON.stringify(op)).join("\n")) : h("p", { id: "diff" }, "No difference."));
        output.hidden = false;
      } catch (e) { fail(status, e); }
    });
    const rows = versions.map((v) => h("tr", { "data-version": v.version },
      h("td", {}, String(v.version)), h("td", {}, when(v.created_at)), h("td", {}, v.actor || h("span", { class: "muted" }, "hidden")),
      h("td", { class: "hide-narrow" }, v.origin_node), h("td", {}, v.deleted ? "deleted" : ""),
      h("td", {}, v.deleted ? "" : [
        h("button", { type: "button", class: "link", onclick: () => show(v.version), "aria-label": `View version ${v.version}` }, "View"),
        v === last ? "" : h("button", { type: "button", class: "link", onclick: () => rollback(v.version, last.deleted), "aria-label": `${last.deleted ? "Undelete to" : "Roll back to"} version ${v.version}` },
          last.deleted ? "Undelete to this" : "Roll back to this")])));
    versionsBox.replaceChildren(
      h("section", { class: "card" }, h("h2", {}, "Versions"),
        h("p", { class: "muted" }, `Current version ${listing.current_version}${listing.pruned ? `; ${listing.pruned} older versions pruned` : ""}${last && last.deleted ? "; the key is deleted" : ""}.`),
        table(["Version", "Time", "Actor", { title: "Node", narrow: true }, "", "Actions"], rows)),
      options.length > 1 ? h("section", { class: "card" }, h("h2", {}, "Compare two versions"), diffForm) : "");
  }

  async function show(version) {
    try {
      const r = (await api.request("GET", `/configs/${encodeURIComponent(key)}/versions/${version}`, { query: { environment } })).body;
      output.replaceChildren(h("h2", {}, `Version ${version}`), h("pre", { id: "version-value" }, pretty(r.value)));
      output.hidden = false;
    } catch (e) { fail(status, e); }
  }

  async function rollback(version, undelete) {
    const text = undelete ? `Bring ${environment}/${key} back with the value of version ${version}?` : `Roll ${environment}/${key} back to the value of version ${version}? This writes a new version.`;
    if (!(await confirmDialog(text, undelete ? "Undelete" : "Roll back"))) return;
    try {
      await api.request("POST", `/configs/${encodeURIComponent(key)}/rollback`, { query: { environment, version } });
      ok(notice, undelete ? `Brought back from version ${version}.` : `Rolled back to version ${version}.`);
      await load();
    } catch (e) { fail(status, e); }
  }
  await load();
}

// ---------------------------------------------------------------- audit

function isoFromLocal(value) { return value ? new Date(value).toISOString() : ""; }

async function audit(root) {
  const search = h("form", { class: "card filters", id: "audit-form", role: "search" },
    ...field("a-action", "Action", { input: { placeholder: "e.g. update" } }),
    ...field("a-actor", "Actor", { input: { placeholder: "e.g. user:alice" } }),
    ...field("a-key", "Key"), ...field("a-environment", "Environment"),
    ...field("a-outcome", "Outcome", { tag: "select", options: [["", "any"], ["success", "success"], ["failure", "failure"], ["denied", "denied"], ["not_found", "not found"]] }),
    ...field("a-since", "Since", { input: { type: "datetime-local" } }), ...field("a-until", "Until", { input: { type: "datetime-local" } }),
    h("button", { type: "submit", class: "primary" }, "Search"));
  const status = errorBox();
  const verifyResult = h("p", { id: "verify-result", role: "status" });
  const results = h("div", { id: "audit-results" });
  const more = h("button", { type: "button", id: "audit-more", hidden: true }, "More");
  root.append(h("h1", {}, "Audit trail"), search,
    h("section", { class: "card" }, h("h2", {}, "Chain"), h("p", { class: "muted" }, "Every record's hash covers the one before it: a changed, removed or reordered record breaks the chain."),
      h("button", { type: "button", id: "verify" , onclick: verify }, "Verify the chain"), verifyResult),
    status, results, more);
  let cursor = null;
  let rows = [];
  const value = (id) => document.getElementById(id).value.trim();

  async function load(append) {
    status.hidden = true;
    const query = { action: value("a-action"), actor: value("a-actor"), key: value("a-key"), environment: value("a-environment"),
      outcome: value("a-outcome"), since: isoFromLocal(value("a-since")), until: isoFromLocal(value("a-until")), limit: 100, cursor: append ? cursor : null };
    try {
      const page = (await api.request("GET", "/audit", { query, userKey: false })).body;
      if (!append) rows = [];
      rows = rows.concat(page.records.map((r) => h("tr", { "data-action": r.action },
        h("td", {}, when(r.time)), h("td", {}, r.actor), h("td", {}, r.action), h("td", { class: "hide-narrow" }, r.environment || ""),
        h("td", {}, r.key || ""), h("td", {}, r.outcome), h("td", { class: "hide-narrow" }, String(r.status)))));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      results.replaceChildren(rows.length
        ? table(["Time", "Actor", "Action", { title: "Environment", narrow: true }, "Key", "Outcome", { title: "Status", narrow: true }], rows, `${rows.length} records`)
        : h("p", { class: "muted" }, "No records match."));
    } catch (e) { fail(status, e); }
  }
  async function verify() {
    try {
      const r = (await api.request("GET", "/audit/verify", { userKey: false })).body;
      verifyResult.className = r.valid ? "notice" : "error";
      verifyResult.textContent = r.valid ? `Valid: ${r.records} records, head ${String(r.head_hash).slice(0, 16)}…` : `Broken at record ${r.first_broken} of ${r.records}.`;
    } catch (e) { verifyResult.className = "error"; verifyResult.textContent = e.message; }
  }
  search.addEventListener("submit", (event) => { event.preventDefault(); load(false); });
  more.addEventListener("click", () => load(true));
  await load(false);
}

// ---------------------------------------------------------------- cluster

async function cluster(root) {
  const status = errorBox();
  const nodes = h("div", { id: "nodes" });
  const distribution = h("div", { id: "distribution" });
  const updated = h("p", { class: "muted", role: "status" });
  root.append(h("h1", {}, "Cluster"), updated, status,
    h("section", { class: "card" }, h("h2", {}, "Nodes"), nodes),
    h("section", { class: "card" }, h("h2", {}, "Entries your user key opens, per node"), distribution));
  async function refresh() {
    try {
      const s = (await api.request("GET", "/cluster/status", { userKey: false })).body;
      status.hidden = true;
      allowed = true;
      if (!s.enabled) {
        nodes.replaceChildren(h("p", {}, `A single node (${s.node_id}), not a cluster: ${s.entries} entries.`));
        distribution.replaceChildren(h("p", { class: "muted" }, "Clustering is not enabled."));
        updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
        return;
      }
      const rows = s.nodes.map((n) => h("tr", { "data-node": n.node_id, "data-healthy": String(!!n.healthy) },
        h("td", {}, h("code", {}, n.node_id), n.self ? " (this node)" : ""),
        h("td", {}, h("span", { class: `pill ${n.healthy ? "up" : "down"}` }, n.healthy ? "healthy" : "unhealthy")),
        h("td", { class: "hide-narrow" }, n.salt_fingerprint || ""),
        h("td", {}, n.self ? "—" : `${n.outbox_depth ?? 0} queued${n.outbox_oldest_age_seconds ? `, oldest ${Number(n.outbox_oldest_age_seconds).toFixed(1)} s` : ""}`),
        h("td", { class: "hide-narrow" }, n.self ? when(s.last_sync) : when(n.last_seen)),
        h("td", { class: "hide-narrow" }, n.replication_error || n.last_error || "")));
      nodes.replaceChildren(h("p", {}, `${s.mode} mode: ${s.healthy_nodes} of ${s.total_nodes} nodes healthy; ${s.entries} entries here; salt ${s.salt_fingerprint}.`),
        table(["Node", "Health", { title: "Salt", narrow: true }, "Replication queue", { title: "Last seen / sync", narrow: true }, { title: "Problem", narrow: true }], rows));
    } catch (e) {
      fail(status, e);
      if (e.status === 401 || e.status === 403) allowed = false;
    }
    try {
      const d = (await api.request("GET", "/cluster/distribution")).body;
      distribution.replaceChildren(table(["Node", "Health", "Entries"], d.nodes_distribution.map((n) => h("tr", { "data-node": n.node_id },
        h("td", {}, h("code", {}, n.node_id), n.is_local ? " (this node)" : ""), h("td", {}, n.is_healthy ? "healthy" : "unreachable"), h("td", {}, String(n.keys_count))))));
    } catch (e) { distribution.replaceChildren(h("p", { class: "muted" }, e.message)); }
    updated.textContent = allowed ? `Updated ${new Date().toLocaleTimeString()}; refreshes every 3 seconds.` : "";
  }
  // The next refresh 3 s after the last one ended (never two at once); none without access.
  let allowed = true;
  let timer = null;
  let stopped = false;
  async function loop() {
    await refresh();
    if (!stopped && allowed) timer = setTimeout(loop, 3000);
  }
  await loop();
  return () => { stopped = true; clearTimeout(timer); };
}

// ---------------------------------------------------------------- backups

async function backups(root) {
  const createBox = errorBox(), importBox = errorBox();
  const created = h("p", { class: "notice", role: "status", id: "backup-result", hidden: true });
  const imported = h("div", { id: "import-result", role: "status" });
  const createForm = h("form", { id: "backup-form" },
    ...field("b-password", "Backup password", { input: { type: "password", autocomplete: "new-password", required: true } }),
    ...field("b-environment", "Environment (empty: all)"),
    createBox, created, h("button", { type: "submit", class: "primary" }, "Create and download"));
  const importForm = h("form", { id: "import-form" },
    ...field("i-file", "Backup file (OpenSecureConf 3.1 format)", { input: { type: "file", accept: ".json,application/json" } }),
    ...field("i-password", "Backup password", { input: { type: "password", autocomplete: "off" } }),
    h("label", { class: "check" }, h("input", { type: "checkbox", id: "i-overwrite" }), "Overwrite entries that exist"),
    importBox, imported, h("button", { type: "submit", class: "primary" }, "Import"));
  root.append(h("h1", {}, "Backups"),
    h("section", { class: "card" }, h("h2", {}, "Create a backup"), h("p", { class: "muted" }, "What your user key opens, sealed under the backup password."), createForm),
    h("section", { class: "card" }, h("h2", {}, "Import a backup"), importForm));
  createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    createBox.hidden = true;
    const password = document.getElementById("b-password").value;
    if (!password) return fail(createBox, new Error("A backup password is required."));
    try {
      const b = (await api.request("POST", "/backup", { query: { environment: document.getElementById("b-environment").value.trim() }, extraHeaders: { "X-Backup-Password": password } })).body;
      download(`secureconf-backup-${b.backup_id}.json`, JSON.stringify(b, null, 2));
      ok(created, `Backup ${b.backup_id}: ${b.total_keys} entries, ${when(b.backup_timestamp)}.`);
    } catch (e) { fail(createBox, e); }
  });
  importForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    importBox.hidden = true;
    const file = document.getElementById("i-file").files[0];
    const password = document.getElementById("i-password").value;
    if (!file || !password) return fail(importBox, new Error("Choose a backup file and give its password."));
    try {
      const text = await file.text();
      let backupData = text.trim();
      try { const parsed = JSON.parse(text); if (parsed && parsed.backup_data) backupData = parsed.backup_data; } catch { /* the sealed token itself */ }
      const r = (await api.request("POST", "/import", { body: { backup_data: backupData, overwrite: document.getElementById("i-overwrite").checked }, extraHeaders: { "X-Backup-Password": password } })).body;
      imported.replaceChildren(h("p", { class: "notice" }, `Imported ${r.imported} of ${r.total_in_backup}; skipped ${r.skipped}; failed ${r.failed}.`),
        (r.failed_keys || []).length ? h("ul", {}, r.failed_keys.map((f) => h("li", {}, `${f.key}: ${f.error}`))) : "");
    } catch (e) { fail(importBox, e); }
  });
}

export const pages = { dashboard, configs, history, audit, cluster, backups };
