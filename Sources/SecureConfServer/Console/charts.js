// Small SVG charts, drawn from numbers the node serves (no library).
import { h, s } from "./dom.js";

/// Requests and errors per interval, as two lines over the last samples.
export function lineChart(samples, label) {
  if (samples.length === 1) samples = [samples[0], samples[0]];  // one interval: a level line
  const width = 600, height = 120, pad = 6;
  const max = Math.max(1, ...samples.map((p) => p.requests));
  const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, samples.length - 1);
  const y = (v) => height - pad - (v * (height - 2 * pad)) / max;
  const line = (key) => samples.map((p, i) => `${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
  return s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, preserveAspectRatio: "none" },
    s("title", {}, label),
    s("line", { class: "axis", x1: pad, y1: height - pad, x2: width - pad, y2: height - pad }),
    samples.length > 1 ? s("polyline", { class: "requests", points: line("requests") }) : null,
    samples.length > 1 ? s("polyline", { class: "errors", points: line("errors") }) : null);
}

/// Counts as labelled horizontal bars.
export function bars(counts, label) {
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map((e) => e[1]));
  if (!entries.length) return h("p", { class: "muted" }, "None yet.");
  return h("div", { class: "bars", role: "list", "aria-label": label },
    entries.map(([name, n]) => h("div", { class: "row", role: "listitem" },
      h("span", {}, name),
      s("svg", { class: "meter", viewBox: "0 0 100 10", preserveAspectRatio: "none", "aria-hidden": "true" },
        s("rect", { x: 0, y: 0, height: 10, width: Math.max(1, (100 * n) / max).toFixed(1) })),
      h("strong", {}, String(n)))));
}

/// Sums of `osc_http_requests_total` in Prometheus text: all requests, and those answered 4xx/5xx.
export function requestTotals(text) {
  let requests = 0, errors = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("osc_http_requests_total{")) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (!Number.isFinite(value)) continue;
    requests += value;
    const m = /status_code="(\d+)"/.exec(line);
    if (m && Number(m[1]) >= 400) errors += value;
  }
  return { requests, errors };
}
