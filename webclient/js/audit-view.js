// The Audit page (action audit.read): filters, the entries newest first with "Load more"
// (paging with `before`), and a CSV download of the same filters.

import { auditUrl, listAudit, listAuditCheckpoints } from "./api.js";

const PAGE_SIZE = 100;
/** The most the gateway returns at once: the CSV holds up to this many entries. */
const CSV_LIMIT = 10000;
const OUTCOMES = ["ok", "failed", "refused"];

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function field(label, input) {
  return el("label", {}, label, input);
}

/** A datetime-local value (the browser's time zone) as epoch seconds, or "". */
function epoch(value) {
  if (!value) return "";
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? String(ms / 1000) : "";
}

function time(seconds) {
  return seconds === null || seconds === undefined ? "" : new Date(seconds * 1000).toLocaleString();
}

function detailText(detail) {
  if (!detail || typeof detail !== "object" || !Object.keys(detail).length) return "";
  return Object.entries(detail)
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(" ");
}

export class AuditPage {
  #root;
  #form;
  #body;
  #more;
  #csv;
  #status;
  #seal;
  #filters = {};
  #nextBefore = null;
  #loading = 0; // generation: a newer query makes older answers stale

  constructor(root) {
    this.#root = root;
    this.#build();
  }

  show() {
    this.#root.hidden = false;
    this.#query();
    this.#showSeal();
  }

  /** How far the chain is vouched for by the gateway's signature (see `citygate audit verify`). */
  async #showSeal() {
    let newest;
    try {
      [newest] = (await listAuditCheckpoints(1)).checkpoints;
    } catch (err) {
      this.#seal.textContent = err.status === 401 ? "" : `Cannot read the signed checkpoints: ${err.message}`;
      return;
    }
    this.#seal.dataset.entry = newest ? String(newest.entry_id) : "";
    this.#seal.textContent = newest
      ? `Signed up to entry ${newest.entry_id} at ${time(newest.at)} (checkpoint ${newest.id}, key ${newest.key_fingerprint.slice(0, 16)}…)`
      : "No signed checkpoint yet: the chain is signed every few minutes.";
    this.#seal.title = newest ? `entry hash ${newest.entry_hash}` : "";
  }

  hide() {
    this.#root.hidden = true;
  }

  destroy() {
    this.hide();
    this.#root.replaceChildren();
  }

  #build() {
    const outcome = el("select", { name: "outcome" }, el("option", { value: "" }, "any"), ...OUTCOMES.map((o) => el("option", { value: o }, o)));
    this.#form = el(
      "form",
      { class: "panel form-row audit-filters", "aria-label": "Filter the audit log" },
      field("User", el("input", { name: "user", autocomplete: "off", spellcheck: "false" })),
      field("Camera", el("input", { name: "camera", autocomplete: "off", spellcheck: "false" })),
      field("Action", el("input", { name: "action", placeholder: "live.* or login.ok", autocomplete: "off", spellcheck: "false" })),
      field("Outcome", outcome),
      field("From", el("input", { name: "from", type: "datetime-local", step: "1" })),
      field("To", el("input", { name: "to", type: "datetime-local", step: "1" })),
      el("button", { type: "submit", class: "primary" }, "Apply"),
      el("button", { type: "reset", class: "secondary" }, "Clear"),
    );
    this.#form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#query();
    });
    this.#form.addEventListener("reset", () => setTimeout(() => this.#query()));
    this.#csv = el("a", { class: "button-link", id: "audit-csv", download: "citygate-audit.csv" }, "Download CSV");
    this.#status = el("p", { class: "page-message", role: "status" });
    this.#seal = el("p", { class: "audit-seal" });
    this.#body = el("tbody");
    const head = ["Time", "User", "Client", "Action", "Outcome", "Camera", "Range", "Purpose", "Detail"];
    const table = el(
      "table",
      { class: "data-table audit-table" },
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
      this.#body,
    );
    this.#more = el("button", { type: "button", class: "secondary load-more", hidden: true }, "Load more");
    this.#more.addEventListener("click", () => this.#load(true));
    this.#root.replaceChildren(
      el("div", { class: "page-head" }, el("h2", { id: "audit-heading" }, "Audit log"), el("span", { class: "page-count" }), this.#csv),
      this.#seal,
      this.#form,
      this.#status,
      el("div", { class: "table-wrap" }, table),
      this.#more,
    );
  }

  #readFilters() {
    const data = new FormData(this.#form);
    const text = (name) => String(data.get(name) || "").trim();
    return {
      user: text("user"),
      camera: text("camera"),
      action: text("action"),
      outcome: text("outcome"),
      from: epoch(text("from")),
      to: epoch(text("to")),
    };
  }

  #query() {
    this.#filters = this.#readFilters();
    this.#csv.href = auditUrl({ ...this.#filters, limit: CSV_LIMIT, format: "csv" });
    this.#nextBefore = null;
    this.#load(false);
  }

  async #load(more) {
    const generation = ++this.#loading;
    this.#more.disabled = true;
    this.#status.textContent = more ? "Loading more…" : "Loading…";
    let page;
    try {
      page = await listAudit({ ...this.#filters, limit: PAGE_SIZE, before: more ? this.#nextBefore : "" });
    } catch (err) {
      if (generation !== this.#loading) return;
      this.#status.textContent = err.status === 401 ? "" : `Cannot read the audit log: ${err.message}`;
      this.#more.disabled = false;
      return;
    }
    if (generation !== this.#loading) return;
    const rows = page.entries.map((entry) => this.#row(entry));
    if (more) this.#body.append(...rows);
    else this.#body.replaceChildren(...rows);
    this.#nextBefore = page.next_before;
    const count = this.#body.children.length;
    this.#more.hidden = page.entries.length < PAGE_SIZE;
    this.#more.disabled = false;
    this.#root.querySelector(".page-count").textContent = `${count} entr${count === 1 ? "y" : "ies"} shown`;
    this.#status.textContent = count ? "" : "No entries match these filters.";
  }

  #row(entry) {
    const range = entry.range_from !== null && entry.range_from !== undefined
      ? `${time(entry.range_from)}${entry.range_to ? ` – ${time(entry.range_to)}` : ""}`
      : "";
    const detail = detailText(entry.detail);
    return el(
      "tr",
      { dataset: { id: String(entry.id), outcome: entry.outcome } },
      el("td", { class: "nowrap", title: `#${entry.id} · ${entry.hash}` }, time(entry.at)),
      el("td", {}, entry.user || ""),
      el("td", { class: "mono" }, entry.client || ""),
      el("td", { class: "mono" }, entry.action),
      el("td", {}, el("span", { class: "state-badge", dataset: { state: entry.outcome } }, entry.outcome)),
      el("td", {}, entry.camera || ""),
      el("td", { class: "nowrap" }, range),
      el("td", {}, entry.purpose || ""),
      el("td", { class: "detail", title: detail }, detail),
    );
  }
}
