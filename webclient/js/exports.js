// The Exports page: evidence release requests.
//
// What shows depends on the user's actions (from GET /api/session):
//   export.request   the request form and "My requests" (status, download button)
//   export.approve   the approval queue (approve / reject with a reason; never one's own)
//   export.produce   "Produce" on approved requests
//   oversight (export.approve, export.produce, audit.read): the release register and its CSV

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
    request("/api/exports/formats")
      .then((r) => r.json())
      .then((formats) => format.replaceChildren(...formats.map((f) => el("option", { value: f.id, selected: f.id === "evidence" }, f.title)))
      )
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
      el("button", { type: "submit" }, "File request"),
    );
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
      };
      try {
        const created = await postJson("/api/exports", body);
        this.#say(`Request ${created.id} filed; it waits for approval.`);
        form.reset();
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
        const open = all.filter((r) => ["pending", "approved", "failed", "producing"].includes(r.status));
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
    const head = ["#", "Case", "Cameras", "Range", "Format", ...(showRequester ? ["Requested by"] : []), "Status", ""];
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
            showRequester ? el("td", {}, r.requested_by) : null,
            el("td", { class: "export-status" }, r.status + (r.error ? `: ${r.error}` : "")),
            el("td", {}, ...actions(r)),
          ),
        )),
      ),
    );
  }

  #mineActions(r) {
    if (r.status !== "produced") return [];
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
    if (["approved", "failed"].includes(r.status) && can(this.#user, "export.produce")) {
      const button = el("button", { type: "button", dataset: { action: "produce" } }, "Produce");
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
    return out;
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
