// Plays one HLS VOD playlist of recordings (hls.js over MSE, loaded only when needed, or
// the browser's own HLS where there is no MSE) and maps the video's media time to the wall
// clock and back through the segments' program date-times.

import { HLS_MODULE_URL } from "./hls-playback.js";

const HLS_WORKER_URL = new URL("hls.worker.js", HLS_MODULE_URL).href;

export class PlayerError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "PlayerError";
    this.kind = kind; // 'unavailable' | 'playback' | 'superseded'
  }
}

function mediaSource() {
  return window.ManagedMediaSource || window.MediaSource;
}

function nativeHls(video) {
  return video.canPlayType("application/vnd.apple.mpegurl") !== "";
}

/** Pieces of media time with their wall-clock start, in media order: {start, duration, wall}. */
export function piecesFromTimeline(items) {
  const pieces = [];
  let start = 0;
  for (const item of items) {
    if (item.kind !== "segment") continue;
    pieces.push({ start, duration: item.duration, wall: item.start });
    start += item.duration;
  }
  return pieces;
}

export class RecordingPlayer extends EventTarget {
  #video;
  #hls = null;
  #fallback = [];
  #loads = 0;
  #onVideoError = () => this.#fail(`the recording cannot be played (${this.#video.error?.message || this.#video.error?.code})`);

  /** Events: 'error' (detail: message) when playback fails for good. */
  constructor(video) {
    super();
    this.#video = video;
  }

  /**
   * Play `url`, which begins at wall-clock `startAt` (or its start); `pieces` (see
   * piecesFromTimeline) map time where the browser plays HLS itself. Resolves once the
   * playlist is loaded; throws PlayerError when HLS cannot be played here.
   */
  async load(url, pieces, startAt = null) {
    this.close();
    const load = ++this.#loads;
    this.#fallback = pieces;
    const video = this.#video;
    if (mediaSource()) {
      let Hls = null;
      try {
        Hls = (await import(HLS_MODULE_URL)).default;
      } catch {
        if (!nativeHls(video)) throw new PlayerError("unavailable", "Recordings cannot be played: hls.js is not installed on the gateway.");
      }
      // close() or a newer load() came while this one waited: leave the video alone.
      if (load !== this.#loads) throw new PlayerError("superseded", "a newer recording was loaded");
      if (Hls && Hls.isSupported()) return this.#loadHlsJs(Hls, url);
    }
    if (!nativeHls(video)) throw new PlayerError("unavailable", "This browser cannot play HLS video.");
    await new Promise((resolve, reject) => {
      const done = () => {
        video.removeEventListener("loadedmetadata", done);
        video.removeEventListener("error", failed);
        video.addEventListener("error", this.#onVideoError);
        resolve();
      };
      const failed = () => {
        video.removeEventListener("loadedmetadata", done);
        const why = video.error?.message || `media error ${video.error?.code}`;
        reject(new PlayerError("playback", `The recording cannot be played (${why}).`));
      };
      video.addEventListener("loadedmetadata", done);
      video.addEventListener("error", failed, { once: true });
      video.src = url;
    });
    // Browsers differ in honouring EXT-X-START: begin at the moment asked for here.
    if (startAt !== null) {
      const t = this.timeFor(startAt);
      if (t !== null && Math.abs(video.currentTime - t) > 0.5) video.currentTime = t;
    }
  }

  #loadHlsJs(Hls, url) {
    const hls = (this.#hls = new Hls({
      workerPath: HLS_WORKER_URL,
      maxBufferLength: 30,
      backBufferLength: 60,
      manifestLoadingMaxRetry: 1,
      levelLoadingMaxRetry: 2,
      fragLoadingMaxRetry: 3,
    }));
    return new Promise((resolve, reject) => {
      let loading = true;
      hls.on(Hls.Events.LEVEL_LOADED, () => {
        loading = false;
        resolve();
      });
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (!data.fatal) return;
        const status = data.response?.code;
        const what = data.details || data.type;
        const message = `the recording cannot be played (${what}${status ? `, HTTP ${status}` : ""})`;
        if (loading) reject(new PlayerError("playback", `${message[0].toUpperCase()}${message.slice(1)}.`));
        else this.#fail(message);
        loading = false;
      });
      hls.loadSource(url);
      hls.attachMedia(this.#video);
    });
  }

  #fail(message) {
    this.dispatchEvent(new CustomEvent("error", { detail: message }));
  }

  /** The playlist's pieces as the player sees them now (hls.js refines their start times). */
  #pieces() {
    const details = this.#hls?.levels?.[Math.max(this.#hls.currentLevel, 0)]?.details;
    if (!details) return this.#fallback;
    return details.fragments
      .filter((f) => Number.isFinite(f.programDateTime))
      .map((f) => ({ start: f.start, duration: f.duration, wall: f.programDateTime / 1000 }));
  }

  get loaded() {
    return Boolean(this.#hls || this.#video.getAttribute("src"));
  }

  /** Wall-clock time (epoch seconds) at media time `t` (default: now), or null. */
  wallAt(t = this.#video.currentTime) {
    const pieces = this.#pieces();
    if (!pieces.length) return null;
    let piece = pieces[0];
    for (const p of pieces) {
      if (p.start > t + 1e-3) break;
      piece = p;
    }
    return piece.wall + Math.min(Math.max(t - piece.start, 0), piece.duration);
  }

  /**
   * Media time showing wall-clock `wall`: inside a recorded piece exactly, in a gap the
   * next recorded moment; null when nothing in this playlist is at or after `wall`.
   */
  timeFor(wall) {
    for (const p of this.#pieces()) {
      if (wall < p.wall) return p.start;
      if (wall < p.wall + p.duration) return p.start + (wall - p.wall);
    }
    return null;
  }

  /** Wall-clock end of the last recorded moment in this playlist, or null. */
  get wallEnd() {
    const last = this.#pieces().at(-1);
    return last ? last.wall + last.duration : null;
  }

  close() {
    this.#loads++; // a load() still waiting for hls.js gives up
    this.#video.removeEventListener("error", this.#onVideoError);
    if (this.#hls) {
      this.#hls.destroy();
      this.#hls = null;
    } else if (this.#video.getAttribute("src")) {
      this.#video.removeAttribute("src");
      this.#video.load();
    }
  }
}
