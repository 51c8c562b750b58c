// The privacy-mask editor (action mask.edit): a camera's snapshot with its masks drawn over
// it. Draw a polygon point by point, select one to move it (drag the shape) or reshape it
// (drag a corner), change its filter or delete it; save with a reason. Saving makes a new
// version on the gateway, which masks live view and recording from the next picture on.
//
// Coordinates are normalised (0..1 of the picture), like the gateway's, so a mask stays
// where it was drawn whatever size the snapshot is shown at. Masks declared in the
// gateway's config are shown locked: only a config change removes them.

import { getMasks, listCameras, saveMasks, snapshotUrl } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const FILTER_LABELS = { fill: "Black fill", pixelate: "Pixelate", blur: "Blur" };

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

export class MaskEditorPage {
  #root;
  #cameraId = null;
  #version = 0;
  #locked = []; // config masks: [{points, filter}]
  #masks = []; // database masks being edited: [{points, filter, options}]
  #filters = ["fill", "pixelate", "blur"];
  #selected = -1;
  #drawing = null; // points of the polygon being drawn
  #drag = null;
  #dirty = false;
  #nodes = {};
  #onKey = (event) => this.#key(event);

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
    n.list = el("ol", { class: "mask-list" });
    n.reason = el("input", { name: "reason", placeholder: "Why (kept in the history)", autocomplete: "off", maxlength: "500" });
    n.save = el("button", { type: "button", dataset: { action: "save" } }, "Save masks");
    n.status = el("p", { class: "mask-status", role: "status", "aria-live": "polite" });
    n.hint = el("p", { class: "hint" }, "Click on the picture to add corners; double-click, Enter or “Finish” closes the polygon. Drag a mask to move it, a corner to reshape it.");
    n.draw.addEventListener("click", () => this.#startDrawing());
    n.finish.addEventListener("click", () => this.#finish());
    n.remove.addEventListener("click", () => this.#deleteSelected());
    n.filter.addEventListener("change", () => {
      if (this.#selected >= 0) {
        this.#masks[this.#selected].filter = n.filter.value;
        this.#changed();
      }
    });
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
    n.filter.replaceChildren(...this.#filters.map((f) => el("option", { value: f }, FILTER_LABELS[f] || f)));
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
    this.#cameraId = cameraId;
    this.#root.dataset.camera = cameraId;
    this.#drawing = null;
    this.#selected = -1;
    this.#refreshSnapshot();
    try {
      const view = await getMasks(cameraId);
      if (this.#cameraId !== cameraId) return;
      this.#apply(view);
      this.#status("");
    } catch (err) {
      this.#status(`Cannot load the masks: ${err.message}`, true);
    }
  }

  #apply(view) {
    this.#version = view.version;
    this.#locked = view.masks.filter((m) => m.locked);
    this.#masks = view.masks.filter((m) => !m.locked).map((m) => ({ points: m.points, filter: m.filter, options: m.options }));
    if (view.filters?.length) {
      this.#filters = view.filters;
      this.#fillFilters();
    }
    this.#root.dataset.version = String(view.version);
    this.#dirty = false;
    this.#render();
  }

  #refreshSnapshot() {
    const n = this.#nodes;
    if (!n.img || !this.#cameraId) return;
    n.img.removeAttribute("data-loaded");
    n.img.onload = () => n.img.setAttribute("data-loaded", "");
    n.img.src = `${snapshotUrl(this.#cameraId, 960)}&t=${Date.now()}`;
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
    try {
      const view = await saveMasks(this.#cameraId, this.#masks, reason, this.#version);
      this.#apply(view);
      n.reason.value = "";
      this.#status(`Saved as version ${view.version}.`);
      setTimeout(() => this.#refreshSnapshot(), 1500); // the masked picture, once a keyframe passed
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
    this.#drawing = [];
    this.#selected = -1;
    this.#status("Click the corners of the area to hide.");
    this.#render();
  }

  #finish() {
    const points = this.#drawing;
    this.#drawing = null;
    if (points && points.length >= 3) {
      this.#masks.push({ points, filter: this.#nodes.filter.value || "fill", options: {} });
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
      this.#selected = Number(target.dataset.mask);
      this.#drag = { kind: "move", mask: this.#selected, from: p, points: this.#masks[this.#selected].points.map((q) => [...q]) };
      this.#nodes.filter.value = this.#masks[this.#selected].filter;
      this.#render();
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

  // -- drawing -----------------------------------------------------------------------------
  #render() {
    const n = this.#nodes;
    if (!n.overlay) return;
    const shapes = [];
    const pts = (points) => points.map(([x, y]) => `${x},${y}`).join(" ");
    this.#locked.forEach((m) => {
      shapes.push(svg("polygon", { points: pts(m.points), class: "mask-shape mask-locked", "vector-effect": "non-scaling-stroke" }));
    });
    this.#masks.forEach((m, i) => {
      const cls = `mask-shape mask-${m.filter}${i === this.#selected ? " mask-selected" : ""}`;
      shapes.push(svg("polygon", { points: pts(m.points), class: cls, "data-mask": i, "vector-effect": "non-scaling-stroke" }));
      if (i === this.#selected) {
        m.points.forEach(([x, y], v) =>
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
    n.finish.disabled = !this.#drawing;
    n.draw.disabled = !!this.#drawing;
    n.remove.disabled = this.#selected < 0;
    const items = [
      ...this.#locked.map((m) => el("li", { class: "mask-item mask-item-locked" }, `${FILTER_LABELS[m.filter] || m.filter} — set in config (locked)`)),
      ...this.#masks.map((m, i) => {
        const item = el("li", { class: `mask-item${i === this.#selected ? " mask-item-selected" : ""}` }, `${FILTER_LABELS[m.filter] || m.filter}, ${m.points.length} corners`);
        item.addEventListener("click", () => {
          this.#selected = i;
          n.filter.value = m.filter;
          this.#render();
        });
        return item;
      }),
    ];
    n.list.replaceChildren(...items);
    this.#root.dataset.masks = String(this.#locked.length + this.#masks.length);
    this.#root.toggleAttribute("data-dirty", this.#dirty);
  }
}
