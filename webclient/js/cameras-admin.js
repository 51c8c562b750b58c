// Cameras (#/cameras), for cameras.manage: the cameras managed through the API, editable
// (add, change, remove: each one starts, restarts or stops at once on the gateway), beside
// the cameras of cameras.toml, read-only here (change the file, then `citygate reload`).
// A camera is the same table as in cameras.toml; the gateway checks it the same way and
// its errors name the key (`managed camera: camera.vendor: unknown vendor ...`).

import { request } from "./api.js";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "className") node.className = value;
    else if (value === true) node.setAttribute(key, "");
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function json(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

export class CamerasAdminPage {
  #root;

  constructor(root) {
    this.#root = root;
  }

  async show() {
    this.#root.hidden = false;
    this.message = el("p", { className: "page-message", role: "alert", id: "cameras-admin-message" });
    this.managed = el("tbody", { id: "cameras-managed" });
    this.configured = el("tbody", { id: "cameras-configured" });
    this.editor = el("div", { className: "cameras-editor" });
    const head = (...names) => el("thead", {}, el("tr", {}, ...names.map((n) => el("th", { scope: "col" }, n))));
    this.#root.replaceChildren(
      el("h2", { id: "cameras-admin-heading" }, "Cameras"),
      this.message,
      el("h3", {}, "Managed here"),
      el("table", { className: "cameras-table" }, head("Id", "Name", "Vendor", "Area", "By", ""), this.managed),
      this.editor,
      el("h3", {}, "From the configuration (read-only)"),
      (this.fileNote = el("p", { className: "hint" })),
      el("table", { className: "cameras-table" }, head("Id", "Name", "Vendor", "Area", "Recorded"), this.configured),
    );
    this.editor.replaceChildren(this.#form());
    await this.#refresh();
  }

  hide() {
    this.#root.hidden = true;
    this.#root.replaceChildren();
  }

  async #refresh() {
    let listing;
    try {
      listing = await (await request("/api/cameras/managed")).json();
    } catch (err) {
      this.message.textContent = err.message;
      return;
    }
    this.managed.replaceChildren(...listing.managed.map((m) => {
      const edit = el("button", { type: "button", className: "camera-edit" }, "Edit");
      edit.addEventListener("click", () => this.editor.replaceChildren(this.#form(m.camera)));
      const remove = el("button", { type: "button", className: "camera-remove secondary" }, "Remove");
      remove.addEventListener("click", () => this.#remove(m.id));
      const problems = m.errors.length ? el("div", { className: "camera-errors" }, m.errors.join("; ")) : "";
      return el("tr", { "data-camera-id": m.id },
        el("td", {}, m.id, problems), el("td", {}, m.camera.name || ""), el("td", {}, m.camera.vendor || ""),
        el("td", {}, m.camera.area || ""), el("td", {}, m.updated_by), el("td", {}, edit, " ", remove));
    }));
    this.fileNote.textContent = `Change these in ${listing.configured_file}, then run “citygate reload”.`;
    this.configured.replaceChildren(...listing.configured.map((c) => el("tr", { "data-camera-id": c.id },
      el("td", {}, c.id), el("td", {}, c.name), el("td", {}, c.vendor), el("td", {}, c.area), el("td", {}, c.record ? "yes" : "no"))));
  }

  #form(camera = null) {
    const editing = camera !== null;
    const field = (label, name, value, attrs = {}) =>
      el("label", {}, `${label} `, el("input", { name, value: value ?? "", ...attrs }));
    const { id, name, vendor, area, tags, options, record, ...rest } = camera || { vendor: "generic_rtsp", record: true };
    const form = el("form", { id: "camera-form", className: "camera-form" },
      el("h3", {}, editing ? `Change ${id}` : "Add a camera"),
      field("Id", "id", id, { required: true, readonly: editing, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}" }),
      field("Name", "name", name),
      field("Vendor", "vendor", vendor, { required: true }),
      field("Area", "area", area, { required: true }),
      field("Tags (comma-separated)", "tags", (tags || []).join(", ")),
      el("label", {}, el("input", { type: "checkbox", name: "record", checked: record !== false }), " Recorded"),
      el("label", {}, "Options (JSON: the vendor's keys, e.g. url, sub-url, username, password) ",
        el("textarea", { name: "options", rows: "5", cols: "60" }, JSON.stringify(options || {}, null, 2))),
      el("label", {}, "Other keys of the [[camera]] table (JSON) ",
        el("textarea", { name: "rest", rows: "3", cols: "60" }, JSON.stringify(rest, null, 2))),
      el("button", { type: "submit" }, editing ? "Save" : "Add"),
      ...(editing ? [Object.assign(el("button", { type: "button", className: "secondary" }, "Cancel"), {
        onclick: () => this.editor.replaceChildren(this.#form()),
      })] : []),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#save(form, editing);
    });
    return form;
  }

  async #save(form, editing) {
    const data = new FormData(form);
    let table;
    try {
      const options = JSON.parse(data.get("options") || "{}");
      const rest = JSON.parse(data.get("rest") || "{}");
      const tags = String(data.get("tags") || "").split(",").map((t) => t.trim()).filter(Boolean);
      table = { ...rest, id: data.get("id"), vendor: data.get("vendor"), area: data.get("area"), tags, record: data.get("record") === "on", options };
      if (data.get("name")) table.name = data.get("name");
    } catch (err) {
      this.message.textContent = `not valid JSON: ${err.message}`;
      return;
    }
    try {
      if (editing) await request(`/api/cameras/managed/${encodeURIComponent(table.id)}`, json("PUT", table));
      else await request("/api/cameras/managed", json("POST", table));
      this.message.textContent = editing ? `Saved ${table.id}.` : `Added ${table.id}.`;
      this.editor.replaceChildren(this.#form());
    } catch (err) {
      this.message.textContent = err.message;
    }
    await this.#refresh();
  }

  async #remove(id) {
    if (!window.confirm(`Remove camera ${id}? Its recordings stay.`)) return;
    try {
      await request(`/api/cameras/managed/${encodeURIComponent(id)}`, { method: "DELETE" });
      this.message.textContent = `Removed ${id}.`;
    } catch (err) {
      this.message.textContent = err.message;
    }
    await this.#refresh();
  }
}
