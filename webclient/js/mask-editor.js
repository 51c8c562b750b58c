// The privacy-mask editor (action mask.edit): a camera's snapshot with its masks drawn over
// it. Draw a polygon point by point, select one to move it (drag the shape) or reshape it
// (drag a corner), change its filter or delete it; save with a reason. Saving makes a new
// version on the gateway, which masks live view and recording from the next picture on.
//
// Coordinates are normalised (0..1 of the picture), like the gateway's, so a mask stays
// where it was drawn whatever size the snapshot is shown at. Masks declared in the
// gateway's config are shown locked: only a config change removes them.
//
// On a PTZ camera that reports where it points (the gateway's view says `anchors`), masks
// follow the scene: each is shown where the gateway projects it into the current picture,
// and the editor re-reads the position, the masks and the snapshot every POLL_MS while the
// camera moves or stands somewhere else than where the shown snapshot was taken, so the
// masks stay on the building on screen when someone pans. A new mask is drawn on the
// current picture and sent with `drawn_at`, the position that picture was taken at (read
// before and after the snapshot: the same, and the camera still). A scene mask sent back
// unchanged keeps its anchor (its original points and drawn_at); one moved or reshaped is
// drawn anew where the camera stands. While the camera moves nothing can be drawn.

import { getMasks, listCameras, request, saveMasks, snapshotUrl } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const FILTER_LABELS = { fill: "Black fill", pixelate: "Pixelate", blur: "Blur" };
const SPACE_LABELS = { scene: "Follows the scene", picture: "Fixed in the picture" };
/** How often the editor of a PTZ camera re-reads its position and masks. */
const POLL_MS = 500;
/** A snapshot is the camera's newest keyframe, which may be older than the position: one
 * asked for this long after the camera arrived is taken as showing where it stands. */
const SETTLE_MS = 2500;
/** Positions (generic units) closer than this are the same one (the gateway allows 0.002). */
const SAME_POSITION = 0.0005;
/** The gateway's limit of corners per mask. */
const MAX_POINTS = 64;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

const clamp = (v) => Math.min(1, Math.max(0, v));
const round = (v) => Math.round(v * 10000) / 10000;
/** [pan, tilt, zoom] of the gateway's position view (null: unknown). */
const here = (position) => (position ? [position.pan, position.tilt, position.zoom] : null);
const samePosition = (a, b) => !!a && !!b && a.every((v, i) => Math.abs(v - b[i]) <= SAME_POSITION);
const inPicture = (points) => points.every(([x, y]) => x >= -1e-4 && x <= 1 + 1e-4 && y >= -1e-4 && y <= 1 + 1e-4);
const fmtPosition = ([pan, tilt, zoom]) => `pan ${pan.toFixed(3)}, tilt ${tilt.toFixed(3)}, zoom ${zoom.toFixed(2)}`;
const sceneKey = (points, drawnAt) => JSON.stringify([points, drawnAt]);

/** A mask of the gateway's view as the editor keeps it. `saved` (scene masks read back): the
 * anchor sent back unchanged; `projected`: where the gateway shows it in the picture now. */
function editable(m) {
  const scene = m.space === "scene";
  return {
    points: scene ? null : m.points.map((p) => [...p]),
    filter: m.filter,
    options: m.options || {},
    space: scene ? "scene" : "picture",
    drawnAt: scene ? m.drawn_at : null,
    saved: scene ? { points: m.points, drawn_at: m.drawn_at } : null,
    projected: m.projected || null,
  };
}

export class MaskEditorPage {
  #root;
  #cameraId = null;
  #version = 0;
  #locked = []; // config masks: [{points, filter, space, projected}]
  #masks = []; // database masks being edited: [{points, filter, options, space, drawnAt, saved, projected}]
  #filters = ["fill", "pixelate", "blur"];
  #selected = -1;
  #drawing = null; // points of the polygon being drawn
  #drag = null;
  #dirty = false;
  #nodes = {};
  #onKey = (event) => this.#key(event);
  // A PTZ camera whose masks follow the scene:
  #anchors = false;
  #position = null; // the gateway's newest {pan, tilt, zoom, moving}
  #arrivedAt = 0; // performance.now() when that position was first seen
  #shownAt = null; // [pan, tilt, zoom] the shown snapshot was taken at (null: unknown, moving)
  #settled = false; // ... and asked for once the camera had stood there SETTLE_MS
  #refreshAt = 0; // performance.now() after which the snapshot is taken again (0: no need)
  #timer = null;
  #imageUrl = null;
  #followError = "";

  constructor(root) {
    this.#root = root;
  }

  show() {
    this.#root.hidden = false;
    this.#build();
    document.addEventListener("keydown", this.#onKey);
    this.#loadCameras();
  }

  hide() {
    this.#root.hidden = true;
    this.#cameraId = null;
    clearTimeout(this.#timer);
    if (this.#imageUrl) URL.revokeObjectURL(this.#imageUrl);
    this.#imageUrl = null;
    document.removeEventListener("keydown", this.#onKey);
    this.#root.replaceChildren();
    this.#nodes = {};
  }

  destroy() {
    this.hide();
  }

  // -- layout ------------------------------------------------------------------------------
  #build() {
    const n = (this.#nodes = {});
    n.camera = el("select", { name: "camera", "aria-label": "Camera" });
    n.camera.addEventListener("change", () => this.#open(n.camera.value));
    n.img = el("img", { class: "mask-snapshot", alt: "Camera snapshot", draggable: "false" });
    n.img.addEventListener("load", () => n.img.setAttribute("data-loaded", ""));
    n.overlay = svg("svg", { class: "mask-overlay", viewBox: "0 0 1 1", preserveAspectRatio: "none", role: "img" });
    n.overlay.setAttribute("aria-label", "Masks over the snapshot");
    n.overlay.addEventListener("pointerdown", (e) => this.#pointerDown(e));
    n.overlay.addEventListener("pointermove", (e) => this.#pointerMove(e));
    n.overlay.addEventListener("pointerup", () => (this.#drag = null));
    n.overlay.addEventListener("dblclick", (e) => {
      if (this.#drawing) {
        e.preventDefault();
        this.#finish();
      }
    });
    n.draw = el("button", { type: "button", dataset: { action: "draw" } }, "Draw mask");
    n.finish = el("button", { type: "button", dataset: { action: "finish" }, disabled: "" }, "Finish polygon");
    n.remove = el("button", { type: "button", class: "secondary", dataset: { action: "delete" }, disabled: "" }, "Delete mask");
    n.filter = el("select", { name: "filter", "aria-label": "Filter" });
    n.space = el("select", { name: "space", "aria-label": "Space" });
    n.space.replaceChildren(...Object.entries(SPACE_LABELS).map(([value, label]) => el("option", { value }, label)));
    n.motion = el("p", { class: "mask-motion", role: "status", "aria-live": "polite" });
    n.list = el("ol", { class: "mask-list" });
    n.reason = el("input", { name: "reason", placeholder: "Why (kept in the history)", autocomplete: "off", maxlength: "500" });
    n.save = el("button", { type: "button", dataset: { action: "save" } }, "Save masks");
    n.status = el("p", { class: "mask-status", role: "status", "aria-live": "polite" });
    n.hint = el("p", { class: "hint" }, "Click on the picture to add corners; double-click, Enter or “Finish” closes the polygon. Drag a mask to move it, a corner to reshape it. On a PTZ camera a mask that follows the scene stays on what it hides when the camera turns; one fixed in the picture stays where it is on screen.");
    n.draw.addEventListener("click", () => this.#startDrawing());
    n.finish.addEventListener("click", () => this.#finish());
    n.remove.addEventListener("click", () => this.#deleteSelected());
    n.filter.addEventListener("change", () => {
      if (this.#selected >= 0) {
        this.#masks[this.#selected].filter = n.filter.value;
        this.#changed();
      }
    });
    n.space.addEventListener("change", () => this.#changeSpace(n.space.value));
    n.save.addEventListener("click", () => this.#save());
    this.#root.replaceChildren(
      el("div", { class: "page-head" }, el("h2", { id: "masks-heading" }, "Privacy masks"), n.camera),
      el(
        "div",
        { class: "mask-editor" },
        el("div", { class: "mask-stage" }, n.img, n.overlay),
        el(
          "div",
          { class: "mask-tools" },
          el("div", { class: "mask-buttons" }, n.draw, n.finish, n.remove),
          el("label", {}, "Filter ", n.filter),
          el("label", {}, "Space ", n.space),
          n.motion,
          n.list,
          el("label", {}, "Reason ", n.reason),
          n.save,
          n.status,
          n.hint,
        ),
      ),
    );
    this.#fillFilters();
  }

  #fillFilters() {
    const n = this.#nodes;
    const chosen = n.filter.value;
    n.filter.replaceChildren(...this.#filters.map((f) => el("option", { value: f }, FILTER_LABELS[f] || f)));
    // What was chosen, else a black fill (hides the most), not the first name in the list.
    const keep = [chosen, "fill"].find((f) => this.#filters.includes(f));
    if (keep) n.filter.value = keep;
  }

  // -- data --------------------------------------------------------------------------------
  async #loadCameras() {
    try {
      const cameras = await listCameras();
      const n = this.#nodes;
      if (!n.camera) return;
      n.camera.replaceChildren(...cameras.map((c) => el("option", { value: c.id }, c.name || c.id)));
      if (cameras.length) this.#open(cameras[0].id);
      else this.#status("No cameras.");
    } catch (err) {
      this.#status(`Cannot list cameras: ${err.message}`, true);
    }
  }

  async #open(cameraId) {
    clearTimeout(this.#timer);
    this.#cameraId = cameraId;
    this.#root.dataset.camera = cameraId;
    this.#drawing = null;
    this.#drag = null;
    this.#selected = -1;
    this.#anchors = false;
    this.#position = null;
    this.#shownAt = null;
    this.#settled = false;
    this.#refreshAt = 0;
    this.#followError = "";
    this.#nodes.img?.removeAttribute("data-loaded");
    try {
      const view = await getMasks(cameraId);
      if (this.#cameraId !== cameraId) return;
      this.#apply(view);
      this.#status("");
      if (this.#anchors) await this.#follow(cameraId);
      else await this.#loadSnapshot(cameraId);
    } catch (err) {
      if (this.#cameraId === cameraId) this.#status(`Cannot load the masks: ${err.message}`, true);
    }
  }

  #apply(view) {
    this.#version = view.version;
    this.#anchors = !!view.anchors;
    this.#locked = view.masks.filter((m) => m.locked).map(editable);
    this.#masks = view.masks.filter((m) => !m.locked).map(editable);
    if (this.#selected >= this.#masks.length) this.#selected = -1;
    if (view.filters?.length) {
      this.#filters = view.filters;
      this.#fillFilters();
    }
    this.#notePosition(view.position);
    this.#root.dataset.version = String(view.version);
    this.#dirty = false;
    if (this.#nodes.space) this.#nodes.space.value = this.#anchors ? "scene" : "picture";
    this.#render();
  }

  /** The gateway's newest view while editing: positions and projections, never the edits. */
  #track(view) {
    if (view.version !== this.#version && !this.#dirty) {
      this.#apply(view);
      return;
    }
    const projected = new Map(view.masks.filter((m) => m.space === "scene").map((m) => [sceneKey(m.points, m.drawn_at), m.projected]));
    for (const m of this.#masks) if (m.saved) m.projected = projected.get(sceneKey(m.saved.points, m.saved.drawn_at)) || null;
    this.#locked = view.masks.filter((m) => m.locked).map(editable);
    this.#anchors = !!view.anchors;
    this.#notePosition(view.position);
    const blocked = this.#drawBlock();
    if (blocked && this.#drawing) {
      this.#drawing = null;
      this.#status(blocked, true);
    }
    if (blocked && this.#drag && this.#masks[this.#drag.mask]?.space === "scene") this.#drag = null;
    this.#render();
  }

  #notePosition(position) {
    const moved = !position || position.moving || !samePosition(here(position), here(this.#position));
    if (moved) this.#arrivedAt = performance.now();
    this.#position = position || null;
  }

  /** Why nothing can be drawn now (null: it can). */
  #drawBlock() {
    if (!this.#anchors) return null;
    const position = this.#position;
    if (!position) return "The camera's position is not known: nothing can be drawn until it is.";
    if (position.moving) return "The camera is moving: stop it to draw.";
    if (!this.#settled || !samePosition(this.#shownAt, here(position))) return "Waiting for a picture from where the camera stands…";
    return null;
  }

  /** Keep the picture and the masks in step with a PTZ camera, every POLL_MS while shown. */
  async #follow(cameraId) {
    clearTimeout(this.#timer);
    try {
      const view = await getMasks(cameraId);
      if (this.#cameraId !== cameraId) return;
      this.#followError = "";
      this.#track(view);
      if (this.#needsSnapshot()) await this.#syncSnapshot(cameraId, view);
    } catch (err) {
      if (this.#cameraId === cameraId) {
        this.#followError = `Cannot follow the camera: ${err.message}`;
        this.#render();
      }
    } finally {
      if (this.#cameraId === cameraId && !this.#root.hidden) this.#timer = setTimeout(() => this.#follow(cameraId), POLL_MS);
    }
  }

  #needsSnapshot() {
    const position = here(this.#position);
    if (!position) return !this.#imageUrl; // nothing to follow: one picture to show will do
    if (this.#position.moving || !samePosition(this.#shownAt, position)) return true;
    const now = performance.now();
    if (this.#refreshAt && now >= this.#refreshAt) return true;
    return !this.#settled && now - this.#arrivedAt >= SETTLE_MS;
  }

  /** Read the position, take the snapshot, read the position again: the same, and the
   * camera still, means the picture shows that position (else the next round tries again). */
  async #syncSnapshot(cameraId, before) {
    const asked = performance.now();
    const arrived = this.#arrivedAt;
    if (!(await this.#loadSnapshot(cameraId))) return;
    const after = await getMasks(cameraId);
    if (this.#cameraId !== cameraId) return;
    this.#track(after);
    const a = before.position;
    const b = after.position;
    const still = !!a && !!b && !a.moving && !b.moving && samePosition(here(a), here(b));
    this.#shownAt = still ? here(b) : null;
    this.#settled = still && this.#arrivedAt === arrived && asked - arrived >= SETTLE_MS;
    if (this.#refreshAt && asked >= this.#refreshAt) this.#refreshAt = 0;
    this.#render();
  }

  /** Fetch a snapshot and show it once decoded (no blank picture in between). */
  async #loadSnapshot(cameraId) {
    const response = await request(`${snapshotUrl(cameraId, 960)}&t=${Date.now()}`);
    const blob = await response.blob();
    const n = this.#nodes;
    if (this.#cameraId !== cameraId || !n.img) return false;
    const url = URL.createObjectURL(blob);
    try {
      const image = new Image();
      image.src = url;
      await image.decode();
    } catch {
      URL.revokeObjectURL(url);
      return false;
    }
    if (this.#cameraId !== cameraId || n !== this.#nodes) {
      URL.revokeObjectURL(url);
      return false;
    }
    n.img.src = url;
    if (this.#imageUrl) URL.revokeObjectURL(this.#imageUrl);
    this.#imageUrl = url;
    return true;
  }

  /** What the gateway gets for a mask: unchanged scene masks keep their anchor. */
  #wire(m) {
    const base = { filter: m.filter, options: m.options || {} };
    if (m.space === "picture") return { ...base, points: m.points, space: "picture" };
    if (m.saved) return { ...base, points: m.saved.points, drawn_at: m.saved.drawn_at };
    return { ...base, points: m.points, drawn_at: m.drawnAt, space: "scene" };
  }

  async #save() {
    const n = this.#nodes;
    if (this.#drawing) this.#finish();
    const reason = n.reason.value.trim();
    if (!reason) {
      this.#status("Give a reason: it is kept with this version of the masks.", true);
      n.reason.focus();
      return;
    }
    n.save.disabled = true;
    const cameraId = this.#cameraId;
    try {
      const view = await saveMasks(cameraId, this.#masks.map((m) => this.#wire(m)), reason, this.#version);
      if (this.#cameraId !== cameraId) return;
      this.#apply(view);
      n.reason.value = "";
      this.#status(`Saved as version ${view.version}.`);
      // the masked picture, once a keyframe passed
      if (this.#anchors) this.#refreshAt = performance.now() + 1500;
      else setTimeout(() => this.#cameraId === cameraId && this.#loadSnapshot(cameraId).catch(() => {}), 1500);
    } catch (err) {
      this.#status(`Not saved: ${err.message}`, true);
    } finally {
      n.save.disabled = false;
    }
  }

  #status(text, error = false) {
    const node = this.#nodes.status;
    if (!node) return;
    node.textContent = text;
    node.classList.toggle("mask-status-error", error);
  }

  #changed() {
    this.#dirty = true;
    this.#render();
  }

  // -- editing -----------------------------------------------------------------------------
  #point(event) {
    const rect = this.#nodes.overlay.getBoundingClientRect();
    return [round(clamp((event.clientX - rect.left) / rect.width)), round(clamp((event.clientY - rect.top) / rect.height))];
  }

  #startDrawing() {
    const blocked = this.#drawBlock();
    if (blocked) {
      this.#status(blocked, true);
      return;
    }
    this.#drawing = [];
    this.#selected = -1;
    this.#status("Click the corners of the area to hide.");
    this.#render();
  }

  #finish() {
    const points = this.#drawing;
    this.#drawing = null;
    if (points && points.length >= 3) {
      // On a camera that follows the scene, anchored where the shown picture was taken.
      const space = this.#anchors && this.#nodes.space.value === "scene" ? "scene" : "picture";
      const drawnAt = space === "scene" ? [...this.#shownAt] : null;
      this.#masks.push({ points, filter: this.#nodes.filter.value || "fill", options: {}, space, drawnAt, saved: null, projected: null });
      this.#selected = this.#masks.length - 1;
      this.#status("Mask added; save to apply it.");
      this.#changed();
    } else {
      if (points) this.#status("A mask needs at least three corners.", true);
      this.#render();
    }
  }

  #deleteSelected() {
    if (this.#selected < 0) return;
    this.#masks.splice(this.#selected, 1);
    this.#selected = -1;
    this.#changed();
  }

  #key(event) {
    if (this.#root.hidden || event.target.closest?.("input, select, textarea")) return;
    if (event.key === "Enter" && this.#drawing) this.#finish();
    else if (event.key === "Escape" && this.#drawing) {
      this.#drawing = null;
      this.#render();
    } else if ((event.key === "Delete" || event.key === "Backspace") && this.#selected >= 0) this.#deleteSelected();
    else return;
    event.preventDefault();
  }

  #pointerDown(event) {
    const p = this.#point(event);
    if (this.#drawing) {
      const first = this.#drawing[0];
      if (this.#drawing.length >= 3 && Math.hypot(first[0] - p[0], first[1] - p[1]) < 0.015) this.#finish();
      else {
        this.#drawing.push(p);
        this.#render();
      }
      return;
    }
    const target = event.target;
    if (target.dataset?.vertex !== undefined) {
      this.#drag = { kind: "vertex", mask: Number(target.dataset.mask), vertex: Number(target.dataset.vertex) };
    } else if (target.dataset?.mask !== undefined) {
      this.#select(Number(target.dataset.mask));
      const mask = this.#masks[this.#selected];
      const why = this.#notEditable(mask);
      if (why) {
        this.#status(why, true);
        return;
      }
      this.#drag = { kind: "move", mask: this.#selected, from: p, points: this.#outline(mask).map((q) => [...q]) };
    } else {
      this.#selected = -1;
      this.#render();
      return;
    }
    this.#nodes.overlay.setPointerCapture?.(event.pointerId);
  }

  #pointerMove(event) {
    const drag = this.#drag;
    if (!drag) return;
    const p = this.#point(event);
    const mask = this.#masks[drag.mask];
    if (!mask || this.#notEditable(mask)) {
      this.#drag = null;
      return;
    }
    this.#redraw(mask);
    if (drag.kind === "vertex") {
      mask.points[drag.vertex] = p;
    } else {
      // Move the whole shape, kept inside the picture.
      const xs = drag.points.map((q) => q[0]);
      const ys = drag.points.map((q) => q[1]);
      const dx = Math.min(Math.max(p[0] - drag.from[0], -Math.min(...xs)), 1 - Math.max(...xs));
      const dy = Math.min(Math.max(p[1] - drag.from[1], -Math.min(...ys)), 1 - Math.max(...ys));
      mask.points = drag.points.map(([x, y]) => [round(x + dx), round(y + dy)]);
    }
    this.#changed();
  }

  #select(index) {
    this.#selected = index;
    const mask = this.#masks[index];
    this.#nodes.filter.value = mask.filter;
    this.#nodes.space.value = mask.space;
    this.#render();
  }

  /** The one polygon of a mask in the shown picture that can be dragged (null: none). */
  #outline(m) {
    if (m.space === "picture" || !m.saved) return m.points;
    return m.projected?.length === 1 ? m.projected[0] : null;
  }

  /** Why a mask cannot be moved or reshaped now (null: it can). */
  #notEditable(m) {
    if (m.space === "picture") return null;
    const blocked = this.#drawBlock();
    if (blocked) return blocked;
    if (!m.saved) return samePosition(m.drawnAt, this.#shownAt) ? null : "This mask was drawn at another position: save it, or delete it and draw it again.";
    const outline = this.#outline(m);
    if (!outline) return "This mask is out of view here: turn the camera towards it to change it.";
    if (!inPicture(outline) || outline.length > MAX_POINTS) return "This mask is partly out of view: turn the camera so all of it shows to change it.";
    return null;
  }

  /** A scene mask about to be moved or reshaped: it is drawn anew where the camera stands. */
  #redraw(m) {
    if (m.space !== "scene" || !m.saved) return;
    m.points = this.#outline(m).map(([x, y]) => [round(clamp(x)), round(clamp(y))]);
    m.drawnAt = [...this.#shownAt];
    m.saved = null;
    m.projected = null;
  }

  /** The space select: the selected mask's space, else the one of the next mask drawn. */
  #changeSpace(space) {
    const m = this.#masks[this.#selected];
    if (!m || m.space === space) return;
    const why = space === "scene" ? this.#drawBlock() || (this.#anchors ? null : "This camera cannot say where it points: its masks stay fixed in the picture.") : this.#notEditable(m);
    if (why) {
      this.#nodes.space.value = m.space;
      this.#status(why, true);
      return;
    }
    if (space === "picture") {
      this.#redraw(m);
      m.space = "picture";
      m.drawnAt = null;
    } else {
      m.space = "scene";
      m.drawnAt = [...this.#shownAt];
      m.saved = null;
      m.projected = null;
    }
    this.#changed();
  }

  // -- drawing -----------------------------------------------------------------------------
  /** The polygons of a mask in the shown picture (none: out of view, or drawn elsewhere). */
  #polygons(m) {
    if (m.space === "picture") return [m.points];
    if (m.saved) return m.projected || [];
    return samePosition(m.drawnAt, this.#shownAt) ? [m.points] : [];
  }

  /** The mask list's words for a mask. */
  #describe(m) {
    const parts = [FILTER_LABELS[m.filter] || m.filter, m.space === "scene" ? "follows the scene" : "fixed in the picture"];
    if (m.space === "scene" && !m.saved && m.drawnAt && !samePosition(m.drawnAt, this.#shownAt)) {
      parts.push(`drawn at ${fmtPosition(m.drawnAt)}, not saved yet`);
    } else if (m.space === "scene" && !this.#polygons(m).length) {
      parts.push(this.#position ? "out of view here" : "position unknown");
    }
    return parts.join(", ");
  }

  #render() {
    const n = this.#nodes;
    if (!n.overlay) return;
    const shapes = [];
    const pts = (points) => points.map(([x, y]) => `${x},${y}`).join(" ");
    this.#locked.forEach((m) => {
      for (const polygon of this.#polygons(m)) {
        shapes.push(svg("polygon", { points: pts(polygon), class: `mask-shape mask-locked mask-${m.space}`, "vector-effect": "non-scaling-stroke" }));
      }
    });
    this.#masks.forEach((m, i) => {
      const cls = `mask-shape mask-${m.filter} mask-${m.space}${i === this.#selected ? " mask-selected" : ""}`;
      for (const polygon of this.#polygons(m)) {
        shapes.push(svg("polygon", { points: pts(polygon), class: cls, "data-mask": i, "data-space": m.space, "vector-effect": "non-scaling-stroke" }));
      }
      if (i === this.#selected && !this.#notEditable(m)) {
        this.#outline(m).forEach(([x, y], v) =>
          shapes.push(svg("circle", { cx: x, cy: y, r: 0.009, class: "mask-vertex", "data-mask": i, "data-vertex": v })),
        );
      }
    });
    if (this.#drawing) {
      shapes.push(svg("polyline", { points: pts(this.#drawing), class: "mask-drawing", "vector-effect": "non-scaling-stroke" }));
      this.#drawing.forEach(([x, y]) => shapes.push(svg("circle", { cx: x, cy: y, r: 0.006, class: "mask-vertex" })));
    }
    n.overlay.replaceChildren(...shapes);
    n.overlay.classList.toggle("mask-overlay-drawing", !!this.#drawing);
    const blocked = this.#drawBlock();
    n.finish.disabled = !this.#drawing;
    n.draw.disabled = !!this.#drawing || !!blocked;
    n.remove.disabled = this.#selected < 0;
    n.space.disabled = !this.#anchors;
    n.space.title = this.#anchors ? "" : "This camera cannot say where it points: its masks stay fixed in the picture.";
    const motion = this.#followError || blocked || "";
    if (n.motion.textContent !== motion) n.motion.textContent = motion; // announced once, not every round
    n.motion.classList.toggle("mask-motion-blocked", !!(this.#followError || blocked));
    const items = [
      ...this.#locked.map((m) => el("li", { class: "mask-item mask-item-locked", dataset: { space: m.space } }, `${this.#describe(m)} — set in config (locked)`)),
      ...this.#masks.map((m, i) => {
        const item = el("li", { class: `mask-item${i === this.#selected ? " mask-item-selected" : ""}`, dataset: { space: m.space } }, this.#describe(m));
        item.addEventListener("click", () => this.#select(i));
        return item;
      }),
    ];
    n.list.replaceChildren(...items);
    const root = this.#root;
    root.dataset.masks = String(this.#locked.length + this.#masks.length);
    root.toggleAttribute("data-dirty", this.#dirty);
    root.dataset.anchors = String(this.#anchors);
    root.dataset.drawable = String(!blocked);
    root.dataset.moving = String(!!this.#position?.moving);
    root.dataset.shownAt = this.#shownAt ? this.#shownAt.join(",") : "";
  }
}
