// One grid tile: a <video>, an overlay with the camera's name and playback state, a plain
// message when there is no picture, and the Player that feeds it. A camera whose privacy
// masks follow the scene but whose position is unknown (the gateway blacks the whole
// picture meanwhile) gets the notice "privacy mask: position unknown" over its picture,
// from the camera list's `mask_position_known` (kept current by camera.mask_position events).

import { Player } from "./player.js";

export const MASK_POSITION_UNKNOWN = "privacy mask: position unknown";

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

export class Tile {
  #player = null;
  #camera = null;
  #small = false; // one of several tiles on the wall: the camera's sub stream will do
  #preferred = "sub"; // "main": the main stream even when small (a saved wall's choice)

  constructor(index, { onClear, onProfile = () => {} }) {
    this.index = index;
    this.cameraId = null;
    const root = (this.element = el("div", "tile", { "data-index": String(index), tabindex: "0", role: "group" }));
    this.video = el("video", "tile-video");
    this.video.muted = true;
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.video.setAttribute("muted", "");
    this.video.setAttribute("playsinline", "");

    const overlay = el("div", "tile-overlay");
    this.nameEl = el("span", "tile-name");
    this.stateEl = el("span", "tile-state", { role: "status", "aria-live": "polite" });
    const close = el("button", "tile-close", { type: "button", title: "Clear tile", "aria-label": "Clear tile" });
    close.textContent = "×";
    close.addEventListener("click", (event) => {
      event.stopPropagation();
      onClear(this);
    });
    // "Incident": asks whoever listens (incidents.js, for users with incident.open) to open
    // an incident on this camera now; hidden by CSS for everyone else.
    const incident = el("button", "tile-incident", { type: "button", title: "Open an incident on this camera", "aria-label": "Open an incident" });
    incident.textContent = "!";
    incident.addEventListener("click", (event) => {
      event.stopPropagation();
      if (!this.cameraId) return;
      root.dispatchEvent(new CustomEvent("citygate:incident", { bubbles: true, detail: { camera: this.cameraId, at: Date.now() / 1000 } }));
    });
    // "HD": this tile plays the camera's main stream even when small (kept in saved walls)
    const main = (this.mainEl = el("button", "tile-main", {
      type: "button",
      title: "Main stream in this tile (HD)",
      "aria-label": "Main stream in this tile",
      "aria-pressed": "false",
    }));
    main.textContent = "HD";
    main.addEventListener("click", (event) => {
      event.stopPropagation();
      if (this.cameraId) onProfile(this);
    });
    overlay.append(this.nameEl, this.stateEl, main, incident, close);

    this.messageEl = el("div", "tile-message");
    this.messageText = el("p", "tile-message-text");
    this.messageDetail = el("p", "tile-message-detail");
    this.messageEl.append(this.messageText, this.messageDetail);

    this.maskEl = el("p", "tile-mask-unknown", { role: "status" });
    this.maskEl.hidden = true;

    root.append(this.video, overlay, this.messageEl, this.maskEl);
    this.#showEmpty();
  }

  #label() {
    const camera = this.#camera;
    return camera ? camera.name || camera.id : this.cameraId;
  }

  #showEmpty() {
    this.element.dataset.phase = "empty";
    this.element.setAttribute("aria-label", `Tile ${this.index + 1}: empty`);
    this.nameEl.textContent = "";
    this.stateEl.textContent = "";
    this.messageText.textContent = "Empty";
    this.messageDetail.textContent = "Choose a camera from the list";
    this.#showMaskPosition();
  }

  /** The notice over a picture the gateway blacks out because the camera's position is unknown. */
  #showMaskPosition() {
    const unknown = !!this.cameraId && this.#camera?.mask_position_known === false;
    this.maskEl.hidden = !unknown;
    const text = unknown ? MASK_POSITION_UNKNOWN : "";
    if (this.maskEl.textContent !== text) this.maskEl.textContent = text; // announced once
    if (unknown) this.element.dataset.maskPosition = "unknown";
    else delete this.element.dataset.maskPosition;
  }

  /** Show `cameraId` here (null clears the tile). */
  assign(cameraId, camera = null) {
    if (cameraId === this.cameraId) return;
    this.release();
    this.cameraId = cameraId;
    this.#camera = camera;
    if (!cameraId) {
      this.#showEmpty();
      return;
    }
    this.nameEl.textContent = this.#label();
    this.element.setAttribute("aria-label", `Tile ${this.index + 1}: ${this.#label()}`);
    this.#showMaskPosition();
    this.#start();
  }

  #start() {
    this.#player = new Player(this.video, this.cameraId, {
      camera: this.#camera,
      profile: this.#profile(),
      onStatus: (status) => this.#render(status),
    });
  }

  /** The stream to ask for: the sub stream in a small tile, if the camera has one now. */
  #profile() {
    return this.#small && this.#preferred !== "main" && this.#camera?.profiles?.includes("sub") ? "sub" : "main";
  }

  /** "main" or "sub": the stream a saved wall asks for in this tile. */
  setPreferred(profile) {
    this.#preferred = profile === "main" ? "main" : "sub";
    this.mainEl.setAttribute("aria-pressed", String(this.#preferred === "main"));
    this.element.dataset.preferred = this.#preferred;
    this.#restartIfProfileChanged();
  }

  /** Small (one of several) or large (alone, or maximised); switches stream if that changes it. */
  setSmall(small) {
    this.#small = small;
    this.#restartIfProfileChanged();
  }

  /** Start again on the other stream if the one to ask for is no longer the one asked for. */
  #restartIfProfileChanged() {
    if (!this.#player || this.#player.wantedProfile === this.#profile()) return false;
    this.release();
    this.#start();
    return true;
  }

  /** Fresh camera info from the list. */
  update(camera) {
    if (!camera || camera.id !== this.cameraId) return;
    this.#camera = camera;
    this.nameEl.textContent = this.#label();
    this.#showMaskPosition();
    // masked or unmasked since: ask again (the gateway never sends a masked camera's sub stream)
    if (!this.#restartIfProfileChanged() && this.#player) this.#player.cameraChanged(camera);
  }

  #render({ phase, text, detail }) {
    this.element.dataset.phase = phase;
    this.element.dataset.profile = (phase === "live" && this.#player?.profile) || "";
    this.stateEl.textContent = text;
    this.element.setAttribute("aria-label", `Tile ${this.index + 1}: ${this.#label()}, ${text}`);
    if (phase === "live") {
      this.messageText.textContent = "";
      this.messageDetail.textContent = "";
    } else if (phase === "offline") {
      this.messageText.textContent = text;
      this.messageDetail.textContent = detail;
    } else if (phase === "unsupported") {
      this.messageText.textContent = text;
      this.messageDetail.textContent = "";
    } else {
      this.messageText.textContent = "Connecting…";
      this.messageDetail.textContent = "";
    }
  }

  /** Stop the player and free its session on the gateway. */
  release() {
    if (this.#player) this.#player.stop();
    this.#player = null;
    this.video.srcObject = null;
    this.video.removeAttribute("src");
  }

  get transport() {
    return this.#player ? this.#player.transport : null;
  }
}
