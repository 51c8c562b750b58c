// The PTZ pad: an overlay on the live tile that is selected or maximised, for users with
// `ptz.control`, when the tile's camera reports PTZ capabilities.
//
// PtzPad   one tile's controls: drag joystick, zoom buttons (hold), Home, a preset menu
//          (saving a preset needs `cameras.manage`), and who holds the camera's control
//          lock, kept current from the events channel (ptz.lock, ptz.taken_over, ptz.lapsed).
// PtzPads  follows the grid's active tile, keeps one PtzPad on it, and steers with the
//          keyboard: arrows pan and tilt, + and − zoom, Home goes home.

import { can } from "./session.js";
import { PtzApi } from "./ptz-api.js";
import { PtzDrive } from "./ptz-drive.js";

const DEAD_ZONE = 0.12; // of the joystick's radius
const KEY_SPEED = 0.5;
const ZOOM_SPEED = 0.6;
const NOTICE_MS = 12000;
/** Below this tile size the pad shows only who holds control (maximise to steer; keys work).
 *  Wider than twice the full pad, so the full pad never covers the tile's centre, where
 *  people double-click to maximise. */
const COMPACT = { width: 400, height: 250 };
const KEYS = {
  ArrowLeft: { pan: -KEY_SPEED },
  ArrowRight: { pan: KEY_SPEED },
  ArrowUp: { tilt: KEY_SPEED },
  ArrowDown: { tilt: -KEY_SPEED },
  "+": { zoom: ZOOM_SPEED },
  "=": { zoom: ZOOM_SPEED },
  "-": { zoom: -ZOOM_SPEED },
  _: { zoom: -ZOOM_SPEED },
};

function el(tag, className, attrs = {}, text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

/** "duty-officer" -> "Duty officer": the gateway names other users' roles by id only. */
function roleWords(role) {
  if (!role) return "";
  const words = role.replace(/[-_]+/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** True when the camera can be steered in any way the pad offers. */
export function hasPtz(camera) {
  const p = camera?.ptz;
  return Boolean(p && (p.continuous || p.presets || p.home));
}

export class PtzPad {
  #api;
  #drive;
  #user;
  #caps;
  #lock = { holder: null, role: null, priority: null, yours: false, can_take: true };
  #myPriority = 0;
  #noticeTimer = null;
  #resize = null; // ResizeObserver of the tile: compact on small tiles
  #endStick = () => {}; // lets go of the joystick (control lost while dragging)
  #destroyed = false;

  constructor(tileElement, camera, { user }) {
    this.cameraId = camera.id;
    this.tileElement = tileElement;
    this.#user = user;
    this.#caps = camera.ptz;
    this.#api = new PtzApi(camera.id);
    this.#drive = new PtzDrive(this.#api, { onLock: (lock) => this.#setLock(lock), onError: (err) => this.#refused(err) });

    const root = (this.element = el("div", "ptz-pad", { role: "group", "aria-label": `PTZ control of ${camera.name || camera.id}` }));
    // Clicks on the pad's controls must not maximise or restore the tile underneath.
    for (const type of ["click", "dblclick"]) {
      root.addEventListener(type, (event) => {
        if (event.target.closest("button, input, form, .ptz-stick, .ptz-presets")) event.stopPropagation();
      });
    }

    this.lockEl = el("p", "ptz-lock", { role: "status", "aria-live": "polite", "data-state": "free" }, "Free");
    this.noticeEl = el("p", "ptz-notice", { role: "alert", hidden: "" });
    this.noticeEl.addEventListener("click", () => this.#notice(""));

    const body = el("div", "ptz-body");
    const side = el("div", "ptz-side");
    if (this.#caps.continuous) side.append(...this.#makeZoom());
    if (this.#caps.home) {
      const home = el("button", "ptz-home", { type: "button", title: "Home position (key Home)", "aria-label": "Home position" }, "⌂");
      home.addEventListener("click", () => this.home());
      side.append(home);
    }
    if (this.#caps.continuous) body.append(this.#makeStick());
    if (side.childElementCount) body.append(side);

    const actions = el("div", "ptz-actions");
    if (this.#caps.presets) actions.append(this.#makePresets());
    this.takeButton = el("button", "ptz-take", { type: "button", hidden: "" }, "Take control");
    this.takeButton.addEventListener("click", () => this.#take());
    this.releaseButton = el("button", "ptz-release", { type: "button", hidden: "", title: "Let others steer this camera" }, "Release");
    this.releaseButton.addEventListener("click", () => this.#release());
    actions.append(this.takeButton, this.releaseButton);

    const hint = el("p", "ptz-hint", {}, "Maximise the tile to steer; arrow keys work here");
    root.append(this.lockEl, this.noticeEl, body, actions);
    if (this.presetsPanel) root.append(this.presetsPanel);
    root.append(hint);
    tileElement.append(root);
    // Small tiles (9 and 16 layouts) get the lock holder only: the pad would hide the picture.
    const fit = () => {
      const { clientWidth: w, clientHeight: h } = tileElement;
      root.classList.toggle("ptz-compact", w < COMPACT.width || h < COMPACT.height);
    };
    fit();
    this.#resize = new ResizeObserver(fit);
    this.#resize.observe(tileElement);
    this.refreshLock();
  }

  // -- joystick and zoom ---------------------------------------------------------------
  #makeStick() {
    const stick = el("div", "ptz-stick", {
      role: "img",
      "aria-label": "Joystick: drag to pan and tilt (arrow keys when the tile is selected)",
      title: "Drag to pan and tilt; arrow keys when the tile is selected",
    });
    const knob = el("div", "ptz-knob");
    stick.append(knob);
    let active = null;
    let origin = null; // the stick's centre when the drag began: the pad may grow meanwhile
    const steer = (event) => {
      const radius = (stick.offsetWidth - knob.offsetWidth) / 2 || 1;
      let dx = event.clientX - origin.x;
      let dy = event.clientY - origin.y;
      const distance = Math.hypot(dx, dy);
      if (distance > radius) {
        dx = (dx / distance) * radius;
        dy = (dy / distance) * radius;
      }
      knob.style.transform = `translate(${dx}px, ${dy}px)`;
      const magnitude = Math.min(1, distance / radius);
      if (magnitude < DEAD_ZONE) {
        this.#drive.set("stick", null);
        return;
      }
      const scale = (magnitude - DEAD_ZONE) / (1 - DEAD_ZONE) / magnitude; // 0 at the dead zone's edge
      this.#drive.set("stick", { pan: (dx / radius) * scale, tilt: (-dy / radius) * scale });
    };
    const end = () => {
      if (active === null) return;
      active = null;
      stick.classList.remove("ptz-active");
      knob.style.transform = "";
      this.#drive.set("stick", null);
    };
    stick.addEventListener("pointerdown", (event) => {
      if (event.button !== 0 || active !== null) return;
      event.preventDefault();
      active = event.pointerId;
      const rect = stick.getBoundingClientRect();
      origin = { x: rect.left + rect.width / 2, y: rect.top + rect.height / 2 };
      stick.setPointerCapture(event.pointerId);
      stick.classList.add("ptz-active");
      steer(event);
    });
    stick.addEventListener("pointermove", (event) => {
      if (event.pointerId === active) steer(event);
    });
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      stick.addEventListener(type, (event) => {
        if (event.pointerId === active) end();
      });
    }
    this.#endStick = end;
    return stick;
  }

  #makeZoom() {
    const buttons = [];
    for (const [dir, label, speed] of [["in", "+", ZOOM_SPEED], ["out", "−", -ZOOM_SPEED]]) {
      const button = el("button", `ptz-zoom-${dir}`, { type: "button", title: `Zoom ${dir} (hold; key ${dir === "in" ? "+" : "−"})`, "aria-label": `Zoom ${dir}` }, label);
      let held = null;
      button.addEventListener("pointerdown", (event) => {
        if (event.button !== 0) return;
        held = event.pointerId;
        button.setPointerCapture(event.pointerId);
        this.#drive.set(`zoom-${dir}`, { zoom: speed });
      });
      for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
        button.addEventListener(type, (event) => {
          if (event.pointerId !== held) return;
          held = null;
          this.#drive.set(`zoom-${dir}`, null);
        });
      }
      buttons.push(button);
    }
    return buttons;
  }

  /** Keyboard input: the velocity of the keys held now (null: none). */
  keys(velocity) {
    this.#drive.set("keys", velocity);
  }

  // -- presets and home ----------------------------------------------------------------
  #makePresets() {
    const button = (this.presetsButton = el("button", "ptz-presets-button", { type: "button", "aria-expanded": "false" }, "Presets ▾"));
    const panel = (this.presetsPanel = el("div", "ptz-presets", { hidden: "" }));
    this.presetList = el("ul", "ptz-preset-list", { "aria-label": "Presets" });
    panel.append(this.presetList);
    if (can(this.#user, "cameras.manage")) {
      const form = el("form", "ptz-preset-save");
      const input = el("input", "", { name: "name", placeholder: "Save current view as…", maxlength: "64", required: "", "aria-label": "New preset name" });
      const save = el("button", "", { type: "submit" }, "Save");
      form.append(input, save);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const name = input.value.trim();
        if (!name) return;
        try {
          const preset = await this.#api.savePreset(name);
          input.value = "";
          this.#notice(`Saved preset “${preset.name}”`, "ok");
          await this.#loadPresets();
        } catch (err) {
          this.#refused(err);
        }
      });
      panel.append(form);
    }
    button.addEventListener("click", () => this.#togglePresets());
    return button;
  }

  async #togglePresets(open = this.presetsPanel.hidden) {
    this.presetsPanel.hidden = !open;
    this.presetsButton.setAttribute("aria-expanded", String(open));
    if (open) await this.#loadPresets();
  }

  async #loadPresets() {
    let presets;
    try {
      presets = await this.#api.presets();
    } catch (err) {
      this.#refused(err);
      return;
    }
    if (this.#destroyed) return;
    const items = presets.map((preset) => {
      const li = el("li");
      const go = el("button", "ptz-preset", { type: "button", "data-token": preset.token }, preset.name || preset.token);
      go.addEventListener("click", () => this.#command(() => this.#api.gotoPreset(preset.token)));
      li.append(go);
      return li;
    });
    if (!items.length) items.push(el("li", "ptz-preset-none", {}, "No presets"));
    this.presetList.replaceChildren(...items);
  }

  home() {
    if (this.#caps.home) this.#command(() => this.#api.home());
  }

  async #command(call) {
    try {
      this.#setLock(await call());
    } catch (err) {
      this.#refused(err);
    }
  }

  // -- the control lock ----------------------------------------------------------------
  async refreshLock() {
    try {
      this.#setLock(await this.#api.lock());
    } catch (err) {
      if (err.status !== 401) console.warn(`camera ${this.cameraId}: PTZ lock: ${err.message}`);
    }
  }

  async #take() {
    try {
      this.#setLock(await this.#api.take());
      this.#notice("");
    } catch (err) {
      this.#refused(err);
    }
  }

  async #release() {
    this.#drive.reset();
    this.#endStick();
    try {
      this.#setLock(await this.#api.release());
    } catch (err) {
      this.#refused(err);
    }
  }

  /** A LockView from the gateway, or the fields of a ptz.lock event. */
  #setLock(lock) {
    if (this.#destroyed || !lock) return;
    if (typeof lock.your_priority === "number") this.#myPriority = lock.your_priority;
    const me = this.#user.username;
    const yours = lock.holder === me;
    const canTake = !lock.holder || yours || (lock.priority ?? 0) < this.#myPriority;
    this.#lock = { holder: lock.holder, role: lock.role, role_title: lock.role_title, priority: lock.priority, yours, can_take: canTake };
    this.#renderLock();
  }

  #renderLock() {
    const { holder, yours, can_take: canTake } = this.#lock;
    let text = "Free";
    let state = "free";
    if (yours) {
      text = "You have control";
      state = "yours";
    } else if (holder) {
      text = `Controlled by ${holder} (${this.#lock.role_title || roleWords(this.#lock.role)})`;
      state = "other";
    }
    this.lockEl.textContent = text;
    this.lockEl.dataset.state = state;
    this.element.dataset.lock = state;
    this.takeButton.hidden = !(holder && !yours && canTake);
    this.releaseButton.hidden = !yours;
  }

  /** An event about this camera from the events channel. */
  onEvent(event) {
    const detail = event.detail || {};
    const me = this.#user.username;
    if (event.kind === "ptz.lock") {
      this.#setLock({ holder: detail.holder ?? null, role: detail.role, role_title: detail.role_title, priority: detail.priority });
      if (detail.holder && detail.holder !== me) {
        this.#drive.reset(); // our move, if any, ended with our control
        this.#endStick();
      }
    } else if (event.kind === "ptz.taken_over" && event.user === me) {
      this.#drive.reset();
      this.#endStick();
      const by = `${detail.by} (${detail.by_role_title || roleWords(detail.by_role)})`;
      this.#notice(`Control taken over by ${by}`, "warn", detail.reason);
    } else if (event.kind === "ptz.lapsed" && event.user === me) {
      this.#drive.reset();
      this.#notice(`Your control lapsed${detail.reason ? `: ${detail.reason}` : ""}`, "info");
    }
  }

  #refused(err) {
    if (this.#destroyed || err.status === 401) return;
    const text = err.message || String(err);
    this.#notice(text.charAt(0).toUpperCase() + text.slice(1), "error"); // a 409 names the holder
    if (err.status === 409 || err.status === 403) this.refreshLock();
  }

  #notice(text, kind = "info", detail = "") {
    clearTimeout(this.#noticeTimer);
    const node = this.noticeEl;
    node.hidden = !text;
    node.dataset.kind = kind;
    node.replaceChildren();
    if (!text) return;
    node.append(el("span", "ptz-notice-text", {}, text));
    if (detail) node.append(el("span", "ptz-notice-detail", {}, detail));
    node.title = "Click to dismiss";
    this.#noticeTimer = setTimeout(() => this.#notice(""), NOTICE_MS);
  }

  /** Remove the pad; a move of ours is stopped. */
  destroy() {
    this.#destroyed = true;
    clearTimeout(this.#noticeTimer);
    this.#resize.disconnect();
    this.#drive.close();
    this.element.remove();
  }
}

/** Keeps a PtzPad on the grid's active tile while the live page is shown. */
export class PtzPads {
  #grid;
  #list;
  #user;
  #events;
  #pad = null;
  #key = null;
  #held = new Set();
  #listeners = [];

  constructor({ grid, list, user, events }) {
    this.#grid = grid;
    this.#list = list;
    this.#user = user;
    this.#events = events;
    const refresh = () => this.#refresh();
    this.#listen(grid, "change", refresh);
    this.#listen(grid, "select", refresh);
    this.#listen(list, "update", refresh);
    if (events) {
      this.#listen(events, "event", (event) => {
        const detail = event.detail;
        if (this.#pad && detail?.kind?.startsWith("ptz.") && detail.camera === this.#pad.cameraId) this.#pad.onEvent(detail);
      });
      this.#listen(events, "open", () => this.#pad?.refreshLock()); // events missed while away
    }
    this.#listen(document, "keydown", (event) => this.#onKey(event, true));
    this.#listen(document, "keyup", (event) => this.#onKey(event, false));
    this.#listen(window, "blur", () => this.#releaseKeys());
    this.#refresh();
  }

  #listen(target, type, handler) {
    target.addEventListener(type, handler);
    this.#listeners.push(() => target.removeEventListener(type, handler));
  }

  /** The pad of the active tile (null when none is shown). */
  get pad() {
    return this.#pad;
  }

  #refresh() {
    const tile = this.#grid.activeTile();
    const camera = tile?.cameraId ? (this.#list.cameras || []).find((c) => c.id === tile.cameraId) : null;
    const wanted = camera && hasPtz(camera) ? camera : null;
    const key = wanted ? `${tile.index}|${wanted.id}|${JSON.stringify(wanted.ptz)}` : null;
    if (key === this.#key) return;
    this.#releaseKeys();
    if (this.#pad) this.#pad.destroy();
    this.#pad = wanted ? new PtzPad(tile.element, wanted, { user: this.#user }) : null;
    this.#key = key;
  }

  #onKey(event, down) {
    const pad = this.#pad;
    if (!pad || document.body.dataset.view !== "live") return;
    if (event.key === "Home" && down) {
      if (!this.#ours(event)) return;
      pad.home();
      event.preventDefault();
      return;
    }
    if (!(event.key in KEYS)) return;
    if (down) {
      if (event.ctrlKey || event.metaKey || event.altKey || !this.#ours(event)) return;
      if (pad.tileElement.dataset.phase !== "live") return;
      this.#held.add(event.key);
    } else if (!this.#held.delete(event.key)) {
      return;
    }
    event.preventDefault();
    const v = { pan: 0, tilt: 0, zoom: 0 };
    for (const key of this.#held) for (const [axis, speed] of Object.entries(KEYS[key])) v[axis] = Math.max(-1, Math.min(1, v[axis] + speed));
    pad.keys(v);
  }

  /** Keys steer when nothing else wants them: focus on the page itself or on the active tile. */
  #ours(event) {
    const target = event.target;
    if (target.closest?.("input, textarea, select, [contenteditable], dialog")) return false;
    return target === document.body || target === document.documentElement || this.#pad.tileElement.contains(target);
  }

  #releaseKeys() {
    if (!this.#held.size) return;
    this.#held.clear();
    if (this.#pad) this.#pad.keys(null);
  }

  destroy() {
    this.#listeners.forEach((remove) => remove());
    this.#listeners = [];
    if (this.#pad) this.#pad.destroy();
    this.#pad = null;
    this.#key = null;
  }
}
