// One WHEP session: a receive-only peer connection for one camera's video.

import { ApiError, whepDelete, whepOffer } from "./api.js";

/** Seconds ICE gathering may take before the offer is sent with what was gathered. */
const GATHER_TIMEOUT_MS = 2000;

/** Why WebRTC could not start; `kind` is 'unsupported' | 'http' | 'network' | 'ice'. */
export class WebRtcError extends Error {
  constructor(kind, message, status = 0) {
    super(message);
    this.name = "WebRtcError";
    this.kind = kind;
    this.status = status;
  }
}

export function webRtcSupported() {
  return typeof window.RTCPeerConnection === "function";
}

function preferH264(transceiver) {
  const caps = window.RTCRtpReceiver?.getCapabilities?.("video");
  if (!caps || typeof transceiver.setCodecPreferences !== "function") return;
  const isH264 = (c) => c.mimeType.toLowerCase() === "video/h264";
  const h264 = caps.codecs.filter(isH264);
  if (!h264.length) return;
  // Baseline-family first: the gateway forwards the camera's stream untouched.
  const baseline = (c) => (/profile-level-id=42/i.test(c.sdpFmtpLine || "") ? 0 : 1);
  h264.sort((a, b) => baseline(a) - baseline(b));
  transceiver.setCodecPreferences([...h264, ...caps.codecs.filter((c) => !isH264(c))]);
}

function gatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, GATHER_TIMEOUT_MS);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export class WhepSession {
  #pc = null;
  #location = null;
  #closed = false;

  constructor(cameraId, profile = "main") {
    this.cameraId = cameraId;
    this.profile = profile; // asked for; after connect(), the stream the gateway sends
  }

  /** Negotiate; resolves to the MediaStream. Throws WebRtcError. */
  async connect() {
    if (!webRtcSupported()) throw new WebRtcError("unsupported", "this browser has no WebRTC");
    const pc = (this.#pc = new RTCPeerConnection({ iceServers: [] }));
    const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
    preferH264(transceiver);
    // Live monitoring wants the picture now: the camera's frames come complete on the RTP
    // marker bit (native ingest), so Chromium need not hold them back (its default adds
    // 30-60 ms on a quiet LAN; bench/glass.py measures both).
    if ("jitterBufferTarget" in transceiver.receiver) transceiver.receiver.jitterBufferTarget = 0;
    const stream = new MediaStream([transceiver.receiver.track]);
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc);
    if (this.#closed) throw new WebRtcError("closed", "closed while connecting");
    let reply;
    try {
      reply = await whepOffer(this.cameraId, pc.localDescription.sdp, { profile: this.profile });
    } catch (err) {
      if (err instanceof ApiError) {
        throw new WebRtcError(err.status ? "http" : "network", err.message, err.status);
      }
      throw err;
    }
    this.#location = reply.location;
    this.profile = reply.profile;
    if (this.#closed) {
      this.close();
      throw new WebRtcError("closed", "closed while connecting");
    }
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: reply.answer });
    } catch (err) {
      throw new WebRtcError("ice", `the gateway's answer was not accepted: ${err.message}`);
    }
    return stream;
  }

  /** Resolves with a reason when the connection fails or closes. */
  ended() {
    const pc = this.#pc;
    return new Promise((resolve) => {
      const check = () => {
        if (pc.connectionState === "failed" || pc.connectionState === "closed") {
          pc.removeEventListener("connectionstatechange", check);
          resolve(`WebRTC connection ${pc.connectionState}`);
        }
      };
      pc.addEventListener("connectionstatechange", check);
      check();
    });
  }

  get connectionState() {
    return this.#pc ? this.#pc.connectionState : "new";
  }

  /** Close the peer and DELETE the session on the gateway. Idempotent. */
  close() {
    this.#closed = true;
    if (this.#pc) this.#pc.close();
    if (this.#location) {
      whepDelete(this.#location);
      this.#location = null;
    }
  }
}
