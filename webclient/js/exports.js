// The Exports page: evidence release requests.
//
// What shows depends on the user's actions (from GET /api/session):
//   export.request   the request form and "My requests" (status, download button)
//   export.approve   the approval queue (approve / reject with a reason; never one's own);
//                    releasing evidence holds: one approver proposes, another confirms
//   export.produce   "Produce" on approved requests
//   oversight (export.approve, export.produce, audit.read): the release register and its CSV
//
// Each format's options (watermark, anonymisation...) are drawn from the JSON schema that
// GET /api/exports/formats gives, so a third-party format's options appear without code
// here. Options with a title are shown; the rest are under "More settings".

import { request } from "./api.js";
import { can } from "./session.js";

const REFRESH_MS = 3000;
const OVERSIGHT = ["export.approve", "export.produce", "audit.read"];

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

const time = (s) => (s ? new Date(s * 1000).toLocaleString() : "");

/** A datetime-local value (the browser's time zone) as epoch seconds. */
function epoch(value) {
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? ms / 1000 : NaN;
}

function localInput(seconds) {
  const d = new Date(seconds * 1000);
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
}

async function postJson(path, body) {
  const init = { method: "POST" };
  if (body !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  return (await request(path, init)).json();
}

/** The JSON schema of a format's options: its properties, with $ref resolved. */
function optionProperties(format) {
  const schema = format.options_schema || {};
  const ref = schema.$ref ? schema.$ref.split("/").pop() : null;
  return ((ref ? schema.$defs?.[ref] : schema) || {}).properties || {};
}

/** One form field per option the browser can edit (booleans, choices, numbers, text). */
function optionFields(format) {
  const shown = [];
  const more = [];
  for (const [key, prop] of Object.entries(optionProperties(format))) {
    const value = format.options?.[key] ?? prop.default;
    let input;
    if (prop.type === "boolean") {
      input = el("input", { type: "checkbox", checked: Boolean(value) });
    } else if (Array.isArray(prop.enum)) {
      input = el("select", {}, ...prop.enum.map((v) => el("option", { value: String(v), selected: v === value }, String(v))));
    } else if (prop.type === "integer" || prop.type === "number") {
      input = el("input", { type: "number", value: String(value), step: prop.type === "integer" ? "1" : "any" });
      if (prop.minimum !== undefined) input.min = String(prop.minimum);
      if (prop.maximum !== undefined) input.max = String(prop.maximum);
    } else if (prop.type === "string") {
      input = el("input", { type: "text", value: String(value ?? "") });
    } else {
      continue; // lists and objects: the configured defaults apply
    }
    Object.assign(input.dataset, { option: key, kind: prop.type || "enum", initial: JSON.stringify(value) });
    const label = el("label", { class: prop.type === "boolean" ? "option-check" : "" }, prop.title || key, " ", input);
    (prop.title ? shown : more).push(label);
  }
  if (more.length) shown.push(el("details", { class: "export-more" }, el("summary", {}, "More settings"), ...more));
  return shown;
}

/** The options the user changed from the defaults in force (the gateway fills in the rest). */
function chosenOptions(fieldset) {
  const out = {};
  for (const input of fieldset.querySelectorAll("[data-option]")) {
    const { option, kind, initial } = input.dataset;
    let value;
    if (kind === "boolean") value = input.checked;
    else if (kind === "integer" || kind === "number") value = Number(input.value);
    else value = input.value;
    if (JSON.stringify(value) !== initial) out[option] = value;
  }
  return out;
}

/** What an approver needs to see at a glance: the options that ask for something. */
function settingsSummary(options = {}) {
  const parts = [];
  if (options.watermark) parts.push(`watermark (${options["watermark-position"] || "bottom"})`);
  if (options.watermark && options["keep-unaltered"] === false) parts.push("no unaltered copy");
  if (options.method) parts.push(`${options.method}${options.people === false ? ", faces only" : ", faces and people"}`);
  return parts.join("; ") || "standard";
}

function statusText(r) {
  if (r.status === "produced" && r.package_deleted_at) return `package deleted ${time(r.package_deleted_at)}`;
  let text = r.status + (r.error ? `: ${r.error}` : "");
  if (holding(r) && r.release_proposed_by) text += ` · hold release proposed by ${r.release_proposed_by}`;
  return text;
}

/** Does the request still hold recordings against retention? */
const holding = (r) => (r.holds || []).length > 0 && !r.holds_released_at;

/** "#/exports?incident=7" (an incident's "Request an export"): fill the form from the
 * incident's pre-filled request (cameras, range, case number, purpose). */
function prefillFromIncident(form) {
  const id = new URLSearchParams(window.location.hash.split("?")[1] || "").get("incident");
  if (!id || !/^\d+$/.test(id)) return;
  request(`/api/incidents/${id}/export-request`)
    .then((r) => r.json())
    .then((draft) => {
      form.elements.cameras.value = draft.cameras.join(", ");
      form.elements.from.value = localInput(draft.from);
      form.elements.to.value = localInput(draft.to);
      form.elements.case_number.value = draft.case_number;
      form.elements.purpose.value = draft.purpose;
      form.dataset.incident = id;
    })
    .catch(() => {});
}

export class ExportsPage {
  #root;
  #user;
  #timer = null;
  #message;

  constructor(root, { user }) {
    this.#root = root;
    this.#user = user;
  }

  show() {
    this.#root.hidden = false;
    this.#build();
    this.refresh();
    this.#timer = window.setInterval(() => this.refresh(), REFRESH_MS);
  }

  hide() {
    window.clearInterval(this.#timer);
    this.#timer = null;
    this.#root.hidden = true;
    this.#root.replaceChildren();
  }

  #say(text, kind = "status") {
    this.#message.textContent = text;
    this.#message.setAttribute("role", kind === "error" ? "alert" : "status");
    this.#message.hidden = !text;
  }

  #build() {
    this.#message = el("p", { class: "page-message", hidden: true });
    const parts = [el("div", { class: "page-head" }, el("h2", { id: "exports-heading" }, "Evidence exports")), this.#message];
    if (can(this.#user, "export.request")) parts.push(this.#form());
    if (can(this.#user, "export.request")) {
      parts.push(el("section", { class: "exports-list", dataset: { list: "mine" } }, el("h3", {}, "My requests"), el("div", { dataset: { body: "mine" } })));
    }
    if (can(this.#user, "export.approve", "export.produce")) {
      parts.push(el("section", { class: "exports-list", dataset: { list: "queue" } }, el("h3", {}, "Approval and production"), el("div", { dataset: { body: "queue" } })));
    }
    if (can(this.#user, ...OVERSIGHT)) {
      parts.push(
        el("section", { class: "exports-list", dataset: { list: "register" } },
          el("h3", {}, "Release register ", el("a", { class: "button-link", href: "/api/exports/register.csv", download: "release-register.csv" }, "CSV")),
          el("div", { dataset: { body: "register" } })),
      );
    }
    this.#root.replaceChildren(...parts);
  }

  #form() {
    const now = Date.now() / 1000;
    const input = (name, props = {}) => el("input", { name, required: true, ...props });
    const format = el("select", { name: "format" }, el("option", { value: "evidence" }, "Evidence package (signed)"));
    const options = el("fieldset", { class: "export-options", dataset: { options: "" } });
    let formats = [];
    const showOptions = () => {
      const chosen = formats.find((f) => f.id === format.value);
      options.replaceChildren(...(chosen ? optionFields(chosen) : []));
      options.hidden = !options.childElementCount;
    };
    format.addEventListener("change", showOptions);
    request("/api/exports/formats")
      .then((r) => r.json())
      .then((list) => {
        formats = list;
        format.replaceChildren(...formats.map((f) => el("option", { value: f.id, selected: f.id === "evidence" }, f.title)));
        showOptions();
      })
      .catch(() => {});
    const form = el(
      "form", { class: "export-form", id: "export-form" },
      el("h3", {}, "New request"),
      el("label", {}, "Cameras (comma-separated ids) ", input("cameras", { placeholder: "cam-1, cam-2" })),
      el("label", {}, "From ", input("from", { type: "datetime-local", step: 1, value: localInput(now - 3600) })),
      el("label", {}, "To ", input("to", { type: "datetime-local", step: 1, value: localInput(now - 60) })),
      el("label", {}, "Case number ", input("case_number")),
      el("label", {}, "Requesting authority ", input("authority")),
      el("label", {}, "Legal basis ", input("legal_basis")),
      el("label", {}, "Purpose ", el("textarea", { name: "purpose", required: true, rows: 2 })),
      el("label", {}, "Format ", format),
      options,
      el("button", { type: "submit" }, "File request"),
    );
    prefillFromIncident(form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const body = {
        cameras: String(data.get("cameras")).split(",").map((c) => c.trim()).filter(Boolean),
        from: epoch(data.get("from")),
        to: epoch(data.get("to")),
        case_number: data.get("case_number"),
        authority: data.get("authority"),
        legal_basis: data.get("legal_basis"),
        purpose: data.get("purpose"),
        format: data.get("format"),
        options: chosenOptions(options),
      };
      try {
        const created = await postJson("/api/exports", body);
        this.#say(`Request ${created.id} filed; it waits for approval.`);
        form.reset();
        showOptions();
        this.refresh();
      } catch (err) {
        this.#say(`Not filed: ${err.message}`, "error");
      }
    });
    return form;
  }

  async refresh() {
    try {
      if (this.#root.querySelector('[data-body="mine"]')) {
        const mine = await (await request("/api/exports?mine=1")).json();
        this.#fill("mine", mine, (r) => this.#mineActions(r));
      }
      if (this.#root.querySelector('[data-body="queue"]')) {
        const all = await (await request("/api/exports")).json();
        const open = all.filter((r) => ["pending", "approved", "failed", "producing"].includes(r.status) || r.package_deleted_at || holding(r));
        this.#fill("queue", open, (r) => this.#queueActions(r), true);
      }
      if (this.#root.querySelector('[data-body="register"]')) {
        const entries = await (await request("/api/exports/register")).json();
        this.#fillRegister(entries);
      }
    } catch (err) {
      if (err.status !== 401) this.#say(`Gateway: ${err.message}`, "error");
    }
  }

  #fill(name, rows, actions, showRequester = false) {
    const body = this.#root.querySelector(`[data-body="${name}"]`);
    if (!body) return;
    if (!rows.length) {
      body.replaceChildren(el("p", { class: "hint" }, "None."));
      return;
    }
    const head = ["#", "Case", "Cameras", "Range", "Format", "Settings", ...(showRequester ? ["Requested by"] : []), "Status", ""];
    body.replaceChildren(
      el("table", { class: "exports-table" },
        el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows.map((r) =>
          el("tr", { dataset: { request: String(r.id), status: r.status } },
            el("td", {}, String(r.id)),
            el("td", {}, r.case_number),
            el("td", {}, r.cameras.join(", ")),
            el("td", {}, `${time(r.from)} – ${time(r.to)}`),
            el("td", {}, r.format),
            el("td", { class: "export-settings", title: JSON.stringify(r.options || {}, null, 1) }, settingsSummary(r.options)),
            showRequester ? el("td", {}, r.requested_by) : null,
            el("td", { class: "export-status" }, statusText(r)),
            el("td", {}, ...actions(r)),
          ),
        )),
      ),
    );
  }

  #mineActions(r) {
    if (r.status !== "produced" || r.package_deleted_at) return [];
    return [el("a", { class: "button-link", href: `/api/exports/${r.id}/download`, download: r.package_name || "", dataset: { action: "download" } }, "Download")];
  }

  #queueActions(r) {
    const out = [];
    const mineToDecide = r.requested_by === this.#user.username;
    if (r.status === "pending" && can(this.#user, "export.approve") && !mineToDecide) {
      for (const [verb, label] of [["approve", "Approve"], ["reject", "Reject"]]) {
        const button = el("button", { type: "button", dataset: { action: verb } }, label);
        button.addEventListener("click", () => this.#decide(r.id, verb));
        out.push(button);
      }
    }
    const producible = ["approved", "failed"].includes(r.status) || (r.status === "produced" && r.package_deleted_at);
    if (producible && can(this.#user, "export.produce")) {
      const button = el("button", { type: "button", dataset: { action: "produce" } }, r.package_deleted_at ? "Produce again" : "Produce");
      button.addEventListener("click", async () => {
        try {
          await postJson(`/api/exports/${r.id}/produce`);
          this.#say(`Producing the package of request ${r.id}…`);
          this.refresh();
        } catch (err) {
          this.#say(err.message, "error");
        }
      });
      out.push(button);
    }
    if (holding(r) && can(this.#user, "export.approve") && !mineToDecide) {
      // four eyes: one approver proposes releasing the holds, a different one confirms
      if (!r.release_proposed_by) {
        out.push(this.#releaseButton(r, "release-holds", "Release holds", "release-holds",
          `Proposed releasing the holds of request ${r.id}; a second approver confirms.`));
      } else if (r.release_proposed_by !== this.#user.username) {
        const button = this.#releaseButton(r, "confirm-release", "Confirm release", "release-holds/confirm",
          `Holds of request ${r.id} released; retention may now delete its recordings.`);
        button.title = `Proposed by ${r.release_proposed_by}: ${r.release_proposal_reason || ""}`;
        out.push(button);
      }
    }
    return out;
  }

  #releaseButton(r, action, label, path, done) {
    const button = el("button", { type: "button", dataset: { action } }, label);
    button.addEventListener("click", async () => {
      const reason = window.prompt(`${label} of request ${r.id}: reason`);
      if (!reason) return;
      try {
        await postJson(`/api/exports/${r.id}/${path}`, { reason });
        this.#say(done);
        this.refresh();
      } catch (err) {
        this.#say(err.message, "error");
      }
    });
    return button;
  }

  async #decide(id, verb) {
    const reason = window.prompt(`Reason to ${verb} request ${id}:`);
    if (!reason) return;
    try {
      await postJson(`/api/exports/${id}/${verb}`, { reason });
      this.#say(`Request ${id} ${verb === "approve" ? "approved; its recordings are held" : "rejected"}.`);
      this.refresh();
    } catch (err) {
      this.#say(err.message, "error");
    }
  }

  #fillRegister(entries) {
    const body = this.#root.querySelector('[data-body="register"]');
    const head = ["Entry", "Time", "Event", "User", "Request", "Case", "Cameras"];
    body.replaceChildren(
      el("table", { class: "exports-table" },
        el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
        el("tbody", {}, ...entries.map((e) =>
          el("tr", { dataset: { event: e.event } },
            el("td", {}, String(e.id)), el("td", {}, time(e.at)), el("td", {}, e.event), el("td", {}, e.user || "system"),
            el("td", {}, String(e.request_id)), el("td", {}, e.case_number || ""), el("td", {}, (e.cameras || []).join(", ")),
          ),
        )),
      ),
    );
  }
}
