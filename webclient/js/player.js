// One camera in one <video>: WebRTC (WHEP) first, LL-HLS when WebRTC cannot be used,
// and automatic recovery with backoff when the picture goes away.
//
// Status reported through onStatus({phase, text, detail}):
//   phase 'connecting' | 'live' | 'offline' | 'unsupported'

import { FrameWatch } from "./frame-watch.js";
import { HlsError, HlsPlayback, hevcSupported } from "./hls-playback.js";

/** Can this browser receive H.265 over WebRTC? (The gateway negotiates it when offered.) */
function webrtcHevcSupported() {
  const caps = globalThis.RTCRtpReceiver?.getCapabilities?.("video");
  return Boolean(caps?.codecs?.some((c) => c.mimeType.toLowerCase() === "video/h265"));
}
import { WebRtcError, WhepSession, webRtcSupported } from "./whep.js";

const FIRST_FRAME_WEBRTC_MS = 5000;
const FIRST_FRAME_HLS_MS = 15000; // the gateway may wait a whole GOP for the first segment
const STALL_MS = 6000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 10000;
/** A playback that lasted this long resets the backoff. */
const STABLE_MS = 10000;
/** After WebRTC failed to connect (ICE, no frame), use HLS this long before trying WebRTC again. */
const WEBRTC_RETRY_MS = 60000;

export const HEVC_MESSAGE = "This camera sends H.265, which this browser cannot play";

/** An attempt's outcome: why it ended, and whether the picture was shown. */
class Outcome {
  constructor(reason, { played = 0, final = false } = {}) {
    this.reason = reason;
    this.played = played; // ms of picture
    this.final = final; // retrying cannot help until the camera changes
  }
}

export class Player {
  #video;
  #cameraId;
  #onStatus;
  #camera = null; // the latest camera info from /api/cameras
  #stopped = false;
  #current = null; // the running WhepSession or HlsPlayback
  #watch = null;
  #wake = null; // resolves the backoff sleep early
  #webrtcBroken = null; // reason WebRTC does not work here, once known
  #webrtcRetryAt = Infinity; // when a WebRTC failure may be forgotten
  #hevc = false;
  #hlsUnavailable = null;

  constructor(video, cameraId, { onStatus = () => {}, camera = null, profile = "main" } = {}) {
    this.#video = video;
    this.#cameraId = cameraId;
    this.wantedProfile = profile; // "sub" for small tiles (WebRTC only; HLS sends main)
    this.profile = null; // the stream playing now
    this.#onStatus = onStatus;
    this.#camera = camera;
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    if (!webRtcSupported()) this.#webrtcBroken = "this browser has no WebRTC";
    this.transport = null; // 'webrtc' | 'hls' while live
    this.#run();
  }

  /** New info about the camera; a camera coming back online ends the backoff wait. */
  cameraChanged(camera) {
    const wasOnline = this.#camera?.state === "online";
    this.#camera = camera;
    if (camera?.codec) this.#hevc = camera.codec === "hevc";
    if (camera?.state === "online" && !wasOnline && this.#wake) this.#wake();
  }

  /** Stop playing and release the session on the gateway. */
  stop() {
    this.#stopped = true;
    this.#release();
    if (this.#wake) this.#wake();
    this.#video.srcObject = null;
  }

  #status(phase, text, detail = "") {
    if (this.#stopped) return;
    console.info(`camera ${this.#cameraId}: ${text}${detail ? ` (${detail})` : ""}`);
    this.#onStatus({ phase, text, detail, transport: this.transport });
  }

  #release() {
    this.transport = null;
    this.profile = null;
    if (this.#watch) this.#watch.stop();
    this.#watch = null;
    if (this.#current) this.#current.close();
    this.#current = null;
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    }).finally(() => (this.#wake = null));
  }

  #offlineReason(fallback) {
    const cam = this.#camera;
    if (cam && cam.state !== "online") return cam.last_error || cam.state;
    return fallback;
  }

  async #run() {
    let backoff = BACKOFF_MIN_MS;
    while (!this.#stopped) {
      this.#status("connecting", "connecting");
      let outcome;
      try {
        outcome = await this.#attempt();
      } catch (err) {
        outcome = new Outcome(err.message || String(err));
      }
      this.#release();
      if (this.#stopped) return;
      if (outcome.played >= STABLE_MS) backoff = BACKOFF_MIN_MS;
      if (outcome.final) {
        this.#status("unsupported", outcome.reason);
        await this.#sleep(BACKOFF_MAX_MS * 3);
        continue;
      }
      const seconds = Math.round(backoff / 1000);
      this.#status("offline", `offline: ${outcome.reason}`, `retrying in ${seconds} s`);
      await this.#sleep(backoff);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  }

  #webrtcFailed(reason) {
    console.warn(`camera ${this.#cameraId}: ${reason}; using HLS for ${WEBRTC_RETRY_MS / 1000} s`);
    this.#webrtcBroken = reason;
    this.#webrtcRetryAt = performance.now() + WEBRTC_RETRY_MS;
  }

  async #attempt() {
    if (this.#webrtcBroken && performance.now() > this.#webrtcRetryAt) this.#webrtcBroken = null;
    if (!this.#webrtcBroken && (!this.#hevc || webrtcHevcSupported())) {
      const outcome = await this.#tryWebRtc();
      if (outcome) return outcome;
    }
    if (this.#stopped) return new Outcome("stopped");
    return this.#tryHls();
  }

  /** Play over WebRTC; returns an Outcome, or null when HLS should be tried instead. */
  async #tryWebRtc() {
    const session = (this.#current = new WhepSession(this.#cameraId, this.wantedProfile));
    let stream;
    try {
      stream = await session.connect();
    } catch (err) {
      if (!(err instanceof WebRtcError)) throw err;
      return this.#webRtcRefused(err);
    }
    if (this.#stopped) return new Outcome("stopped");
    this.#video.srcObject = stream;
    this.#video.play().catch(() => {});
    const watch = (this.#watch = new FrameWatch(this.#video));
    const failed = session.ended();
    const first = await Promise.race([watch.firstFrame(FIRST_FRAME_WEBRTC_MS), failed.then(() => false)]);
    if (this.#stopped) return new Outcome("stopped");
    if (!first) {
      const state = session.connectionState;
      this.#webrtcFailed(state === "connected" ? "no WebRTC picture" : `WebRTC ${state}`);
      this.#release();
      this.#video.srcObject = null;
      return null;
    }
    this.profile = session.profile;
    return this.#live("webrtc", session.profile === "sub" ? "live · WebRTC · sub stream" : "live · WebRTC", watch, failed);
  }

  #webRtcRefused(err) {
    if (err.kind === "closed") return new Outcome("stopped");
    if (err.kind === "network") return new Outcome(err.message);
    if (err.kind === "unsupported") {
      this.#webrtcBroken = err.message; // for good: the browser will not grow WebRTC
      return null;
    }
    if (err.kind === "ice") {
      this.#webrtcFailed(err.message);
      return null;
    }
    // HTTP errors
    if (err.status === 409) {
      // The camera sends H.265 and this browser's offer could not carry it: LL-HLS (hvc1)
      // or a plain message; WebRTC is tried again later in case the camera changes.
      this.#hevc = true;
      this.#webrtcFailed(err.message);
      return null;
    }
    if (err.status === 401 || err.status === 403 || err.status === 404) return new Outcome(err.message);
    if (err.status === 503 && this.#camera?.state !== "online") return new Outcome(this.#offlineReason(err.message));
    if (err.status === 503 && /no picture/i.test(err.message)) return new Outcome(err.message);
    console.warn(`camera ${this.#cameraId}: WebRTC refused (${err.status} ${err.message}); trying HLS`);
    return null; // viewer limits, a broken WHEP endpoint, ...: HLS may still work
  }

  async #tryHls() {
    if (this.#hevc && !hevcSupported(this.#video)) return new Outcome(HEVC_MESSAGE, { final: true });
    if (this.#hlsUnavailable) {
      return new Outcome(`${this.#webrtcBroken || "WebRTC unavailable"}; ${this.#hlsUnavailable}`);
    }
    const playback = (this.#current = new HlsPlayback(this.#cameraId, this.#video));
    this.#video.srcObject = null;
    this.#status("connecting", "connecting · HLS");
    try {
      await playback.start();
    } catch (err) {
      if (err instanceof HlsError && err.kind === "unavailable") {
        this.#hlsUnavailable = err.message;
        return new Outcome(`${this.#webrtcBroken || "WebRTC unavailable"}; ${err.message}`);
      }
      throw err;
    }
    if (this.#stopped) return new Outcome("stopped");
    this.#video.play().catch(() => {});
    const watch = (this.#watch = new FrameWatch(this.#video));
    const failed = playback.ended();
    const first = await Promise.race([watch.firstFrame(FIRST_FRAME_HLS_MS), failed.then(() => false)]);
    if (this.#stopped) return new Outcome("stopped");
    if (!first) {
      const reason = await Promise.race([failed, Promise.resolve("no HLS picture")]);
      return new Outcome(this.#offlineReason(reason));
    }
    this.profile = "main";
    return this.#live("hls", "live · HLS", watch, failed);
  }

  async #live(transport, text, watch, failed) {
    this.transport = transport;
    const started = performance.now();
    this.#status("live", text);
    const reason = await Promise.race([failed, watch.stalled(STALL_MS)]);
    return new Outcome(this.#offlineReason(reason), { played: performance.now() - started });
  }
}
