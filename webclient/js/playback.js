// The Playback page (action playback.view): pick a camera, a time and a span; the
// timeline shows what was recorded; play, pause, 1×/2×/4×, seek by clicking the timeline,
// a clock with the wall-clock time of the frame shown. The playlist (the audited request)
// is fetched only when the user plays or picks a moment, not when the page opens.

import { listCameras, listRecordings, recordingsPlaylistUrl } from "./api.js";
import { PlayerError, RecordingPlayer, piecesFromTimeline } from "./recording-player.js";
import { can } from "./session.js";
import { Timeline, clockText } from "./timeline.js";

const SPANS = [
  { label: "1 h", seconds: 3600 },
  { label: "6 h", seconds: 6 * 3600 },
  { label: "24 h", seconds: 24 * 3600 },
];
const SPEEDS = [1, 2, 4];
const REFRESH_MS = 15000;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** Epoch seconds as a datetime-local value in the browser's time zone. */
function localInput(seconds) {
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function dateTimeText(seconds) {
  const day = new Date(seconds * 1000).toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
  return `${day} ${clockText(seconds)}`;
}

function durationText(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

const now = () => Date.now() / 1000;

export class PlaybackPage {
  #root;
  #user;
  #ui = {};
  #timeline;
  #player;
  #cameras = [];
  #range = null; // {camera, from, to}: what the timeline shows
  #items = [];
  #position = null; // wall clock of the frame shown, or where playback will begin
  #speed = 1;
  #generation = 0; // a newer query or seek makes older answers stale
  #refreshTimer = null;
  #frameRequest = null;
  #shown = false;

  constructor(root, { user }) {
    this.#root = root;
    this.#user = user;
    this.#build();
  }

  async show() {
    this.#shown = true;
    this.#root.hidden = false;
    const wanted = new URLSearchParams(window.location.hash.split("?")[1] || "").get("camera");
    const generation = ++this.#generation;
    this.#setState("loading");
    this.#message("Loading cameras…", "status");
    let cameras;
    try {
      cameras = await listCameras();
    } catch (err) {
      if (generation === this.#generation) this.#fail(err, "Cannot list the cameras");
      return;
    }
    if (generation !== this.#generation) return;
    this.#cameras = [...cameras].sort((a, b) => a.area.localeCompare(b.area) || (a.name || a.id).localeCompare(b.name || b.id));
    const select = this.#ui.camera;
    const previous = wanted || select.value;
    select.replaceChildren(
      ...this.#cameras.map((c) =>
        el("option", { value: c.id }, `${c.name || c.id} · ${c.area}${c.recording === false ? " (not recorded)" : ""}`),
      ),
    );
    if (this.#cameras.some((c) => c.id === previous)) select.value = previous;
    if (!this.#cameras.length) {
      this.#setState("empty");
      this.#message("No cameras are shared with this account.", "status");
      return;
    }
    if (!this.#ui.from.value) this.#lastSpan();
    this.#query();
  }

  hide() {
    this.#shown = false;
    this.#generation++;
    this.#stopPlayer();
    clearTimeout(this.#refreshTimer);
    this.#root.hidden = true;
  }

  destroy() {
    this.hide();
    this.#timeline.destroy();
    this.#root.replaceChildren();
  }

  // -- building -------------------------------------------------------------------------

  #build() {
    const ui = this.#ui;
    ui.camera = el("select", { name: "camera", id: "playback-camera" });
    ui.from = el("input", { name: "from", type: "datetime-local", step: "60", required: true });
    ui.span = el("select", { name: "span" }, ...SPANS.map((s) => el("option", { value: String(s.seconds) }, s.label)));
    ui.latest = el("button", { type: "button", class: "secondary", title: "Show the last hours up to now" }, "Latest");
    ui.latest.addEventListener("click", () => {
      this.#lastSpan();
      this.#query();
    });
    ui.form = el(
      "form",
      { class: "panel form-row playback-form", "aria-label": "Camera and time range" },
      el("label", {}, "Camera", ui.camera),
      el("label", {}, "From", ui.from),
      el("label", {}, "Span", ui.span),
      el("button", { type: "submit", class: "primary" }, "Show"),
      ui.latest,
    );
    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#query();
    });
    for (const input of [ui.camera, ui.span]) input.addEventListener("change", () => this.#query());

    ui.video = el("video", { class: "playback-video", muted: true, playsInline: true, disablePictureInPicture: true });
    ui.video.muted = true;
    ui.overlay = el("p", { class: "playback-overlay", hidden: true });
    ui.stage = el("div", { class: "playback-stage" }, ui.video, ui.overlay);

    ui.play = el("button", { type: "button", class: "playback-play primary", disabled: true }, "Play");
    ui.play.addEventListener("click", () => this.#togglePlay());
    ui.speeds = el(
      "div",
      { class: "playback-speeds", role: "group", "aria-label": "Playback speed" },
      ...SPEEDS.map((s) => {
        const b = el("button", { type: "button", dataset: { speed: String(s) }, "aria-pressed": String(s === 1) }, `${s}×`);
        b.addEventListener("click", () => this.#setSpeed(s));
        return b;
      }),
    );
    ui.clock = el("output", { class: "playback-clock", "aria-label": "Time of the picture shown" }, "–");
    ui.live = el("a", { class: "button-link playback-live", href: "#/live", hidden: !can(this.#user, "live.view") }, "Jump to live");
    // "Incident": open one on the shown camera at the moment the picture shows (incidents.js)
    ui.incident = el("button", { type: "button", class: "playback-incident", hidden: !can(this.#user, "incident.open") }, "Incident");
    ui.incident.addEventListener("click", () => {
      if (!this.#range || this.#position === null) return;
      ui.incident.dispatchEvent(new CustomEvent("citygate:incident", { bubbles: true, detail: { camera: this.#range.camera, at: this.#position } }));
    });
    const controls = el("div", { class: "playback-controls" }, ui.play, ui.speeds, ui.clock, ui.live, ui.incident);

    ui.timelineRoot = el("div", { id: "playback-timeline" });
    this.#timeline = new Timeline(ui.timelineRoot);
    this.#timeline.addEventListener("seek", (event) => this.#seek(event.detail));
    ui.status = el("p", { class: "page-message", role: "status" });
    ui.alert = el("p", { class: "page-message", role: "alert" });
    ui.summary = el("span", { class: "page-count" });

    this.#player = new RecordingPlayer(ui.video);
    this.#player.addEventListener("error", (event) => this.#playbackFailed(event.detail));
    const video = ui.video;
    video.addEventListener("play", () => this.#syncPlay());
    video.addEventListener("pause", () => this.#syncPlay());
    video.addEventListener("playing", () => this.#setState("playing"));
    video.addEventListener("ended", () => this.#ended());
    video.addEventListener("seeked", () => this.#track());
    video.addEventListener("timeupdate", () => this.#track());

    this.#root.classList.add("playback-page");
    this.#root.replaceChildren(
      el("div", { class: "page-head" }, el("h2", { id: "playback-heading" }, "Playback"), ui.summary),
      ui.form,
      ui.alert,
      ui.stage,
      controls,
      ui.timelineRoot,
      ui.status,
    );
  }

  // -- the range and its timeline -----------------------------------------------------

  #lastSpan() {
    const span = Number(this.#ui.span.value);
    const end = Math.ceil(now() / 60) * 60;
    this.#ui.from.value = localInput(end - span);
  }

  #readRange() {
    const from = new Date(this.#ui.from.value).getTime() / 1000;
    if (!Number.isFinite(from)) return null;
    return { camera: this.#ui.camera.value, from, to: from + Number(this.#ui.span.value) };
  }

  /** Show the chosen camera and range: stop playing, fetch the timeline. */
  async #query() {
    const range = this.#readRange();
    if (!range || !range.camera) return;
    const generation = ++this.#generation;
    this.#stopPlayer();
    this.#range = range;
    this.#position = null;
    this.#items = [];
    this.#updateLiveLink();
    this.#timeline.setRange(range.from, range.to);
    this.#timeline.setItems([]);
    this.#timeline.setPosition(null);
    this.#showClock(null);
    this.#overlay("");
    if (range.from >= now()) {
      this.#setState("empty");
      this.#message("That time is in the future: nothing is recorded yet.", "status");
      return;
    }
    this.#setState("loading");
    this.#message("Loading the recordings…", "status");
    if (!(await this.#refresh(generation))) return;
    const first = this.#items.find((i) => i.kind === "segment");
    this.#position = first ? Math.max(first.start, range.from) : null;
    this.#timeline.setPosition(this.#position);
    if (!first) {
      this.#setState("empty");
      const name = this.#cameraName();
      const text = `No recordings of ${name} between ${dateTimeText(range.from)} and ${dateTimeText(Math.min(range.to, now()))}.`;
      this.#overlay(text);
      this.#message(text, "status");
      return;
    }
    this.#setState("ready");
    this.#message("Press Play, or click on the timeline to play from that moment.", "status");
  }

  /** Fetch the timeline of the current range again; false when it failed or went stale. */
  async #refresh(generation = this.#generation) {
    clearTimeout(this.#refreshTimer);
    const range = this.#range;
    const until = Math.min(range.to, now());
    let answer;
    try {
      answer = until > range.from ? await listRecordings(range.camera, range.from, until) : { items: [] };
    } catch (err) {
      if (generation === this.#generation) this.#fail(err, "Cannot read the recordings");
      return false;
    }
    if (generation !== this.#generation) return false;
    this.#items = answer.items;
    this.#timeline.setItems(this.#items, now());
    const recorded = this.#items.filter((i) => i.kind === "segment").reduce((sum, i) => sum + i.duration, 0);
    this.#ui.summary.textContent = recorded ? `${durationText(recorded)} recorded in this range` : "";
    if (this.#shown && range.to > now()) this.#refreshTimer = setTimeout(() => this.#refresh(), REFRESH_MS);
    return true;
  }

  // -- playing ----------------------------------------------------------------------------

  /** First recorded moment at or after `wall` in the timeline, or null. */
  #recordedFrom(wall) {
    for (const item of this.#items) {
      if (item.kind === "segment" && item.end > wall) return Math.max(item.start, wall);
    }
    return null;
  }

  /** Load the playlist of the range so that it begins at `wall`; plays if `play`. */
  async #open(wall, play) {
    const range = this.#range;
    const generation = ++this.#generation;
    this.#stopPlayer();
    this.#setState("loading");
    this.#message("Loading the recording…", "status");
    if (!(await this.#refresh(generation))) return;
    const begin = this.#recordedFrom(wall);
    if (begin === null) {
      this.#setState(this.#items.some((i) => i.kind === "segment") ? "ready" : "empty");
      this.#message(`Nothing is recorded after ${dateTimeText(wall)} in this range.`, "status");
      return;
    }
    const until = Math.min(range.to, now());
    const url = recordingsPlaylistUrl(range.camera, range.from, until, begin > range.from ? begin : null);
    try {
      await this.#player.load(url, piecesFromTimeline(this.#items), begin);
    } catch (err) {
      if (generation !== this.#generation) return;
      this.#player.close();
      this.#setState("error");
      this.#message(err instanceof PlayerError ? err.message : `The recording cannot be played: ${err.message}`, "alert");
      return;
    }
    if (generation !== this.#generation) return;
    this.#position = begin;
    this.#timeline.setPosition(begin);
    this.#applySpeed();
    this.#message(this.#gapNote(wall, begin), "status");
    this.#setState(play ? "loading" : "paused");
    this.#ui.play.disabled = false;
    this.#watchFrames();
    if (play) this.#ui.video.play().catch(() => this.#syncPlay());
  }

  /** "No recording at 10:03 (camera offline): playing from 10:05" when `wall` was in a gap. */
  #gapNote(wall, begin) {
    if (begin - wall < 1) return "";
    const gap = this.#items.find((i) => i.kind === "gap" && i.start <= wall && wall < i.end);
    const why = gap?.reason ? ` (${gap.reason})` : "";
    return `No recording at ${clockText(wall)}${why}: playing from ${clockText(begin)}.`;
  }

  #togglePlay() {
    const video = this.#ui.video;
    if (!this.#player.loaded) {
      if (this.#position !== null) this.#open(this.#position, true);
      return;
    }
    if (video.paused || video.ended) video.play().catch(() => this.#syncPlay());
    else video.pause();
  }

  /** Show the picture at wall-clock `wall`: within the loaded playlist, or load one. */
  #seek(wall) {
    if (!this.#range) return;
    if (!this.#player.loaded) {
      this.#open(wall, true);
      return;
    }
    const t = this.#player.timeFor(wall);
    if (t === null) {
      this.#open(wall, !this.#ui.video.paused || this.#ui.video.ended);
      return;
    }
    const begin = this.#player.wallAt(t);
    this.#message(this.#gapNote(wall, begin), "status");
    this.#position = begin;
    this.#timeline.setPosition(begin);
    this.#showClock(begin);
    this.#ui.video.currentTime = t;
  }

  /** The end of the playlist: go on with what was recorded since it was loaded, if anything. */
  async #ended() {
    this.#syncPlay();
    const end = this.#player.wallEnd;
    const generation = this.#generation;
    if (end === null || !(await this.#refresh(generation))) return;
    if (this.#recordedFrom(end + 0.5) !== null) {
      this.#open(end, true);
      return;
    }
    this.#setState("ended");
    this.#message("End of the recordings in this range.", "status");
  }

  #setSpeed(speed) {
    this.#speed = speed;
    this.#ui.speeds.querySelectorAll("[data-speed]").forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.speed) === speed)));
    this.#applySpeed();
  }

  #applySpeed() {
    this.#ui.video.defaultPlaybackRate = this.#speed;
    this.#ui.video.playbackRate = this.#speed;
  }

  #syncPlay() {
    const video = this.#ui.video;
    const playing = this.#player.loaded && !video.paused && !video.ended;
    this.#ui.play.textContent = playing ? "Pause" : "Play";
    this.#ui.play.setAttribute("aria-label", playing ? "Pause" : "Play");
    if (this.#player.loaded && !playing && this.#root.dataset.state === "playing") this.#setState("paused");
  }

  /** Follow the frames shown: the clock and the timeline's cursor. */
  #watchFrames() {
    const video = this.#ui.video;
    if (!("requestVideoFrameCallback" in video)) return;
    const onFrame = (_now, meta) => {
      this.#track(meta.mediaTime);
      this.#frameRequest = video.requestVideoFrameCallback(onFrame);
    };
    this.#frameRequest = video.requestVideoFrameCallback(onFrame);
  }

  #track(mediaTime = this.#ui.video.currentTime) {
    if (!this.#player.loaded || this.#ui.video.seeking) return;
    const wall = this.#player.wallAt(mediaTime);
    if (wall === null) return;
    this.#position = wall;
    this.#timeline.setPosition(wall);
    this.#showClock(wall);
  }

  #showClock(wall) {
    const clock = this.#ui.clock;
    if (wall === null) {
      clock.textContent = "–";
      delete clock.dataset.wallclock;
      return;
    }
    clock.textContent = dateTimeText(wall);
    clock.dataset.wallclock = wall.toFixed(3);
  }

  #stopPlayer() {
    if (this.#frameRequest !== null) this.#ui.video.cancelVideoFrameCallback?.(this.#frameRequest);
    this.#frameRequest = null;
    this.#player.close();
    this.#ui.play.disabled = this.#position === null;
    this.#syncPlay();
  }

  #playbackFailed(message) {
    this.#setState("error");
    this.#message(`${message[0].toUpperCase()}${message.slice(1)}.`, "alert");
  }

  // -- messages ---------------------------------------------------------------------------

  #fail(err, what) {
    if (err.status === 401) return; // the app returns to the sign-in screen
    this.#setState(err.status === 403 ? "refused" : "error");
    this.#message(err.status === 403 ? err.message : `${what}: ${err.message}.`, "alert");
    this.#overlay(err.status === 403 && this.#range ? `Recordings of ${this.#cameraName()} are not available to this account.` : "");
  }

  #message(text, kind) {
    this.#ui.alert.textContent = kind === "alert" ? text : "";
    this.#ui.status.textContent = kind === "alert" ? "" : text;
  }

  #overlay(text) {
    this.#ui.overlay.textContent = text;
    this.#ui.overlay.hidden = !text;
  }

  #setState(state) {
    this.#root.dataset.state = state;
    this.#ui.play.disabled = this.#position === null && !this.#player.loaded;
    this.#ui.speeds.querySelectorAll("button").forEach((b) => (b.disabled = state === "refused"));
  }

  #cameraName() {
    const camera = this.#cameras.find((c) => c.id === this.#range?.camera);
    return camera ? camera.name || camera.id : this.#range?.camera || "";
  }

  #updateLiveLink() {
    this.#ui.live.href = `#/live?camera=${encodeURIComponent(this.#range.camera)}`;
  }
}
