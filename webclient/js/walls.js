// Saved walls (GET/POST/PUT/DELETE /api/walls): the sidebar panel of the live view.
//
// - Save the wall on screen under a name (grid size, camera per tile, main or sub stream),
//   shared with roles; open one of one's own or one shared with one's role.
// - The wall last opened comes back after signing out and in (its id is remembered per user;
//   the wall itself is read from the gateway, so it is the owner's latest version). Changing
//   the wall on screen afterwards makes the screen's own layout the one remembered instead.
// - "Pop out" opens the wall in a window of its own (a second monitor): the same app with
//   ?wall=<id> (or ?walls=<id>,<id>&cycle=<s> while cycling), which shows only the wall and
//   keeps it across reloads without touching the main window's remembered layout.
// - Cycling: every N seconds the next of the chosen walls (an unattended video wall).
// - Alt+PageDown / Alt+PageUp: the next / previous wall (of the cycle's walls when chosen,
//   else of all walls in the list).

import { request } from "./api.js";

const LAST_KEY = "citygate.wall.v1";
const CYCLE_KEY = "citygate.cycle.v1";
const MIN_CYCLE_SECONDS = 2;
const DEFAULT_CYCLE_SECONDS = 20;
export const NEXT_KEY = "Alt+PageDown";
export const PREVIOUS_KEY = "Alt+PageUp";

function json(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

export async function listWalls() {
  return (await request("/api/walls")).json();
}

export async function getWall(id) {
  return (await request(`/api/walls/${encodeURIComponent(id)}`)).json();
}

async function saveWall(id, body) {
  const path = id === null ? "/api/walls" : `/api/walls/${encodeURIComponent(id)}`;
  return (await request(path, json(id === null ? "POST" : "PUT", body))).json();
}

async function deleteWall(id) {
  await request(`/api/walls/${encodeURIComponent(id)}`, { method: "DELETE" });
}

/** The pop-out window's parameters from the address: {ids, seconds} or null (the main window). */
export function popoutParams(search = window.location.search) {
  const params = new URLSearchParams(search);
  const ids = (params.get("walls") || params.get("wall") || "")
    .split(",")
    .map((v) => Number(v))
    .filter((v) => Number.isInteger(v) && v > 0);
  if (!ids.length) return null;
  const seconds = Number(params.get("cycle"));
  return { ids, seconds: ids.length > 1 && seconds >= MIN_CYCLE_SECONDS ? seconds : 0 };
}

/** The address of a pop-out window showing `ids` (cycling every `seconds` when several). */
export function popoutUrl(ids, seconds = 0) {
  const query = ids.length > 1 ? `walls=${ids.join(",")}&cycle=${seconds}` : `wall=${ids[0]}`;
  return `${window.location.pathname}?${query}#/live`;
}

/** Storage that forgets: a pop-out window must not change what the main window remembers. */
export function memoryStorage() {
  const items = new Map();
  return { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, String(v)) };
}

function el(tag, className, text = "", attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function sameLayout(a, b) {
  if (!a || !b || a.columns !== b.columns || a.rows !== b.rows) return false;
  const tiles = (w) => JSON.stringify(Array.from({ length: w.columns * w.rows }, (_, i) => w.tiles[i] || null));
  return tiles(a) === tiles(b);
}

export class WallsPanel {
  #root;
  #user;
  #storage;
  #popout;
  #grid = null;
  #walls = [];
  #current = null; // {id, name, layout} of the wall last opened here
  #cycle = { ids: [], seconds: DEFAULT_CYCLE_SECONDS, running: false };
  #timer = null;
  #restored = false;
  #opening = 0;
  #applying = false;
  #parts = {};
  #onKey = (event) => this.#key(event);
  #onGridChange = () => this.#gridChanged();

  /** `popout`: {ids, seconds} when this window is a pop-out (see popoutParams). */
  constructor(root, { user, storage, popout = null }) {
    this.#root = root;
    this.#user = user;
    this.#storage = storage;
    this.#popout = popout;
    if (popout) {
      this.#cycle = { ids: popout.ids, seconds: popout.seconds || DEFAULT_CYCLE_SECONDS, running: popout.seconds > 0 };
    } else {
      try {
        const saved = JSON.parse(storage.getItem(CYCLE_KEY) || "null");
        if (saved && Array.isArray(saved.ids)) {
          this.#cycle = {
            ids: saved.ids.filter(Number.isInteger),
            seconds: Math.max(MIN_CYCLE_SECONDS, Number(saved.seconds) || DEFAULT_CYCLE_SECONDS),
            running: !!saved.running,
          };
        }
      } catch {
        // nothing remembered
      }
    }
  }

  /** The live view is shown with `grid`: build the panel; the first time, bring back the last wall. */
  attach(grid, { restore = true } = {}) {
    this.#grid = grid;
    grid.addEventListener("change", this.#onGridChange);
    this.#build();
    document.addEventListener("keydown", this.#onKey);
    this.#refreshList().then(() => {
      if (this.#grid !== grid) return;
      const first = !this.#restored;
      this.#restored = true;
      if (this.#cycle.running && this.#cycle.ids.length > 1) this.#startCycle();
      else if (first && this.#popout) this.open(this.#popout.ids[0], { remember: false });
      else if (first && restore) {
        const last = Number(this.#storage.getItem(LAST_KEY));
        if (Number.isInteger(last) && last > 0) this.open(last, { restoring: true });
      }
    });
  }

  /** The live view is hidden: stop cycling and listening (the choices are kept). */
  detach() {
    clearTimeout(this.#timer);
    this.#timer = null;
    document.removeEventListener("keydown", this.#onKey);
    this.#grid?.removeEventListener("change", this.#onGridChange);
    this.#grid = null;
    this.#root.replaceChildren();
  }

  get current() {
    return this.#current;
  }

  get walls() {
    return this.#walls;
  }

  // -- the panel -------------------------------------------------------------------------

  #build() {
    const root = this.#root;
    root.replaceChildren();
    const head = el("h2", "walls-heading", "Walls", { id: "walls-heading" });
    const status = el("p", "walls-status", "", { role: "status", "aria-live": "polite" });
    const pick = el("select", "walls-select", "", { "aria-label": "Saved walls", name: "wall" });
    pick.addEventListener("change", () => pick.value && this.open(Number(pick.value)));
    const nav = el("div", "walls-nav");
    const prev = el("button", "walls-prev", "◀", {
      type: "button",
      title: `Previous wall (${PREVIOUS_KEY})`,
      "aria-label": "Previous wall",
      "aria-keyshortcuts": PREVIOUS_KEY,
    });
    const next = el("button", "walls-next", "▶", {
      type: "button",
      title: `Next wall (${NEXT_KEY})`,
      "aria-label": "Next wall",
      "aria-keyshortcuts": NEXT_KEY,
    });
    prev.addEventListener("click", () => this.step(-1));
    next.addEventListener("click", () => this.step(1));
    const popout = el("button", "walls-popout", "Pop out", { type: "button", title: "Open this wall in a window of its own (a second monitor)" });
    popout.addEventListener("click", () => this.#popOut());
    const remove = el("button", "walls-delete", "Delete", { type: "button", title: "Delete this wall (yours only)" });
    remove.addEventListener("click", () => this.#delete(remove));
    nav.append(prev, pick, next);
    const actions = el("div", "walls-actions");
    actions.append(popout, remove);

    // save: a name and the roles to share with
    const form = el("form", "walls-save");
    const name = el("input", "", "", { name: "name", required: "", maxlength: "100", placeholder: "Wall name", "aria-label": "Wall name" });
    const roles = el("input", "", "", {
      name: "shared_roles",
      placeholder: "Share with roles (e.g. operator)",
      "aria-label": "Share with roles, separated by commas",
      list: "walls-roles",
    });
    const known = el("datalist", "", "", { id: "walls-roles" });
    for (const role of this.#user.roles?.map((r) => r.name) || [this.#user.role]) known.append(el("option", "", "", { value: role }));
    const save = el("button", "walls-save-button", "Save wall", { type: "submit" });
    form.append(name, roles, known, save);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#save(name.value.trim(), roles.value);
    });

    // cycling
    const cycle = el("details", "walls-cycle");
    const summary = el("summary", "", "Cycle walls");
    const choices = el("fieldset", "walls-cycle-choices");
    choices.append(el("legend", "", "Walls to cycle through"));
    const seconds = el("input", "", "", {
      type: "number",
      name: "seconds",
      min: String(MIN_CYCLE_SECONDS),
      max: "3600",
      value: String(this.#cycle.seconds),
      "aria-label": "Seconds per wall",
    });
    const secondsLabel = el("label", "walls-cycle-seconds", "Every ");
    secondsLabel.append(seconds, document.createTextNode(" s"));
    const toggle = el("button", "walls-cycle-toggle", "", { type: "button" });
    toggle.addEventListener("click", () => {
      if (this.#cycle.running) this.#stopCycle();
      else {
        this.#cycle.seconds = Math.max(MIN_CYCLE_SECONDS, Number(seconds.value) || DEFAULT_CYCLE_SECONDS);
        this.#cycle.ids = [...choices.querySelectorAll("input:checked")].map((c) => Number(c.value));
        if (this.#cycle.ids.length < 2) {
          this.#say("Choose at least two walls to cycle through.");
          return;
        }
        this.#startCycle();
      }
    });
    cycle.append(summary, choices, secondsLabel, toggle);
    const hint = el("p", "walls-hint", `${NEXT_KEY} / ${PREVIOUS_KEY}: next / previous wall.`);
    root.append(head, nav, status, actions, form, cycle, hint);
    this.#parts = { status, pick, prev, next, popout, remove, name, roles, choices, toggle, cycle, save };
    this.#renderList();
  }

  #say(text) {
    if (this.#parts.status) this.#parts.status.textContent = text;
    // a pop-out window shows no sidebar: its notices go to the top bar
    const notice = this.#popout ? document.getElementById("notice-info") : null;
    if (notice) {
      notice.textContent = text;
      notice.hidden = !text;
    }
  }

  async #refreshList() {
    try {
      this.#walls = await listWalls();
    } catch (err) {
      if (err.status !== 401) this.#say(`Walls unavailable: ${err.message}`);
      return;
    }
    this.#renderList();
  }

  #renderList() {
    const { pick, choices, toggle, remove, popout } = this.#parts;
    if (!pick) return;
    const placeholder = el("option", "", this.#walls.length ? "Open a wall…" : "No saved walls", { value: "" });
    pick.replaceChildren(placeholder);
    const chosen = new Set(this.#cycle.ids);
    choices.querySelectorAll("label").forEach((l) => l.remove());
    for (const wall of this.#walls) {
      const label = wall.mine ? wall.name : `${wall.name} (${wall.owner})`;
      pick.append(el("option", "", label, { value: String(wall.id) }));
      const box = el("input", "", "", { type: "checkbox", value: String(wall.id), name: "cycle" });
      box.checked = chosen.has(wall.id);
      const item = el("label", "walls-cycle-choice");
      item.append(box, document.createTextNode(` ${label}`));
      choices.append(item);
    }
    const current = this.#current;
    pick.value = current && this.#walls.some((w) => w.id === current.id) ? String(current.id) : "";
    toggle.textContent = this.#cycle.running ? "Stop cycling" : "Start cycling";
    toggle.setAttribute("aria-pressed", String(this.#cycle.running));
    this.#root.dataset.cycling = String(this.#cycle.running);
    remove.disabled = !(current && this.#walls.find((w) => w.id === current.id)?.mine);
    popout.disabled = !current && !this.#cycle.running;
    if (current) {
      this.#root.dataset.wall = String(current.id);
      const mine = this.#walls.find((w) => w.id === current.id)?.mine;
      if (mine && !this.#parts.name.value) this.#parts.name.value = current.name;
    } else delete this.#root.dataset.wall;
  }

  // -- opening, saving ---------------------------------------------------------------------

  /** Open wall `id` on the grid. `remember`: it comes back after the next sign-in. */
  async open(id, { remember = true, restoring = false } = {}) {
    const ticket = ++this.#opening;
    let wall;
    try {
      wall = await getWall(id);
    } catch (err) {
      if (ticket !== this.#opening) return;
      if (restoring && (err.status === 403 || err.status === 404)) this.#storage.setItem(LAST_KEY, "");
      this.#say(`Wall ${id}: ${err.message}`);
      return;
    }
    if (ticket !== this.#opening || !this.#grid) return;
    this.#applying = true;
    let dropped;
    try {
      dropped = this.#grid.applyWall(wall);
    } finally {
      this.#applying = false;
    }
    this.#current = { id: wall.id, name: wall.name, layout: this.#grid.wall() };
    if (remember && !this.#popout) this.#storage.setItem(LAST_KEY, String(wall.id));
    const notes = [];
    if (wall.hidden) notes.push(`${wall.hidden} camera${wall.hidden > 1 ? "s" : ""} not shared with you`);
    if (dropped) notes.push(`${dropped} more than this screen shows`);
    this.#say(`Wall: ${wall.name}${wall.mine ? "" : ` (${wall.owner})`}${notes.length ? ` — ${notes.join("; ")}` : ""}`);
    document.title = `${wall.name} · Citygate`;
    this.#renderList();
  }

  /** Next (+1) or previous (-1) wall: of the cycle's walls when chosen, else of all. */
  step(delta) {
    const ids = this.#cycle.ids.length > 1 ? this.#cycle.ids : this.#walls.map((w) => w.id);
    if (!ids.length) {
      this.#say("No saved walls yet.");
      return;
    }
    const at = this.#current ? ids.indexOf(this.#current.id) : -1;
    const index = at < 0 ? (delta > 0 ? 0 : ids.length - 1) : (at + delta + ids.length) % ids.length;
    this.open(ids[index], { remember: !this.#cycle.running });
    if (this.#cycle.running) this.#schedule(); // a full period on the wall chosen by hand
  }

  async #save(name, rolesText) {
    if (!name || !this.#grid) return;
    const shared = rolesText.split(/[\s,]+/).map((r) => r.trim()).filter(Boolean);
    const layout = this.#grid.wall();
    // the same name as a wall of one's own: change that one
    const existing = this.#walls.find((w) => w.mine && w.name === name);
    try {
      const saved = await saveWall(existing ? existing.id : null, { name, ...layout, shared_roles: shared });
      this.#current = { id: saved.id, name: saved.name, layout };
      if (!this.#popout) this.#storage.setItem(LAST_KEY, String(saved.id));
      this.#say(`Saved wall: ${saved.name}${shared.length ? ` (shared with ${shared.join(", ")})` : ""}`);
    } catch (err) {
      this.#say(`Not saved: ${err.message}`);
      return;
    }
    await this.#refreshList();
  }

  async #delete(button) {
    const current = this.#current;
    if (!current) return;
    if (button.dataset.armed !== "1") {
      button.dataset.armed = "1";
      button.textContent = "Delete? Click again";
      setTimeout(() => {
        button.dataset.armed = "";
        button.textContent = "Delete";
      }, 4000);
      return;
    }
    try {
      await deleteWall(current.id);
      this.#say(`Deleted wall: ${current.name}`);
      this.#current = null;
      this.#storage.setItem(LAST_KEY, "");
      this.#parts.name.value = "";
    } catch (err) {
      this.#say(`Not deleted: ${err.message}`);
    }
    await this.#refreshList();
  }

  #popOut() {
    const ids = this.#cycle.running ? this.#cycle.ids : this.#current ? [this.#current.id] : [];
    if (!ids.length) return;
    const url = popoutUrl(ids, this.#cycle.seconds);
    // noopener: the pop-out signs in through the shared session cookie, not through us
    window.open(url, `citygate-wall-${ids.join("-")}`, "popup,width=1280,height=720,noopener");
  }

  /** The wall on screen changed: if it no longer is the wall opened, say so and remember the screen instead. */
  #gridChanged() {
    const current = this.#current;
    if (this.#applying || !current || !this.#grid || sameLayout(current.layout, this.#grid.wall())) return;
    this.#current = null;
    if (!this.#popout) this.#storage.setItem(LAST_KEY, "");
    this.#say(`Changed since opening the wall ${current.name}; save it to keep it.`);
    this.#renderList();
  }

  // -- cycling, keys -----------------------------------------------------------------------

  #rememberCycle() {
    if (this.#popout) return;
    try {
      this.#storage.setItem(CYCLE_KEY, JSON.stringify(this.#cycle));
    } catch {
      // not remembered
    }
  }

  #startCycle() {
    this.#cycle.running = true;
    this.#rememberCycle();
    this.#renderList();
    const first = this.#current && this.#cycle.ids.includes(this.#current.id);
    if (!first) this.open(this.#cycle.ids[0], { remember: false });
    this.#schedule();
    this.#say(`Cycling ${this.#cycle.ids.length} walls every ${this.#cycle.seconds} s`);
  }

  #stopCycle() {
    this.#cycle.running = false;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#rememberCycle();
    this.#renderList();
    this.#say("Cycling stopped");
  }

  #schedule() {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      if (!this.#cycle.running || !this.#grid) return;
      this.step(1);
    }, this.#cycle.seconds * 1000);
  }

  #key(event) {
    if (!event.altKey || event.ctrlKey || event.metaKey || document.body.dataset.view !== "live") return;
    if (event.key === "PageDown") this.step(1);
    else if (event.key === "PageUp") this.step(-1);
    else return;
    event.preventDefault();
  }
}
