// Number plates: search the reads of the cameras in one's areas (plates.search) and keep the
// watchlist (plates.watch). A search needs a purpose (the gateway audits it with every
// search and crop); "*" stands for any characters, "?" for one, and the gateway tolerates
// the usual OCR confusions (0/O, 1/I, 8/B...). Each result shows its crop and "Play from
// here", which opens playback at the moment of the read.

import { request } from "./api.js";
import { can } from "./session.js";

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "className") node.className = value;
    else node.setAttribute(key, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function field(label, input) {
  const l = el("label", {}, `${label} `);
  l.append(input);
  return l;
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "";
}

function epochOf(value) {
  return value ? String(new Date(value).getTime() / 1000) : "";
}

export async function searchPlates({ q, purpose, camera = "", from = "", to = "" }) {
  const params = new URLSearchParams({ q, purpose });
  if (camera) params.set("camera", camera);
  if (from) params.set("from", from);
  if (to) params.set("to", to);
  return (await request(`/api/plates?${params}`)).json();
}

export async function watchlist() {
  return (await request("/api/plates/watchlist")).json();
}

function json(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

export class PlatesPage {
  #crops = []; // object URLs of the crops shown, revoked when results change

  constructor(root, { user }) {
    this.root = root;
    this.user = user;
    root.setAttribute("aria-labelledby", "plates-heading");
    root.append(el("h2", { id: "plates-heading" }, "Number plates"));
    if (can(user, "plates.search")) root.append(this.#searchSection());
    if (can(user, "plates.watch")) root.append(this.#watchSection());
  }

  // -- search ---------------------------------------------------------------------------
  #searchSection() {
    const section = el("section", { className: "plates-search", "aria-label": "Plate search" });
    const form = (this.form = el("form", { className: "plates-form" }));
    form.append(
      field("Plate", el("input", { name: "q", required: "", maxlength: "64", placeholder: "AA1234BB, 29B1*, KR?AB23" })),
      field("Camera", el("input", { name: "camera", maxlength: "64", placeholder: "all of mine" })),
      field("From", el("input", { name: "from", type: "datetime-local" })),
      field("To", el("input", { name: "to", type: "datetime-local" })),
      field("Purpose", el("input", { name: "purpose", required: "", maxlength: "500", placeholder: "case number, request" })),
      el("button", { type: "submit", className: "primary" }, "Search"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.search();
    });
    this.message = el("p", { className: "plates-message", role: "status" });
    this.results = el("ul", { className: "plates-results" });
    section.append(form, this.message, this.results);
    return section;
  }

  async search() {
    const f = this.form.elements;
    this.message.textContent = "Searching…";
    try {
      const answer = await searchPlates({
        q: f.q.value.trim(), purpose: f.purpose.value.trim(), camera: f.camera.value.trim(),
        from: epochOf(f.from.value), to: epochOf(f.to.value),
      });
      this.#show(answer, f.purpose.value.trim());
    } catch (err) {
      this.message.textContent = err.message;
      this.#show({ reads: [] });
    }
  }

  #show(answer, purpose = "") {
    this.#crops.forEach((url) => URL.revokeObjectURL(url));
    this.#crops = [];
    const reads = answer.reads || [];
    if (answer.query !== undefined) {
      const count = reads.length === 1 ? "1 read" : `${reads.length || "No"} reads`;
      this.message.textContent = `${count} of ${answer.query}`;
    }
    this.results.replaceChildren(...reads.map((r) => this.#item(r, purpose)));
  }

  #item(read, purpose) {
    const li = el("li", { className: "plate-read", "data-read-id": String(read.id) });
    const img = el("img", { className: "plate-crop", alt: `Plate ${read.display}` });
    if (read.links.crop) this.#loadCrop(img, read.links.crop, purpose);
    else img.hidden = true;
    const facts = el("div", { className: "plate-facts" });
    facts.append(
      el("strong", { className: "plate-text" }, read.display),
      el("span", {}, ` ${read.country || ""} · camera ${read.camera} · ${when(read.at)} · ${Math.round(read.confidence * 100)} %`),
    );
    const play = el("a", { href: read.links.playback, className: "plate-play" }, "Play from here");
    facts.append(el("br"), play);
    li.append(img, facts);
    return li;
  }

  async #loadCrop(img, url, purpose) {
    try {
      const params = purpose ? `?${new URLSearchParams({ purpose })}` : "";
      const blob = await (await request(`${url}${params}`)).blob();
      const objectUrl = URL.createObjectURL(blob);
      this.#crops.push(objectUrl);
      img.src = objectUrl;
    } catch {
      img.hidden = true;
    }
  }

  // -- watchlist -----------------------------------------------------------------------
  #watchSection() {
    const section = el("section", { className: "plates-watch", "aria-labelledby": "plates-watch-heading" });
    const form = (this.watchForm = el("form", { className: "plates-form plates-watch-form" }));
    form.append(
      field("Plate or pattern", el("input", { name: "pattern", required: "", maxlength: "64" })),
      field("Label", el("input", { name: "label", maxlength: "200" })),
      field("Until", el("input", { name: "expires", type: "datetime-local" })),
      field("Purpose", el("input", { name: "purpose", required: "", maxlength: "500" })),
      el("button", { type: "submit" }, "Watch"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.addWatch();
    });
    this.watchMessage = el("p", { className: "plates-message", role: "status" });
    this.watchTable = el("table", { className: "plates-watch-table" });
    section.append(el("h3", { id: "plates-watch-heading" }, "Watchlist"), form, this.watchMessage, this.watchTable);
    return section;
  }

  async addWatch() {
    const f = this.watchForm.elements;
    const body = { pattern: f.pattern.value.trim(), label: f.label.value.trim(), purpose: f.purpose.value.trim() };
    if (f.expires.value) body.expires_at = Number(epochOf(f.expires.value));
    try {
      await request("/api/plates/watchlist", json("POST", body));
      this.watchForm.reset();
      this.watchMessage.textContent = `Watching ${body.pattern}`;
      await this.loadWatchlist();
    } catch (err) {
      this.watchMessage.textContent = err.message;
    }
  }

  async removeWatch(entry, purpose) {
    try {
      await request(`/api/plates/watchlist/${entry.id}?${new URLSearchParams({ purpose })}`, { method: "DELETE" });
      this.watchMessage.textContent = `No longer watching ${entry.pattern}`;
      await this.loadWatchlist();
    } catch (err) {
      this.watchMessage.textContent = err.message;
    }
  }

  async loadWatchlist() {
    const entries = await watchlist();
    const head = el("tr");
    for (const h of ["Pattern", "Label", "Purpose", "Until", "By", ""]) head.append(el("th", {}, h));
    const rows = entries.map((e) => {
      const tr = el("tr", { "data-watch-id": String(e.id) });
      for (const v of [e.pattern, e.label, e.purpose, e.expires_at ? when(e.expires_at) : "", e.created_by]) tr.append(el("td", {}, v));
      const remove = el("form", { className: "plates-remove" });
      remove.append(
        el("input", { name: "purpose", required: "", maxlength: "500", placeholder: "why remove", "aria-label": "Purpose" }),
        el("button", { type: "submit", className: "secondary" }, "Remove"),
      );
      remove.addEventListener("submit", (event) => {
        event.preventDefault();
        this.removeWatch(e, remove.elements.purpose.value.trim());
      });
      const td = el("td");
      td.append(remove);
      tr.append(td);
      if (!e.active) tr.classList.add("expired");
      return tr;
    });
    this.watchTable.replaceChildren(head, ...rows);
  }

  show() {
    this.root.hidden = false;
    if (this.watchTable) this.loadWatchlist().catch((err) => (this.watchMessage.textContent = err.message));
  }

  hide() {
    this.root.hidden = true;
  }

  destroy() {
    this.#crops.forEach((url) => URL.revokeObjectURL(url));
    this.#crops = [];
  }
}
