// The video wall: layouts of 1, 4, 9 or 16 tiles, tile selection, maximise/restore,
// and the layout, tile assignment and each tile's stream (main, or sub when small)
// remembered in localStorage. wall() and applyWall() turn it into and from a saved wall
// ({columns, rows, tiles: [{camera, profile} | null]}, see walls.js).

import { Tile } from "./tile.js";

export const LAYOUTS = [1, 4, 9, 16];
const MAX_TILES = 16;
const STORAGE_KEY = "citygate.grid.v1";

function loadSaved(storage) {
  try {
    const saved = JSON.parse(storage.getItem(STORAGE_KEY) || "null");
    if (!saved || !LAYOUTS.includes(saved.layout) || !Array.isArray(saved.tiles)) return null;
    const tiles = Array.from({ length: MAX_TILES }, (_, i) => (typeof saved.tiles[i] === "string" ? saved.tiles[i] : null));
    const profiles = Array.from({ length: MAX_TILES }, (_, i) => (saved.profiles?.[i] === "main" ? "main" : "sub"));
    return { layout: saved.layout, tiles, profiles };
  } catch {
    return null;
  }
}

export class Grid extends EventTarget {
  #root;
  #storage;
  #tiles;
  #assigned; // camera id per tile, all 16 kept even when fewer are shown
  #profiles; // "main" (always the main stream) or "sub" (the sub stream while small), per tile
  #cameras = new Map();
  #selected = null;
  #maximised = null;

  constructor(root, { storage = window.localStorage } = {}) {
    super();
    this.#root = root;
    this.#storage = storage;
    const saved = loadSaved(storage);
    this.layout = saved ? saved.layout : 4;
    this.#assigned = saved ? saved.tiles : new Array(MAX_TILES).fill(null);
    this.#profiles = saved ? saved.profiles : new Array(MAX_TILES).fill("sub");
    this.#tiles = Array.from({ length: MAX_TILES }, (_, i) => this.#makeTile(i));
    this.#render();
  }

  #makeTile(index) {
    const tile = new Tile(index, {
      onClear: (t) => this.clear(t.index),
      onProfile: (t) => this.setProfile(t.index, this.#profiles[t.index] === "main" ? "sub" : "main"),
    });
    const element = tile.element;
    element.addEventListener("click", () => this.select(index));
    element.addEventListener("focus", () => this.select(index));
    element.addEventListener("dblclick", () => this.toggleMaximise(index));
    return tile;
  }

  #save() {
    try {
      this.#storage.setItem(STORAGE_KEY, JSON.stringify({ layout: this.layout, tiles: this.#assigned, profiles: this.#profiles }));
    } catch {
      // private mode or full storage: the wall still works, it is just not remembered
    }
  }

  /** Show the visible tiles, start the players of assigned ones, stop the hidden ones. */
  #render() {
    const root = this.#root;
    const side = Math.sqrt(this.layout);
    root.style.setProperty("--grid-side", String(side));
    root.dataset.layout = String(this.layout);
    root.classList.toggle("maximised", this.#maximised !== null);
    const visible = this.#tiles.slice(0, this.layout);
    if (root.children.length !== visible.length) root.replaceChildren(...visible.map((t) => t.element));
    this.#tiles.forEach((tile, i) => {
      const shown = i < this.layout && (this.#maximised === null || this.#maximised === i);
      tile.element.hidden = !shown;
      tile.element.classList.toggle("selected", i === this.#selected);
      tile.element.classList.toggle("is-maximised", i === this.#maximised);
      const id = i < this.layout ? this.#assigned[i] : null;
      tile.setSmall(this.layout > 1 && this.#maximised !== i);
      tile.setPreferred(this.#profiles[i]);
      tile.assign(id, id ? this.#cameras.get(id) || null : null);
    });
    this.dispatchEvent(new CustomEvent("change", { detail: { layout: this.layout } }));
  }

  setLayout(layout) {
    if (!LAYOUTS.includes(layout)) return;
    this.layout = layout;
    this.#maximised = null;
    if (this.#selected !== null && this.#selected >= layout) this.#selected = null;
    this.#save();
    this.#render();
  }

  select(index) {
    if (this.#selected === index) return;
    this.#selected = index;
    this.#tiles.forEach((t, i) => t.element.classList.toggle("selected", i === index));
    this.dispatchEvent(new CustomEvent("select", { detail: { index } }));
  }

  /** The tile that PTZ and keys act on: the maximised one, else the selected one (the only one in layout 1). */
  activeTile() {
    const index = this.#maximised ?? this.#selected ?? (this.layout === 1 ? 0 : null);
    return index === null || index >= this.layout ? null : this.#tiles[index];
  }

  /** Put a camera in the selected tile, else the first free one, else the first. */
  open(cameraId) {
    const visible = this.#assigned.slice(0, this.layout);
    let index = this.#selected;
    if (index === null || index >= this.layout) {
      const free = visible.indexOf(null);
      index = free >= 0 ? free : 0;
    }
    const existing = visible.indexOf(cameraId);
    if (existing >= 0 && existing !== index) this.#assigned[existing] = null; // one tile per camera
    this.#assigned[index] = cameraId;
    // Next click fills the next free tile rather than replacing this one.
    this.#selected = null;
    this.#save();
    this.#render();
    return index;
  }

  clear(index) {
    this.#assigned[index] = null;
    this.#profiles[index] = "sub";
    if (this.#maximised === index) this.#maximised = null;
    this.#save();
    this.#render();
  }

  clearSelected() {
    if (this.#selected !== null) this.clear(this.#selected);
  }

  toggleMaximise(index = this.#selected) {
    if (index === null || index === undefined) return;
    this.#maximised = this.#maximised === index || this.layout === 1 ? null : index;
    this.#render();
  }

  restore() {
    if (this.#maximised === null) return;
    this.#maximised = null;
    this.#render();
  }

  /** "main": the tile always plays the camera's main stream; "sub": the sub stream while small. */
  setProfile(index, profile) {
    this.#profiles[index] = profile === "main" ? "main" : "sub";
    this.#save();
    this.#render();
  }

  /** The wall as saved: square, tiles row by row ({camera, profile} or null). */
  wall() {
    const side = Math.sqrt(this.layout);
    const tiles = this.#assigned
      .slice(0, this.layout)
      .map((camera, i) => (camera ? { camera, profile: this.#profiles[i] } : null));
    return { columns: side, rows: side, tiles };
  }

  /** Show a saved wall. One of up to 4 × 4 keeps its places; a bigger one is shown in
   * order in the smallest layout that holds its cameras (at most 16). Returns the number
   * of cameras that did not fit. */
  applyWall({ columns, rows, tiles }) {
    const assigned = new Array(MAX_TILES).fill(null);
    const profiles = new Array(MAX_TILES).fill("sub");
    let dropped = 0;
    const side = Math.max(columns, rows);
    if (side * side <= MAX_TILES) {
      this.layout = side * side;
      tiles.forEach((tile, i) => {
        const index = Math.floor(i / columns) * side + (i % columns);
        if (tile && index < MAX_TILES) [assigned[index], profiles[index]] = [tile.camera, tile.profile];
      });
    } else {
      const present = tiles.filter(Boolean);
      this.layout = LAYOUTS.find((n) => n >= present.length) || MAX_TILES;
      present.slice(0, MAX_TILES).forEach((tile, i) => ([assigned[i], profiles[i]] = [tile.camera, tile.profile]));
      dropped = Math.max(0, present.length - MAX_TILES);
    }
    this.#assigned = assigned;
    this.#profiles = profiles;
    this.#maximised = null;
    this.#selected = null;
    this.#save();
    this.#render();
    return dropped;
  }

  /** Fresh camera list: tiles update their overlays and players. */
  updateCameras(cameras) {
    this.#cameras = new Map(cameras.map((c) => [c.id, c]));
    this.#tiles.forEach((tile) => tile.update(this.#cameras.get(tile.cameraId)));
  }

  /** Camera ids shown now, for the camera list's "on wall" marks. */
  shownCameras() {
    return new Set(this.#assigned.slice(0, this.layout).filter(Boolean));
  }

  /** Stop every player (page unload). */
  releaseAll() {
    this.#tiles.forEach((tile) => tile.release());
  }
}
