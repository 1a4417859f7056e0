// sharewall console: renders each view from the registry's JSON API (same origin, session
// cookie). Every write sends the session's CSRF token. Text is always set as text, never as
// HTML, so nothing a proxy shipped (paths, hosts) can inject markup.
(() => {
"use strict";

const BOOT = JSON.parse(document.getElementById("boot").textContent);
const APP = document.getElementById("app");
const IS_SECURITY = BOOT.role === "security";
const IS_ENGINEER = BOOT.role === "engineer";
const REASON_COLORS = ["#c0392b", "#d35400", "#b9770e", "#7d3c98", "#1f618d", "#117864",
  "#7b7d7d", "#a04000", "#1a5276", "#641e16", "#145a32", "#4a235a", "#566573"];

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

async function api(method, path, body, extraHeaders) {
  const headers = { "Accept": "application/json", ...(extraHeaders || {}) };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = BOOT.csrf;
    headers["Content-Type"] = "application/json";
  }
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) { window.location.href = "/ui/sign-in"; throw new Error("signed out"); }
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  return { status: resp.status, ok: resp.ok, data, headers: resp.headers };
}

function problem(result) {
  const d = result.data || {};
  return `${result.status} ${d.title || ""}${d.detail ? ": " + d.detail : ""}`;
}

function fmtTime(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : "-"; }
function source(s) { return s ? [s.namespace, s.workload].filter(Boolean).join("/") || "-" : "-"; }
function since(hours) { return new Date(Date.now() - hours * 3600e3).toISOString(); }
function count(map, key, n) { map.set(key, (map.get(key) || 0) + (n || 1)); }
function topN(map, n) { return [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, n || 5); }
function badge(kind, text) { return h("span", { class: `badge ${kind}` }, text); }

async function allFlows(params, max) {
  const out = [];
  let cursor = null;
  do {
    const q = new URLSearchParams({ ...params, limit: "1000" });
    if (cursor) q.set("cursor", cursor);
    const r = await api("GET", `/v1/flows?${q}`);
    if (!r.ok) throw new Error(problem(r));
    out.push(...r.data.flows);
    cursor = r.data.next_cursor;
  } while (cursor && out.length < (max || 5000));
  return out;
}

// ---------------------------------------------------------------- overview

function chart(flows, hours) {
  const end = Date.now(), start = end - hours * 3600e3;
  const buckets = Array.from({ length: hours }, () => new Map());
  const codes = new Map();
  for (const f of flows) {
    const t = Date.parse(f.time);
    const i = Math.min(hours - 1, Math.floor((t - start) / 3600e3));
    if (i < 0) continue;
    const keys = f.kind === "fault" ? [`fault: ${f.fault || "?"}`] : f.reasons.map((r) => r.code);
    for (const k of new Set(keys)) { count(buckets[i], k); count(codes, k); }
  }
  const order = [...codes.keys()].sort();
  const color = (k) => k.startsWith("fault") ? "#6c3483" : REASON_COLORS[order.indexOf(k) % REASON_COLORS.length];
  const maxTotal = Math.max(1, ...buckets.map((b) => [...b.values()].reduce((a, n) => a + n, 0)));
  const W = 960, H = 200, pad = 28, bw = (W - pad) / hours;
  const bars = [];
  buckets.forEach((b, i) => {
    let y = H - 16;
    for (const k of order) {
      const n = b.get(k) || 0;
      if (!n) continue;
      const bh = (n / maxTotal) * (H - 30);
      y -= bh;
      bars.push(svg("rect", { x: pad + i * bw + 1, y, width: Math.max(1, bw - 2), height: bh, fill: color(k) },
        svg("title", {}, `${k}: ${n}`)));
    }
  });
  const axis = [svg("text", { x: 0, y: 12, "font-size": 10, fill: "#5b6472" }, String(maxTotal)),
    svg("text", { x: pad, y: H - 2, "font-size": 10, fill: "#5b6472" }, `${hours} h ago`),
    svg("text", { x: W - 30, y: H - 2, "font-size": 10, fill: "#5b6472" }, "now"),
    svg("line", { x1: pad, y1: H - 16, x2: W, y2: H - 16, stroke: "#d9dee6" })];
  // Swatches are SVG (fill is an attribute): the page's CSP forbids inline styles.
  const legend = h("div", { class: "legend" }, order.map((k) => h("span", {},
    svg("svg", { width: 12, height: 12, "aria-hidden": "true" }, svg("rect", { width: 12, height: 12, fill: color(k) })),
    ` ${k} (${codes.get(k)})`)));
  return h("div", { class: "chart card", id: "chart" },
    h("h2", {}, `Blocked and would-block calls per hour, by reason (last ${hours} h)`),
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "blocked calls per hour" }, axis, bars),
    legend);
}

function kpi(title, now, before, id) {
  const diff = now - before;
  const sign = diff > 0 ? "+" : "";
  return h("div", { class: "card", id },
    h("div", { class: "muted" }, title), h("div", { class: "kpi" }, now),
    h("div", { class: "delta" }, `previous 24 h: ${before} (${sign}${diff})`));
}

function topList(title, map) {
  const rows = topN(map, 6);
  return h("div", { class: "card" }, h("h2", {}, title),
    rows.length ? h("table", {}, h("tbody", {}, rows.map(([k, n]) => h("tr", {}, h("td", {}, k), h("td", {}, n)))))
      : h("p", { class: "muted" }, "none"));
}

async function overview() {
  const flows = await allFlows({ since: since(48) }, 10000);
  const cut = Date.now() - 24 * 3600e3;
  const now = flows.filter((f) => Date.parse(f.time) >= cut);
  const before = flows.filter((f) => Date.parse(f.time) < cut);
  const n = (list, kind) => list.filter((f) => f.kind === kind).length;
  const recipients = new Map(), sources = new Map(), categories = new Map(), faults = new Map();
  for (const f of now) {
    if (f.kind === "fault") { count(faults, f.fault || "unknown"); continue; }
    count(recipients, f.recipient_id || f.host || "-");
    count(sources, source(f.source));
    for (const c of f.categories) count(categories, c);
  }
  APP.replaceChildren(
    h("h1", {}, "Overview"),
    h("div", { class: "grid" },
      kpi("Blocked (policy), last 24 h", n(now, "deny"), n(before, "deny"), "kpi-blocked"),
      kpi("Would block (report mode)", n(now, "would_block"), n(before, "would_block"), "kpi-would-block"),
      kpi("Faults (sharewall failed closed, 503)", n(now, "fault"), n(before, "fault"), "kpi-faults")),
    chart(now, 24),
    h("div", { class: "grid" },
      topList("Top recipients", recipients), topList("Top sources", sources),
      topList("Top categories", categories), topList("Faults (apart from policy denials)", faults)));
}

// ---------------------------------------------------------------- flows

function select(name, label, options, value) {
  return h("label", {}, label, h("select", { name, id: `f-${name}` },
    h("option", { value: "" }, "any"),
    options.map((o) => h("option", { value: o, selected: o === value }, o))));
}

// A flow is (decision id, shipper): two proxies may ship one decision id (0: no token recorded).
const shipperOf = (f) => String(f.shipped_by ? f.shipped_by.token_id : 0);

function triageBar(getIds, onDone) {
  if (!IS_SECURITY) return h("p", { class: "muted" }, "Triage is for security reviewers.");
  const state = h("select", { id: "triage-state" }, BOOT.triage_states.map((s) => h("option", { value: s }, s)));
  const note = h("input", { id: "triage-note", placeholder: "note", size: 40 });
  const msg = h("span", { id: "triage-message" });
  const go = async () => {
    const ids = getIds();
    if (!ids.length) { msg.textContent = "select flows first"; return; }
    const results = await Promise.all(ids.map(({ id, shipper }) => api("POST",
      `/v1/flows/${encodeURIComponent(id)}/triage?shipped_by=${encodeURIComponent(shipper)}`,
      { state: state.value, note: note.value || null })));
    const bad = results.filter((r) => !r.ok);
    msg.className = bad.length ? "error" : "notice";
    msg.textContent = bad.length ? problem(bad[0]) : `${ids.length} flow(s) set to ${state.value}`;
    if (!bad.length && onDone) onDone(results.map((r) => r.data));
  };
  return h("div", { class: "bar" }, h("label", {}, "Triage as", state), h("label", {}, "Note", note),
    h("button", { type: "button", id: "triage", onclick: go }, "Triage"), msg);
}

async function flows() {
  const params = new URLSearchParams(window.location.search);
  const filters = h("form", { class: "filters", id: "filters" },
    h("label", {}, "Since", h("select", { name: "hours", id: "f-hours" },
      [["1", "1 h"], ["24", "24 h"], ["168", "7 days"], ["720", "30 days"]].map(([v, t]) =>
        h("option", { value: v, selected: v === (params.get("hours") || "24") }, t)))),
    h("label", {}, "Recipient", h("input", { name: "recipient_id", id: "f-recipient", value: params.get("recipient_id") || "" })),
    h("label", {}, "Source", h("input", { name: "source", id: "f-source", value: params.get("source") || "" })),
    select("reason", "Reason", Object.keys(BOOT.reason_codes), params.get("reason")),
    select("category", "Category", BOOT.categories, params.get("category")),
    select("triage_state", "Triage state", BOOT.triage_states, params.get("triage_state")),
    h("button", { type: "submit" }, "Filter"));
  const body = h("tbody", {});
  const more = h("button", { type: "button", class: "secondary", id: "more", hidden: true }, "Next page");
  const info = h("p", { class: "muted", id: "flow-count" });
  const checked = () => [...body.querySelectorAll("input[type=checkbox]:checked")]
    .map((c) => ({ id: c.value, shipper: c.dataset.shipper }));
  const query = { since: since(Number(params.get("hours") || 24)), limit: "50" };
  for (const k of ["recipient_id", "source", "reason", "category", "triage_state"]) if (params.get(k)) query[k] = params.get(k);
  let cursor = null, shown = 0;
  async function load() {
    const q = new URLSearchParams(query);
    if (cursor) q.set("cursor", cursor);
    const r = await api("GET", `/v1/flows?${q}`);
    if (!r.ok) { info.className = "error"; info.textContent = problem(r); return; }
    for (const f of r.data.flows) {
      shown += 1;
      body.append(h("tr", { "data-decision": f.decision_id, "data-shipper": shipperOf(f) },
        h("td", {}, IS_SECURITY ? h("input", { type: "checkbox", value: f.decision_id, "data-shipper": shipperOf(f), "aria-label": "select" }) : ""),
        h("td", {}, fmtTime(f.time)),
        h("td", {}, h("a", { href: `/ui/flows/${encodeURIComponent(f.decision_id)}?shipped_by=${shipperOf(f)}`, class: "mono" }, f.decision_id.slice(0, 12))),
        h("td", {}, badge(f.kind, f.kind)),
        h("td", {}, source(f.source)), h("td", {}, f.recipient_id || f.host),
        h("td", {}, f.purpose || "-"),
        h("td", {}, f.kind === "fault" ? badge("fault", f.fault || "fault") : f.reasons.map((x) => badge("deny", x.code))),
        h("td", {}, f.categories.join(", ") || "-"),
        h("td", { class: "state" }, f.triage.state)));
    }
    cursor = r.data.next_cursor;
    more.hidden = !cursor;
    info.textContent = `${shown} flow(s)`;
  }
  more.addEventListener("click", load);
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(filters)) if (v) q.set(k, v);
    window.location.search = q.toString();
  });
  APP.replaceChildren(h("h1", {}, "Flows"), filters,
    triageBar(checked, (updated) => {
      for (const f of updated) {
        const cell = body.querySelector(
          `tr[data-decision="${CSS.escape(f.decision_id)}"][data-shipper="${shipperOf(f)}"] td.state`);
        if (cell) cell.textContent = f.triage.state;
      }
    }), info,
    h("table", { id: "flows" }, h("thead", {}, h("tr", {}, ["", "Time", "Decision", "Kind", "Source",
      "Recipient", "Purpose", "Reasons", "Categories", "Triage"].map((t) => h("th", {}, t)))), body), more);
  await load();
}

async function flowDetail(id) {
  const shipper = new URLSearchParams(window.location.search).get("shipped_by");
  const r = await api("GET", `/v1/flows/${encodeURIComponent(id)}${shipper ? `?shipped_by=${encodeURIComponent(shipper)}` : ""}`);
  if (!r.ok) { APP.replaceChildren(h("h1", {}, "Flow"), h("p", { class: "error" }, problem(r))); return; }
  const f = r.data;
  const row = (k, ...v) => h("tr", {}, h("th", {}, k), h("td", {}, ...v));
  APP.replaceChildren(
    h("h1", {}, "Flow ", h("span", { class: "mono", id: "decision-id" }, f.decision_id)),
    h("section", { class: "card" }, h("table", {}, h("tbody", {},
      row("Time", fmtTime(f.time)), row("Kind", badge(f.kind, f.kind)), row("Mode", f.mode),
      f.fault ? row("Fault", `${f.fault} (HTTP ${f.status || 503})`) : null,
      row("Source", source(f.source)), row("Recipient", f.recipient_id || "(unregistered)"),
      row("Host", `${f.method} ${f.host}`), row("Path (redacted)", h("code", {}, f.path)),
      row("Purpose", f.purpose || "-"), row("Categories", f.categories.join(", ") || "-"),
      // The token is who shipped it; the proxy id is only what that token said it was.
      row("Shipped by", h("span", { id: "shipped-by" }, f.shipped_by
        ? `token ${f.shipped_by.token_name || "#" + f.shipped_by.token_id} as proxy ${f.proxy_id}`
        : `proxy ${f.proxy_id} (token not recorded)`)),
      row("Triage", h("span", { id: "triage-current" }, `${f.triage.state}${f.triage.by ? " by " + f.triage.by : ""}${f.triage.note ? ": " + f.triage.note : ""}`))))),
    h("h2", {}, "Why it was blocked"),
    h("section", { class: "card", id: "reasons" }, f.reasons.length ? f.reasons.map((x) => h("div", {},
      h("strong", {}, x.code), x.category ? h("span", { class: "badge" }, x.category) : "", " ", x.message,
      h("p", { class: "policy" }, BOOT.reason_policy[x.code] || ""))) : h("p", { class: "muted" }, "no policy reason (a fault)")),
    h("h2", {}, "Where the data was found (never the values)"),
    h("section", { class: "card" }, f.findings.length ? h("table", { id: "findings" }, h("thead", {}, h("tr", {},
      h("th", {}, "Category"), h("th", {}, "Location"), h("th", {}, "Detector"))),
      h("tbody", {}, f.findings.map((x) => h("tr", {}, h("td", {}, x.category), h("td", { class: "mono" }, x.location), h("td", {}, x.detector)))))
      : h("p", { class: "muted" }, "no findings")),
    triageBar(() => [{ id: f.decision_id, shipper: shipperOf(f) }], ([g]) => {
      const t = g.triage;
      document.getElementById("triage-current").textContent =
        `${t.state}${t.by ? " by " + t.by : ""}${t.note ? ": " + t.note : ""}`;
    }));
}

// ---------------------------------------------------------------- approvals

function diffView(change) {
  const d = change.diff || {};
  const rows = [];
  for (const [field, pair] of Object.entries(d.fields || {})) {
    const [live, proposed] = Array.isArray(pair) ? pair : [null, pair];
    rows.push(h("tr", {}, h("td", {}, field),
      live === null || live === undefined ? h("td", { class: "muted" }, "—") : h("td", { class: "diff-del" }, JSON.stringify(live)),
      h("td", { class: "diff-add" }, JSON.stringify(proposed))));
  }
  const hosts = d.hosts || {};
  for (const x of hosts.added || []) rows.push(h("tr", {}, h("td", {}, "host"), h("td", {}), h("td", { class: "diff-add" }, x)));
  for (const x of hosts.removed || []) rows.push(h("tr", {}, h("td", {}, "host"), h("td", { class: "diff-del" }, x), h("td", {})));
  const grants = d.grants || {};
  const g = (x) => `${x.purpose}: ${(x.categories || []).join(", ")}${x.legal_basis ? " (" + x.legal_basis + ")" : ""}`;
  for (const x of grants.added || []) rows.push(h("tr", {}, h("td", {}, "grant"), h("td", {}), h("td", { class: "diff-add" }, g(x))));
  for (const x of grants.removed || []) rows.push(h("tr", {}, h("td", {}, "grant"), h("td", { class: "diff-del" }, g(x)), h("td", {})));
  for (const x of grants.changed || []) rows.push(h("tr", {}, h("td", {}, `grant ${x.purpose || x.id}`),
    h("td", { class: "diff-del" }, JSON.stringify(Object.fromEntries(Object.entries(x.fields || {}).map(([k, v]) => [k, v[0]])))),
    h("td", { class: "diff-add" }, JSON.stringify(Object.fromEntries(Object.entries(x.fields || {}).map(([k, v]) => [k, v[1]]))))));
  if (!rows.length) return h("p", { class: "muted" }, "no difference to what is live");
  return h("table", { class: "diff" }, h("thead", {}, h("tr", {}, h("th", {}, "what"), h("th", {}, "live"), h("th", {}, "proposed"))), h("tbody", {}, rows));
}

function impactView(result) {
  if (!result.ok) return h("p", { class: "error" }, `impact: ${problem(result)}`);
  const d = result.data;
  const head = h("p", {}, `${d.replayed} calls recorded over the last 7 days replayed: `,
    h("strong", {}, `${d.totals.allow_to_deny} would be blocked`), ", ",
    h("strong", {}, `${d.totals.deny_to_allow} would be let through`), ".");
  if (!d.flips.length) return h("div", { class: "impact" }, head);
  return h("div", { class: "impact" }, head, h("table", {}, h("thead", {}, h("tr", {},
    ["Flip", "Calls", "Source", "Recipient", "Purpose", "Category", "Reason"].map((t) => h("th", {}, t)))),
    h("tbody", {}, d.flips.map((x) => h("tr", {}, h("td", {}, badge(x.to === "deny" ? "deny" : "", `${x.from} → ${x.to}`)),
      h("td", {}, x.count), h("td", {}, [x.namespace, x.source].filter(Boolean).join("/") || "-"),
      h("td", {}, x.recipient_id || "-"), h("td", {}, x.purpose || "-"), h("td", {}, x.category || "-"), h("td", {}, x.reason))))));
}

const FOUR_EYES = "Four eyes: a change goes live only when approved by a person other than " +
  "everyone who authored it since the last approval (two tokens of one person count as one). " +
  "Ask another security reviewer to approve it.";

function changeCard(change) {
  const id = change.entity_id;
  const proposed = { ...change.proposed, status: "approved" };
  const candidate = change.entity_type === "workload" ? { change: { workloads: [proposed] } }
    : { change: { recipients: [proposed] } };
  const impactBox = h("div", { class: "impact-box", id: `impact-${id}` }, h("p", { class: "muted" }, "computing the impact…"));
  api("POST", "/v1/impact", { registry: candidate, days: 7 }).then((r) => impactBox.replaceChildren(impactView(r)));
  const note = h("input", { placeholder: "note (kept in the audit trail)", size: 50, id: `note-${id}` });
  const msg = h("p", { id: `result-${id}` });
  async function review(action) {
    const link = (change.links || {})[action] || `/v1/${change.entity_type}s/${id}/${action}`;
    const r = await api("POST", link, { note: note.value || null },
      change.version ? { "If-Match": `"${change.version}"` } : {});
    if (r.ok) { msg.className = "notice"; msg.textContent = `${action === "approve" ? "approved" : "rejected"}: ${id}`; return; }
    msg.className = "error";
    msg.textContent = problem(r);
    if ((r.data || {}).type && r.data.type.endsWith("/four-eyes")) msg.append(h("span", { class: "policy four-eyes" }, " " + FOUR_EYES));
  }
  const actions = IS_SECURITY ? h("div", { class: "bar" }, note,
    h("button", { type: "button", id: `approve-${id}`, onclick: () => review("approve") }, "Approve"),
    h("button", { type: "button", class: "danger", id: `reject-${id}`, onclick: () => review("reject") }, "Reject"))
    : h("p", { class: "muted" }, "Approving is for security reviewers (four eyes).");
  const card = h("section", { class: "card change", "data-entity": id },
    h("h2", {}, `${change.entity_type} ${id} `, h("span", { class: "badge" }, change.kind), " ",
      h("span", { class: "muted" }, `by ${(change.authors || [change.updated_by]).filter(Boolean).join(", ")}`),
      (change.authors || []).includes(BOOT.user) ? [" ", h("span", { class: "badge yours" }, "yours")] : null,
      " ", h("span", { class: "muted version" }, `version ${change.version}`)),
    diffView(change), h("h3", {}, "Impact of approving it"), impactBox, actions, msg);
  if (IS_ENGINEER) card.append(editBar(change, card));
  return card;
}

async function approvals() {
  const r = await api("GET", "/v1/changes");
  if (!r.ok) { APP.replaceChildren(h("h1", {}, "Approvals"), h("p", { class: "error" }, problem(r))); return; }
  const items = r.data.items;
  APP.replaceChildren(h("h1", {}, "Approvals"),
    h("p", { class: "muted" }, FOUR_EYES),
    ...(items.length ? items.map(changeCard) : [h("p", { class: "muted" }, "Nothing awaits approval.")]));
}

// ---------------------------------------------------------------- editing (engineers)
// An engineer edits a pending change (a proposal, or a live entry's staged edit) through the
// same API routes as the CLI (PATCH/POST/DELETE under /v1/recipients and /v1/workloads), each
// write naming the version it started from (If-Match) and carrying the CSRF token. The edit
// stays pending: only a reviewer who authored none of it approves it. A refused write leaves
// the form as typed, its errors beside the fields.

const RECIPIENT_FIELDS = ["name", "kind", "regions", "hosts", "tls_origination", "inspect_tls",
  "owner_team", "contract_ref", "notes"];
const GRANT_FIELDS = ["purpose", "categories", "legal_basis", "expires"];

function words(text) { return text.split(/[\s,]+/).filter(Boolean); }
function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }
function domId(text) { return text.replace(/[^A-Za-z0-9_-]/g, "_"); }
function versionOf(result) {
  const tag = result.headers && result.headers.get("ETag");
  return tag ? Number(tag.replace(/^W\//, "").replace(/"/g, "")) : null;
}
function changed(want, original, names) {
  const out = {};
  for (const k of names) if (!same(want[k], original[k])) out[k] = want[k];
  return out;
}

// A labelled input with the place for its error; `data-field` is the API's field name.
function field(label, input, name, tag) {
  return h(tag || "label", { class: "field", "data-field": name }, label, input,
    h("span", { class: "field-error", role: "alert" }));
}

function check(name, id, label, on, value) {
  return h("label", { class: "inline" }, h("input", { type: "checkbox", name, id, value, checked: on }), ` ${label}`);
}

// Put each error of a refused write beside its field (within `scope`), the problem below.
function showErrors(scope, msg, result) {
  const d = result.data || {};
  const errors = d.errors || (d.hosts ? [{ field: "hosts", message: d.detail || "" }] : []);
  for (const e of errors) {
    const holder = scope.querySelector(`[data-field="${CSS.escape(String(e.field || "").split(".")[0])}"]`);
    if (!holder) continue;
    holder.classList.add("invalid");
    holder.querySelector(".field-error").textContent = e.message;
  }
  msg.className = "edit-message error";
  msg.textContent = result.status === 412
    ? "This change moved since you opened it: reload the page to see it (your edits are still in the form)."
    : problem(result);
}

function grantEditor(values, gid, prefix, categoryList) {
  const id = (name) => `${prefix}-${name}`;
  const el = h("fieldset", { class: "grant", id: prefix },
    h("legend", {}, gid === null ? "new grant" : `grant ${gid}`),
    field("Purpose", h("select", { name: "purpose", id: id("purpose") },
      BOOT.purposes.map((p) => h("option", { value: p, selected: p === values.purpose }, p))), "purpose"),
    field("Categories (comma separated)", h("input", { name: "categories", id: id("categories"), size: 50,
      list: categoryList, value: (values.categories || []).join(", ") }), "categories"),
    field("Legal basis", h("input", { name: "legal_basis", id: id("legal_basis"), value: values.legal_basis || "" }), "legal_basis"),
    field("Expires (last valid day)", h("input", { name: "expires", id: id("expires"), type: "date", value: values.expires || "" }), "expires"),
    check("remove", id("remove"), "remove this grant", false));
  const get = (name) => el.querySelector(`[name=${name}]`);
  const read = () => ({
    purpose: get("purpose").value, categories: words(get("categories").value),
    legal_basis: get("legal_basis").value.trim() || null, expires: get("expires").value || null,
  });
  const grant = { el, gid, original: gid === null ? null : read() };
  // The write this grant needs (none when unchanged), and what a success changes here.
  grant.step = (base) => {
    const want = read();
    if (get("remove").checked) {
      if (grant.gid === null) return null;
      return { method: "DELETE", path: `${base}/grants/${grant.gid}`, scope: el, done: () => { el.remove(); grant.gone = true; } };
    }
    if (grant.gid === null) {
      return { method: "POST", path: `${base}/grants`, body: want, scope: el,
        done: (r) => { grant.gid = r.data.id; grant.original = want; } };
    }
    const diff = changed(want, grant.original, GRANT_FIELDS);
    if (!Object.keys(diff).length) return null;
    return { method: "PATCH", path: `${base}/grants/${grant.gid}`, body: diff, scope: el,
      done: () => Object.assign(grant.original, diff) };
  };
  return grant;
}

function recipientEditor(change, prefix) {
  const p = change.proposed;
  const ids = change.proposed_grant_ids || [];
  const id = (name) => `${prefix}-${name}`;
  const input = (name, attrs) => h("input", { name, id: id(name), ...attrs });
  const categoryList = id("categories");
  const grants = (p.grants || []).map((g, i) => grantEditor(g, ids[i] ?? null, id(`grant-${i}`), categoryList));
  const grantBox = h("div", { class: "grants" }, grants.map((g) => g.el));
  const fields = h("div", { class: "recipient-fields" },
    h("div", { class: "bar" },
      field("Name", input("name", { value: p.name || "", size: 30 }), "name"),
      field("Kind", h("select", { name: "kind", id: id("kind") },
        BOOT.recipient_kinds.map((k) => h("option", { value: k, selected: k === p.kind }, k))), "kind"),
      field("Regions (ISO codes)", input("regions", { value: (p.regions || []).join(" "), size: 16 }), "regions"),
      field("Owner team", input("owner_team", { value: p.owner_team || "" }), "owner_team"),
      field("Contract", input("contract_ref", { value: p.contract_ref || "" }), "contract_ref")),
    h("div", { class: "bar" },
      field("Hosts (one per line)", h("textarea", { name: "hosts", id: id("hosts"), rows: 3, cols: 40 },
        (p.hosts || []).join("\n")), "hosts"),
      field("Notes", h("textarea", { name: "notes", id: id("notes"), rows: 3, cols: 40 }, p.notes || ""), "notes"),
      h("div", {}, field("", check("tls_origination", id("tls_origination"), "TLS origination", !!p.tls_origination), "tls_origination", "div"),
        field("", check("inspect_tls", id("inspect_tls"), "inspect TLS", !!p.inspect_tls), "inspect_tls", "div"))));
  const v = (name) => fields.querySelector(`[name=${name}]`);
  const read = () => ({
    name: v("name").value.trim(), kind: v("kind").value, regions: words(v("regions").value),
    hosts: words(v("hosts").value), tls_origination: v("tls_origination").checked,
    inspect_tls: v("inspect_tls").checked, owner_team: v("owner_team").value.trim() || null,
    contract_ref: v("contract_ref").value.trim() || null, notes: v("notes").value.trim() || null,
  });
  const original = read();
  let added = 0;
  const addGrant = h("button", { type: "button", class: "secondary", id: id("add-grant"), onclick: () => {
    const g = grantEditor({ purpose: BOOT.purposes[0], categories: [] }, null, id(`new-grant-${added++}`), categoryList);
    grants.push(g);
    grantBox.append(g.el);
  } }, "Add a grant");
  const path = `/v1/recipients/${encodeURIComponent(p.id)}`;
  return {
    title: `Edit recipient ${p.id}`, path,
    content: [fields, h("h4", {}, "Grants"), grantBox, addGrant,
      h("datalist", { id: categoryList }, BOOT.categories.map((c) => h("option", { value: c })))],
    // The writes that make the proposed state what the form says, in order.
    steps: () => {
      const patch = changed(read(), original, RECIPIENT_FIELDS);
      const out = Object.keys(patch).length
        ? [{ method: "PATCH", path, body: patch, scope: fields, done: () => Object.assign(original, patch) }] : [];
      for (const g of grants) {
        const step = g.gone ? null : g.step(path);
        if (step) out.push(step);
      }
      return out;
    },
  };
}

function workloadEditor(change, prefix) {
  const p = change.proposed;
  const id = (name) => `${prefix}-${name}`;
  const anyRecipient = p.recipients === null || p.recipients === undefined;
  const purposes = h("div", { class: "checks" }, BOOT.purposes.map((x) =>
    check("purposes", id(`purpose-${x}`), x, (p.purposes || []).includes(x), x)));
  const recipients = h("input", { name: "recipients", id: id("recipients"), size: 40,
    value: anyRecipient ? "" : p.recipients.join(", "), disabled: anyRecipient });
  const any = h("input", { type: "checkbox", id: id("any"), checked: anyRecipient,
    onchange: () => { recipients.disabled = any.checked; } });
  const fields = h("div", {},
    field("Purposes it may declare", purposes, "purposes", "div"),
    h("label", { class: "inline" }, any, " any registered recipient"),
    field("Recipients it may call (comma separated)", recipients, "recipients"));
  const read = () => ({
    purposes: [...purposes.querySelectorAll("input:checked")].map((c) => c.value),
    recipients: any.checked ? null : words(recipients.value),
  });
  const original = read();
  const path = `/v1/workloads/${encodeURIComponent(p.namespace)}/${encodeURIComponent(p.name)}`;
  return {
    title: `Edit workload ${p.namespace}/${p.name}`, path, content: [fields],
    steps: () => {
      const patch = changed(read(), original, ["purposes", "recipients"]);
      return Object.keys(patch).length
        ? [{ method: "PATCH", path, body: patch, scope: fields, done: () => Object.assign(original, patch) }] : [];
    },
  };
}

function editBar(change, card) {
  const prefix = `edit-${domId(change.entity_id)}`;
  const open = h("button", { type: "button", class: "secondary", id: prefix }, "Edit");
  const box = h("div", { class: "edit-box" }, open);
  open.addEventListener("click", () => {
    const editor = change.entity_type === "workload" ? workloadEditor(change, prefix) : recipientEditor(change, prefix);
    let version = change.version;
    const msg = h("p", { class: "edit-message", id: `${prefix}-message`, role: "status" });
    const save = h("button", { type: "submit", id: `${prefix}-save` }, "Save (stays pending)");
    const cancel = h("button", { type: "button", class: "secondary", onclick: () => box.replaceChildren(open) }, "Cancel");
    const form = h("form", { class: "edit card", id: `${prefix}-form`, novalidate: true },
      h("h3", {}, editor.title), editor.content, h("div", { class: "bar" }, save, cancel), msg);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      for (const el of form.querySelectorAll(".invalid")) el.classList.remove("invalid");
      for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
      const steps = editor.steps();
      if (!steps.length) { msg.className = "edit-message muted"; msg.textContent = "nothing changed"; return; }
      save.disabled = true;
      msg.className = "edit-message muted";
      msg.textContent = "saving…";
      try {
        let saved = 0;
        for (const step of steps) {
          const r = await api(step.method, step.path, step.body, { "If-Match": `"${version}"` });
          if (!r.ok) {
            showErrors(step.scope, msg, r);
            // Each write is its own request: say what went in before the refused one.
            if (saved) msg.prepend(`${saved} of ${steps.length} writes saved (now version ${version}); `);
            return;
          }
          step.done(r);
          saved += 1;
          // A 204 (a deleted grant) carries no ETag: read the version back.
          version = versionOf(r) ?? versionOf(await api("GET", editor.path));
        }
        await refreshCard(change, card);
      } finally {
        save.disabled = false;
      }
    });
    box.replaceChildren(form);
  });
  return box;
}

// Show the change as it is after an edit: its new diff, version and impact.
async function refreshCard(change, card) {
  const r = await api("GET", "/v1/changes");
  const item = r.ok ? r.data.items.find((x) => x.entity_type === change.entity_type && x.entity_id === change.entity_id) : null;
  const notice = h("p", { class: "notice", id: `saved-${domId(change.entity_id)}` });
  if (!item) {
    notice.textContent = `saved: ${change.entity_id} no longer differs from what is live; nothing awaits approval`;
    card.replaceWith(h("section", { class: "card change" }, notice));
    return;
  }
  notice.textContent = `saved: version ${item.version}, awaiting approval by a security reviewer`;
  const fresh = changeCard(item);
  fresh.insertBefore(notice, fresh.children[1]);
  card.replaceWith(fresh);
}

// ---------------------------------------------------------------- recipients

async function recipients(id) {
  if (id) return recipientDetail(id);
  const r = await api("GET", "/v1/recipients?limit=1000");
  if (!r.ok) { APP.replaceChildren(h("p", { class: "error" }, problem(r))); return; }
  APP.replaceChildren(h("h1", {}, "Recipients"), h("table", { id: "recipients" },
    h("thead", {}, h("tr", {}, ["Recipient", "Name", "Kind", "Status", "Regions", "Grants"].map((t) => h("th", {}, t)))),
    h("tbody", {}, r.data.items.map((x) => h("tr", {},
      h("td", {}, h("a", { href: `/ui/recipients/${encodeURIComponent(x.id)}` }, x.id)), h("td", {}, x.name),
      h("td", {}, x.kind), h("td", {}, badge(x.status === "approved" ? "" : "would_block", x.status)),
      h("td", {}, x.regions.join(" ")), h("td", {}, x.grants.map((g) => `${g.purpose} (${g.status})`).join(", ")))))));
}

async function recipientDetail(id) {
  const [r, audit] = await Promise.all([api("GET", `/v1/recipients/${encodeURIComponent(id)}`),
    api("GET", `/v1/audit?scope=${encodeURIComponent("recipient:" + id)}&limit=200`)]);
  if (!r.ok) { APP.replaceChildren(h("p", { class: "error" }, problem(r))); return; }
  const x = r.data;
  let events = audit.ok ? audit.data.items : [];
  if (audit.ok && !events.length) {
    const again = await api("GET", `/v1/audit?entity_id=${encodeURIComponent(id)}&limit=200`);
    events = again.ok ? again.data.items : [];
  }
  APP.replaceChildren(h("h1", {}, `${x.name} `, h("span", { class: "muted" }, `(${x.id})`)),
    h("section", { class: "card" }, h("p", {}, `${x.kind}, status `, h("strong", { id: "recipient-status" }, x.status),
      `, regions ${x.regions.join(" ") || "none"}, hosts ${x.hosts.join(", ")}`)),
    h("h2", {}, "Grants"), h("table", { id: "grants" }, h("thead", {}, h("tr", {},
      ["Purpose", "Categories", "Legal basis", "Expires", "Status", "Approved by"].map((t) => h("th", {}, t)))),
      h("tbody", {}, x.grants.map((g) => h("tr", {}, h("td", {}, g.purpose), h("td", {}, g.categories.join(", ")),
        h("td", {}, g.legal_basis || "-"), h("td", {}, g.expires || "-"), h("td", {}, g.status), h("td", {}, g.approved_by || "-"))))),
    h("h2", {}, "Status history and audit trail"),
    h("table", { id: "audit" }, h("thead", {}, h("tr", {}, ["Time", "Who", "Action", "Note"].map((t) => h("th", {}, t)))),
      h("tbody", {}, events.map((e) => h("tr", {}, h("td", {}, fmtTime(e.time)),
        h("td", {}, e.actor + (e.token_name && e.token_name !== e.actor ? ` (${e.token_name})` : "")),
        h("td", {}, e.action), h("td", { class: "note" }, e.note || (e.after && e.after.note) || ""))))));
}

// ---------------------------------------------------------------- data map

async function datamap() {
  const r = await api("GET", "/v1/datamap");
  if (!r.ok) { APP.replaceChildren(h("p", { class: "error" }, problem(r))); return; }
  const cells = r.data.cells;
  const categories = [...new Set(cells.map((c) => c.category))].sort();
  const rows = new Map();
  for (const c of cells) {
    const key = `${c.recipient_id}\u0000${c.purpose}`;
    if (!rows.has(key)) rows.set(key, new Map());
    rows.get(key).set(c.category, c);
  }
  const cell = (c) => {
    if (!c) return h("td", {});
    const cls = c.attempted_not_granted ? "attempted" : c.granted_unused ? "unused" : c.granted ? "used" : "";
    const text = c.granted ? (c.observed ? `${c.observed} calls` : "granted, unused")
      : `${c.blocked} blocked` + (c.observed ? `, ${c.observed} calls` : "");
    return h("td", { class: cls, title: c.attempted_not_granted ? "attempted but not granted" : c.granted_unused ? "granted but never used" : "" }, text);
  };
  APP.replaceChildren(h("h1", {}, "Data map"),
    h("p", {}, "Declared (approved grants) against observed (allowed calls and blocked attempts, last 30 days). ",
      h("span", { class: "badge would_block" }, "granted but never used"), " ",
      h("span", { class: "badge deny" }, "attempted but not granted"), " · export: ",
      h("a", { href: "/v1/datamap?format=csv" }, "record of processing (CSV)"), " · ",
      h("a", { href: "/v1/datamap?format=fides" }, "Fides manifest")),
    h("table", { id: "datamap" }, h("thead", {}, h("tr", {}, h("th", {}, "Recipient"), h("th", {}, "Purpose"),
      categories.map((c) => h("th", {}, c)))),
      h("tbody", {}, [...rows.entries()].map(([key, m]) => {
        const [rid, purpose] = key.split("\u0000");
        return h("tr", {}, h("td", {}, rid), h("td", {}, purpose), categories.map((c) => cell(m.get(c))));
      }))));
}

// ---------------------------------------------------------------- boot

const VIEWS = {
  overview, flows: (arg) => (arg ? flowDetail(arg) : flows()), approvals,
  recipients: (arg) => recipients(arg), datamap,
};

(VIEWS[BOOT.page] || overview)(decodeURIComponent(BOOT.arg || "")).catch((err) => {
  APP.replaceChildren(h("p", { class: "error" }, `Could not load this page: ${err.message}`));
});
})();
