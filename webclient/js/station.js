// The station page: what a rescue or crisis-management station sees. Cameras pushed to it
// open by themselves in a full-width grid, each with the incident reason and a countdown;
// a short chime (WebAudio, no sound file) announces a new push; a tile goes away when its
// push is revoked or expires. The pushes come over the events channel; /api/pushes/mine is
// read again every SYNC_MS as a safety net (and keeps the session from idling out).

import { listCameras, request } from "./api.js";
import { Tile } from "./tile.js";

const SYNC_MS = 30000;
const TICK_MS = 1000;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** "12:05" or "1:02:03" left until `seconds`. */
export function countdownText(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** A short two-tone chime made with WebAudio. */
class Chime {
  #ctx = null;
  played = 0;

  get state() {
    return this.#ctx ? this.#ctx.state : "none";
  }

  async play() {
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    if (!AudioContextClass) return false;
    try {
      if (!this.#ctx) this.#ctx = new AudioContextClass();
      const ctx = this.#ctx;
      if (ctx.state === "suspended") await ctx.resume();
      const start = ctx.currentTime + 0.02;
      [880, 660, 880].forEach((frequency, i) => {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        const t = start + i * 0.18;
        osc.type = "sine";
        osc.frequency.value = frequency;
        gain.gain.setValueAtTime(0.0001, t);
        gain.gain.exponentialRampToValueAtTime(0.4, t + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.16);
        osc.connect(gain).connect(ctx.destination);
        osc.start(t);
        osc.stop(t + 0.17);
      });
      this.played += 1;
      return ctx.state === "running";
    } catch (err) {
      console.warn(`station: cannot play the chime: ${err.message || err}`);
      return false;
    }
  }

  close() {
    if (this.#ctx) this.#ctx.close().catch(() => {});
    this.#ctx = null;
  }
}

export class StationPage {
  #root;
  #events;
  #pushes = new Map(); // push id -> push (active, for this station)
  #seen = new Set(); // push ids already announced with the chime
  #tiles = new Map(); // camera id -> {tile, info, reason, countdown}
  #cameras = new Map(); // camera id -> camera info from /api/cameras
  #skew = 0; // server clock minus ours, in seconds
  #timers = [];
  #listeners = [];
  #grid = null;
  #status = null;
  #chime = new Chime();
  #shown = false;

  constructor(root, { events }) {
    this.#root = root;
    this.#events = events;
  }

  show() {
    this.#shown = true;
    const root = this.#root;
    root.classList.add("station");
    const head = el("div", "station-head");
    head.append(el("h2", "station-title", "Pushed cameras"));
    this.#status = el("p", "station-status");
    this.#status.setAttribute("role", "status");
    head.append(this.#status);
    this.#grid = el("div", "station-grid");
    this.#grid.setAttribute("aria-label", "Cameras pushed to this station");
    const empty = el("div", "station-empty");
    empty.append(
      el("p", "station-empty-text", "No cameras are pushed to this station right now."),
      el("p", "station-empty-detail", "When the monitoring centre sends cameras for an incident, they open here by themselves."),
    );
    root.replaceChildren(head, this.#grid, empty);
    root.hidden = false;

    this.#on("state", (event) => this.#applyState(event.detail));
    this.#on("event", (event) => this.#applyEvent(event.detail));
    this.#on("open", () => this.#setStatus());
    this.#on("close", () => this.#setStatus());
    this.#on("session-ended", () => this.#resync()); // its 401 leads back to sign-in
    if (this.#events.state) this.#applyState(this.#events.state);
    this.#timers.push(setInterval(() => this.#tick(), TICK_MS));
    this.#timers.push(setInterval(() => this.#resync(), SYNC_MS));
    this.#resync();
    this.#setStatus();
    this.#render();
  }

  hide() {
    this.#shown = false;
    this.#timers.forEach((t) => clearInterval(t));
    this.#timers = [];
    this.#listeners.forEach(([type, fn]) => this.#events.removeEventListener(type, fn));
    this.#listeners = [];
    for (const { tile } of this.#tiles.values()) tile.release();
    this.#tiles.clear();
    this.#pushes.clear();
    this.#chime.close();
    this.#root.replaceChildren();
    this.#root.hidden = true;
  }

  /** For tests and the console. */
  get info() {
    return {
      cameras: [...this.#tiles.keys()],
      pushes: [...this.#pushes.keys()],
      chimes: this.#chime.played,
      audio: this.#chime.state,
    };
  }

  #on(type, fn) {
    this.#events.addEventListener(type, fn);
    this.#listeners.push([type, fn]);
  }

  #now() {
    return Date.now() / 1000 + this.#skew;
  }

  #setStatus() {
    if (!this.#status) return;
    const connected = this.#events.connected;
    const n = this.#pushes.size;
    const incidents = n === 1 ? "1 incident" : `${n} incidents`;
    this.#status.textContent = connected ? `Connected · ${incidents}` : "Reconnecting to the gateway…";
    this.#root.dataset.connected = String(connected);
  }

  #applyState({ now, pushes }) {
    if (typeof now === "number") this.#skew = now - Date.now() / 1000;
    this.#replace(pushes || []);
  }

  async #resync() {
    try {
      const body = await (await request("/api/pushes/mine")).json();
      if (!this.#shown) return;
      this.#applyState(body);
    } catch {
      // offline or signed out: the events channel and api.js deal with it
    }
  }

  #replace(pushes) {
    const fresh = new Map(pushes.filter((p) => p.state === "active").map((p) => [p.id, p]));
    const announce = [...fresh.keys()].some((id) => !this.#seen.has(id));
    this.#pushes = fresh;
    this.#render();
    if (announce) this.#announce();
  }

  #applyEvent({ kind, detail }) {
    if (!kind.startsWith("push.") || !detail || typeof detail.id !== "number") return;
    if (kind === "push.created" || kind === "push.extended") {
      if (detail.state !== "active") return;
      const isNew = !this.#pushes.has(detail.id) && !this.#seen.has(detail.id);
      this.#pushes.set(detail.id, detail);
      this.#render();
      if (isNew) this.#announce();
    } else if (kind === "push.revoked" || kind === "push.expired") {
      this.#pushes.delete(detail.id);
      this.#render();
    }
  }

  #announce() {
    for (const id of this.#pushes.keys()) this.#seen.add(id);
    this.#chime.play().then(() => {
      this.#root.dataset.chimes = String(this.#chime.played);
      this.#root.dataset.audio = this.#chime.state;
    });
    this.#refreshCameraInfo();
  }

  async #refreshCameraInfo() {
    try {
      const cameras = await listCameras();
      this.#cameras = new Map(cameras.map((c) => [c.id, c]));
      for (const [id, entry] of this.#tiles) entry.tile.update(this.#cameras.get(id));
    } catch {
      // names stay the camera ids
    }
  }

  /** Per camera: the push that runs longest (its reason and expiry are shown). */
  #wanted() {
    const wanted = new Map();
    const now = this.#now();
    for (const push of this.#pushes.values()) {
      if (push.expires_at <= now) continue;
      for (const camera of push.cameras) {
        const current = wanted.get(camera);
        if (!current || push.expires_at > current.expires_at) wanted.set(camera, push);
      }
    }
    return wanted;
  }

  #render() {
    if (!this.#grid) return;
    const wanted = this.#wanted();
    for (const [camera, entry] of this.#tiles) {
      if (wanted.has(camera)) continue;
      entry.tile.release();
      entry.tile.element.remove();
      this.#tiles.delete(camera);
      console.info(`station: camera ${camera} is no longer pushed`);
    }
    for (const [camera, push] of wanted) {
      let entry = this.#tiles.get(camera);
      if (!entry) {
        entry = this.#makeTile(camera);
        this.#tiles.set(camera, entry);
        this.#grid.append(entry.tile.element);
        console.info(`station: camera ${camera} pushed (${push.reason})`);
      }
      entry.push = push;
      entry.reason.textContent = push.reason;
      entry.from.textContent = push.created_by ? `from ${push.created_by}` : "";
    }
    const n = this.#tiles.size;
    this.#grid.style.setProperty("--station-side", String(Math.max(1, Math.ceil(Math.sqrt(n)))));
    this.#root.dataset.cameras = String(n);
    this.#tick();
    this.#setStatus();
  }

  #makeTile(camera) {
    const tile = new Tile(this.#tiles.size, { onClear: () => {} });
    tile.element.dataset.cameraId = camera;
    const info = el("div", "station-info");
    const reason = el("span", "station-reason");
    const from = el("span", "station-from");
    const countdown = el("span", "station-countdown");
    countdown.setAttribute("aria-label", "time left");
    info.append(reason, from, countdown);
    tile.element.append(info);
    tile.assign(camera, this.#cameras.get(camera) || null);
    return { tile, info, reason, from, countdown, push: null };
  }

  #tick() {
    const now = this.#now();
    let expired = false;
    for (const entry of this.#tiles.values()) {
      const left = entry.push ? entry.push.expires_at - now : 0;
      if (left <= 0) expired = true;
      entry.countdown.textContent = `${countdownText(left)} left`;
      entry.countdown.dataset.seconds = String(Math.max(0, Math.round(left)));
      entry.countdown.classList.toggle("ending", left < 60);
    }
    if (expired) this.#render(); // the gateway ends the push too; do not wait for its word
  }
}
