// LL-HLS playback of one camera: hls.js over MSE (loaded only when needed), or the
// browser's own HLS where there is no MSE (iPhone Safari).

import { hlsUrl } from "./api.js";

/** hls.js is installed with npm into webclient/node_modules (see webclient/package.json). */
export const HLS_MODULE_URL = new URL("../node_modules/hls.js/dist/hls.mjs", import.meta.url).href;
const HLS_WORKER_URL = new URL("../node_modules/hls.js/dist/hls.worker.js", import.meta.url).href;
const HEVC_MP4 = 'video/mp4; codecs="hvc1.1.6.L93.B0"';

async function loadHlsJs() {
  // The browser's module map caches the import: every tile shares one copy of the code.
  return (await import(HLS_MODULE_URL)).default;
}

function mediaSource() {
  return window.ManagedMediaSource || window.MediaSource;
}

function nativeHls(video) {
  return video.canPlayType("application/vnd.apple.mpegurl") !== "";
}

/** Can this browser play H.265 in fMP4 (through MSE or natively)? */
export function hevcSupported(video) {
  const ms = mediaSource();
  if (ms && ms.isTypeSupported(HEVC_MP4)) return true;
  return nativeHls(video) && video.canPlayType(HEVC_MP4) !== "";
}

export class HlsError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "HlsError";
    this.kind = kind; // 'unavailable' | 'playback'
  }
}

export class HlsPlayback {
  #hls = null;
  #video;
  #ended;
  #endedResolve;

  constructor(cameraId, video) {
    this.cameraId = cameraId;
    this.#video = video;
    this.#ended = new Promise((resolve) => (this.#endedResolve = resolve));
  }

  /** Attach the stream to the video element; throws HlsError('unavailable') if HLS cannot be played here. */
  async start() {
    const url = hlsUrl(this.cameraId);
    const video = this.#video;
    if (mediaSource()) {
      let Hls = null;
      try {
        Hls = await loadHlsJs();
      } catch {
        if (!nativeHls(video)) throw new HlsError("unavailable", "HLS fallback unavailable (hls.js is not installed)");
      }
      if (Hls && Hls.isSupported()) {
        this.#startHlsJs(Hls, url);
        return;
      }
    }
    if (!nativeHls(video)) throw new HlsError("unavailable", "this browser cannot play HLS");
    video.addEventListener("error", () => this.#endedResolve(`HLS playback error (${video.error?.message || video.error?.code})`), {
      once: true,
    });
    video.addEventListener("ended", () => this.#endedResolve("HLS stream ended"), { once: true });
    video.src = url;
  }

  #startHlsJs(Hls, url) {
    const hls = (this.#hls = new Hls({
      lowLatencyMode: true,
      workerPath: HLS_WORKER_URL,
      backBufferLength: 10,
      manifestLoadingMaxRetry: 1,
      levelLoadingMaxRetry: 2,
      fragLoadingMaxRetry: 2,
    }));
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      const status = data.response?.code;
      const what = data.details || data.type;
      this.#endedResolve(status ? `HLS ${what} (HTTP ${status})` : `HLS ${what}`);
    });
    hls.loadSource(url);
    hls.attachMedia(this.#video);
  }

  /** Resolves with a reason when playback fails fatally. */
  ended() {
    return this.#ended;
  }

  close() {
    this.#endedResolve("closed");
    if (this.#hls) {
      this.#hls.destroy();
      this.#hls = null;
    } else if (this.#video.src) {
      this.#video.removeAttribute("src");
      this.#video.load();
    }
  }
}
