// Incidents: for users with incident.open. A tile's "!" button (and playback's "Incident"
// button) sends a `citygate:incident` event with the camera and the moment; this opens a
// dialog to pick the category, write a note and add further cameras. Once opened, the
// dialog shows the incident: its evidence hold, bookmarks (a moment and a note, added while
// it is open), "Close", and links to its recordings and to a pre-filled export request.
// IncidentsPage is the register (filters, CSV) for incident.open and incident.manage.

import { listCameras, request } from "./api.js";

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "className") node.className = value;
    else node.setAttribute(key, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function json(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "";
}

export async function incidentCategories() {
  return (await request("/api/incidents/categories")).json();
}

export async function openIncident(body) {
  return (await request("/api/incidents", json("POST", body))).json();
}

export async function addBookmark(id, body) {
  return (await request(`/api/incidents/${id}/bookmarks`, json("POST", body))).json();
}

export async function closeIncident(id, note = "") {
  return (await request(`/api/incidents/${id}/close`, json("POST", { note }))).json();
}

export async function exportDraft(id) {
  return (await request(`/api/incidents/${id}/export-request`)).json();
}

export class IncidentDialog {
  #dialog;
  #form;
  #message;
  #detail;
  #incident = null;
  #onRequest = (event) => this.open(event.detail);

  constructor({ root = document } = {}) {
    this.root = root;
    this.#dialog = this.#build();
    document.body.append(this.#dialog);
    document.body.dataset.incidents = "on"; // shows the tiles' "!" buttons
    root.addEventListener("citygate:incident", this.#onRequest);
  }

  destroy() {
    this.root.removeEventListener("citygate:incident", this.#onRequest);
    delete document.body.dataset.incidents;
    if (this.#dialog.open) this.#dialog.close();
    this.#dialog.remove();
  }

  get incident() {
    return this.#incident;
  }

  #build() {
    const dialog = el("dialog", { id: "incident-dialog", className: "incident-dialog", "aria-labelledby": "incident-title" });
    const form = (this.#form = el("form", { method: "dialog", className: "incident-form" }));
    form.append(el("h2", { id: "incident-title" }, "Open an incident"));
    const camera = el("p", { className: "incident-camera" });
    const category = el("select", { name: "category", required: "" });
    const note = el("textarea", { name: "note", rows: "3", maxlength: "2000" });
    const more = el("fieldset", { className: "incident-more" });
    more.append(el("legend", {}, "Further cameras"));
    this.#message = el("p", { className: "incident-message", role: "alert" });
    const actions = el("div", { className: "incident-actions" });
    const cancel = el("button", { type: "button", className: "secondary" }, "Cancel");
    cancel.addEventListener("click", () => dialog.close());
    actions.append(el("button", { type: "submit", className: "primary" }, "Open incident"), cancel);
    const catLabel = el("label", {}, "Category ");
    catLabel.append(category);
    const noteLabel = el("label", {}, "Note ");
    noteLabel.append(note);
    form.append(camera, catLabel, noteLabel, more, this.#message, actions);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.#detail = el("section", { className: "incident-detail", hidden: "" });
    dialog.append(form, this.#detail);
    return dialog;
  }

  /** Open the form for `camera` at `at` (epoch seconds). */
  async open({ camera, at }) {
    this.#incident = null;
    this.#form.hidden = false;
    this.#detail.hidden = true;
    this.#form.dataset.camera = camera;
    this.#form.dataset.at = String(at);
    this.#message.textContent = "";
    this.#form.querySelector(".incident-camera").textContent = `Camera ${camera}, ${when(at)}`;
    this.#form.elements.note.value = "";
    if (!this.#dialog.open) this.#dialog.showModal();
    try {
      const [categories, cameras] = await Promise.all([incidentCategories(), listCameras()]);
      const select = this.#form.elements.category;
      select.replaceChildren(...categories.map((c) => el("option", { value: c.id }, c.title)));
      const more = this.#form.querySelector(".incident-more");
      more.replaceChildren(more.firstChild);
      for (const c of cameras.filter((c) => c.id !== camera)) {
        const label = el("label", {});
        label.append(el("input", { type: "checkbox", name: "camera", value: c.id }), ` ${c.name || c.id}`);
        more.append(label);
      }
      this.#form.dataset.ready = "true";
    } catch (err) {
      this.#message.textContent = err.message;
    }
  }

  async #submit() {
    const form = this.#form;
    const cameras = [...form.querySelectorAll('input[name="camera"]:checked')].map((i) => i.value);
    try {
      const incident = await openIncident({
        camera: form.dataset.camera, at: Number(form.dataset.at), category: form.elements.category.value,
        note: form.elements.note.value, cameras,
      });
      this.#show(incident);
    } catch (err) {
      this.#message.textContent = err.message;
    }
  }

  #show(incident) {
    this.#incident = incident;
    this.#form.hidden = true;
    const d = this.#detail;
    d.hidden = false;
    d.dataset.incidentId = String(incident.id);
    d.dataset.state = incident.state;
    const title = el("h2", {}, `Incident ${incident.id}: ${incident.category_title}`);
    const facts = el("p", { className: "incident-facts" },
      `${incident.cameras.join(", ")} — ${incident.state.replace("_", " ")}, owner ${incident.owner}. ` +
      `Recordings held ${when(incident.hold_from)} – ${when(incident.hold_to)}.`);
    const marks = el("ul", { className: "incident-bookmarks" });
    for (const b of incident.bookmarks) marks.append(el("li", {}, `${when(b.at)} ${b.note} (${b.by})`));
    const message = el("p", { className: "incident-message", role: "alert" });
    const add = el("form", { className: "incident-bookmark" });
    const note = el("input", { name: "note", placeholder: "Bookmark note", maxlength: "2000" });
    add.append(note, el("button", { type: "submit" }, "Bookmark now"));
    add.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        this.#show(await addBookmark(incident.id, { note: note.value, at: Date.now() / 1000 }));
      } catch (err) {
        message.textContent = err.message;
      }
    });
    const links = el("p", { className: "incident-links" });
    links.append(
      el("a", { href: incident.links.playback }, "Recordings"), " · ",
      el("a", { href: `#/exports?incident=${incident.id}`, className: "incident-export" }, "Request an export of this incident"),
    );
    const actions = el("div", { className: "incident-actions" });
    const closeBtn = el("button", { type: "button", className: "incident-close" }, "Close incident");
    closeBtn.addEventListener("click", async () => {
      try {
        this.#show(await closeIncident(incident.id));
      } catch (err) {
        message.textContent = err.message;
      }
    });
    const done = el("button", { type: "button", className: "secondary" }, "Done");
    done.addEventListener("click", () => this.#dialog.close());
    if (incident.state !== "closed") actions.append(closeBtn);
    actions.append(done);
    d.replaceChildren(title, facts, marks, ...(incident.state !== "closed" ? [add] : []), message, links, actions);
  }
}

/** The register: filters (state, category, area, from-to), a table and the CSV link. */
export class IncidentsPage {
  constructor(root) {
    this.root = root;
    root.setAttribute("aria-labelledby", "incidents-heading");
    const form = (this.form = el("form", { className: "incidents-filters" }));
    for (const [name, label, type] of [["state", "State", "text"], ["category", "Category", "text"], ["area", "Area", "text"],
      ["from", "From", "datetime-local"], ["to", "To", "datetime-local"]]) {
      const l = el("label", {}, `${label} `);
      l.append(el("input", { name, type }));
      form.append(l);
    }
    form.append(el("button", { type: "submit" }, "Show"));
    this.csv = el("a", { className: "incidents-csv", download: "incidents.csv" }, "CSV");
    this.table = el("table", { className: "incidents-table" });
    root.append(el("h2", { id: "incidents-heading" }, "Incidents"), form, this.csv, this.table);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.load();
    });
  }

  #query() {
    const q = new URLSearchParams();
    for (const name of ["state", "category", "area"]) {
      const v = this.form.elements[name].value.trim();
      if (v) q.set(name, v);
    }
    for (const name of ["from", "to"]) {
      const v = this.form.elements[name].value;
      if (v) q.set(name, String(new Date(v).getTime() / 1000));
    }
    return q.toString();
  }

  async load() {
    const q = this.#query();
    this.csv.href = `/api/incidents/register.csv${q ? `?${q}` : ""}`;
    const items = await (await request(`/api/incidents${q ? `?${q}` : ""}`)).json();
    const head = el("tr");
    for (const h of ["#", "Opened", "Category", "Cameras", "Area", "State", "Owner", "Note"]) head.append(el("th", {}, h));
    const rows = items.map((i) => {
      const tr = el("tr", { "data-incident-id": String(i.id) });
      for (const v of [i.id, when(i.opened_at), i.category_title, i.cameras.join(", "), i.area, i.state, i.owner, i.note]) {
        tr.append(el("td", {}, String(v)));
      }
      return tr;
    });
    this.table.replaceChildren(head, ...rows);
  }

  show() {
    this.root.hidden = false;
    this.load().catch(() => {});
  }

  hide() {
    this.root.hidden = true;
  }
}
