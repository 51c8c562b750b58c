// The sidebar: every camera with its state and area, refreshed every few seconds.
// Events: 'update' (detail: cameras), 'select' (detail: camera id), 'error' (detail: ApiError|null).
// With the events channel, a camera.mask_position event updates the camera's
// `mask_position_known` at once (the tiles show "privacy mask: position unknown").

import { listCameras, snapshotUrl } from "./api.js";

const REFRESH_MS = 3000;
const THUMB_REFRESH_MS = 30000;

const STATE_LABELS = { online: "online", connecting: "connecting", offline: "offline", stopped: "stopped" };

function describe(camera) {
  const parts = [];
  if (camera.codec) parts.push(camera.codec === "hevc" ? "H.265" : "H.264");
  if (camera.width && camera.height) parts.push(`${camera.width}×${camera.height}`);
  if (camera.fps) parts.push(`${Math.round(camera.fps)} fps`);
  return parts.join(" · ");
}

export class CameraList extends EventTarget {
  #root;
  #items = new Map(); // id -> {li, ...parts}
  #timer = null;
  #running = false;
  #thumbsAt = 0;
  #onWall = new Set();
  #events = null;
  #maskEvents = new Map(); // camera id -> {known, at}: camera.mask_position events, newest
  #onEvent = (event) => this.#maskPosition(event.detail);
  cameras = [];

  constructor(root, { events = null } = {}) {
    super();
    this.#root = root;
    this.#events = events;
  }

  start() {
    this.#running = true;
    this.#events?.addEventListener("event", this.#onEvent);
    const tick = async () => {
      await this.refresh();
      if (this.#running) this.#timer = setTimeout(tick, REFRESH_MS);
    };
    tick();
  }

  /** Stop refreshing, also when a refresh is in flight (sign-out, leaving the live view). */
  stop() {
    this.#running = false;
    clearTimeout(this.#timer);
    this.#events?.removeEventListener("event", this.#onEvent);
  }

  /** camera.mask_position {known}: the camera's masks can (not) be placed on its picture. */
  #maskPosition(event) {
    if (event?.kind !== "camera.mask_position" || !event.camera) return;
    const known = event.detail?.known !== false;
    this.#maskEvents.set(event.camera, { known, at: performance.now() });
    const camera = this.cameras.find((c) => c.id === event.camera);
    if (!camera || camera.mask_position_known === known) return;
    camera.mask_position_known = known;
    this.dispatchEvent(new CustomEvent("update", { detail: this.cameras }));
  }

  async refresh() {
    const asked = performance.now();
    try {
      this.cameras = await listCameras();
      // An event newer than this answer's question says more than the answer.
      for (const camera of this.cameras) {
        const seen = this.#maskEvents.get(camera.id);
        if (seen && seen.at > asked) camera.mask_position_known = seen.known;
      }
    } catch (err) {
      this.dispatchEvent(new CustomEvent("error", { detail: err }));
      return;
    }
    this.dispatchEvent(new CustomEvent("error", { detail: null }));
    const thumbs = performance.now() - this.#thumbsAt > THUMB_REFRESH_MS;
    if (thumbs) this.#thumbsAt = performance.now();
    this.#render(thumbs);
    this.dispatchEvent(new CustomEvent("update", { detail: this.cameras }));
  }

  /** Mark the cameras shown on the wall. */
  setOnWall(ids) {
    this.#onWall = ids;
    for (const [id, item] of this.#items) item.li.classList.toggle("on-wall", ids.has(id));
  }

  #render(refreshThumbs) {
    const seen = new Set();
    const sorted = [...this.cameras].sort((a, b) => a.area.localeCompare(b.area) || a.name.localeCompare(b.name));
    sorted.forEach((camera, position) => {
      seen.add(camera.id);
      let item = this.#items.get(camera.id);
      if (!item) {
        item = this.#create(camera);
        this.#items.set(camera.id, item);
      }
      this.#fill(item, camera, refreshThumbs);
      if (this.#root.children[position] !== item.li) this.#root.insertBefore(item.li, this.#root.children[position] || null);
    });
    for (const [id, item] of this.#items) {
      if (!seen.has(id)) {
        item.li.remove();
        this.#items.delete(id);
      }
    }
  }

  #create(camera) {
    const li = document.createElement("li");
    li.className = "camera";
    li.dataset.cameraId = camera.id;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "camera-button";
    button.addEventListener("click", () => this.dispatchEvent(new CustomEvent("select", { detail: camera.id })));
    const thumb = document.createElement("img");
    thumb.className = "camera-thumb";
    thumb.alt = "";
    thumb.width = 96;
    thumb.height = 54;
    thumb.addEventListener("error", () => thumb.removeAttribute("src"));
    const text = document.createElement("span");
    text.className = "camera-text";
    const name = document.createElement("span");
    name.className = "camera-name";
    const meta = document.createElement("span");
    meta.className = "camera-meta";
    const error = document.createElement("span");
    error.className = "camera-error";
    text.append(name, meta, error);
    const badge = document.createElement("span");
    badge.className = "badge";
    button.append(thumb, text, badge);
    li.append(button);
    return { li, button, thumb, name, meta, error, badge, state: null };
  }

  #fill(item, camera, refreshThumbs) {
    const state = camera.state;
    item.li.dataset.state = state;
    item.li.classList.toggle("on-wall", this.#onWall.has(camera.id));
    item.name.textContent = camera.name || camera.id;
    const details = describe(camera);
    item.error.textContent = state !== "online" && camera.last_error ? camera.last_error : "";
    const masked = camera.masks ? `privacy-masked (${camera.masks})` : "";
    item.meta.textContent = [camera.area, details, masked].filter(Boolean).join(" · ");
    item.li.dataset.masked = camera.masks ? "true" : "false";
    item.button.title = [item.name.textContent, item.meta.textContent, item.error.textContent].filter(Boolean).join("\n");
    item.badge.textContent = STATE_LABELS[state] || state;
    item.badge.dataset.state = state;
    const label = `${camera.name || camera.id}, ${camera.area}, ${item.badge.textContent}`;
    item.button.setAttribute("aria-label", `Show ${label}`);
    const cameOnline = state === "online" && item.state !== "online";
    if (state === "online" && (refreshThumbs || cameOnline)) {
      item.thumb.src = `${snapshotUrl(camera.id, 192)}&t=${Date.now()}`;
    } else if (state !== "online") {
      item.thumb.removeAttribute("src");
    }
    item.state = state;
  }
}
