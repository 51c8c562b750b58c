// Entry point of the viewer: wires the camera list, the grid, the header and the keyboard.

import { hlsLibraryPresent, onUnauthorized } from "./api.js";
import { showSignIn } from "./login.js";
import { CameraList } from "./camera-list.js";
import { Grid, LAYOUTS } from "./grid.js";
import { HLS_MODULE_URL } from "./hls-playback.js";
import { webRtcSupported } from "./whep.js";

const KEY_LAYOUTS = { 1: 1, 4: 4, 9: 9, 6: 16 }; // "16" typed ends on 6

function setupLayoutButtons(grid) {
  const buttons = document.querySelectorAll("[data-layout-button]");
  const sync = () =>
    buttons.forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.layoutButton) === grid.layout)));
  buttons.forEach((b) => b.addEventListener("click", () => grid.setLayout(Number(b.dataset.layoutButton))));
  grid.addEventListener("change", sync);
  sync();
}

function setupKeyboard(grid) {
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest?.("input, textarea, select, [contenteditable]")) return;
    const layout = KEY_LAYOUTS[event.key];
    if (layout && LAYOUTS.includes(layout)) {
      grid.setLayout(layout);
    } else if (event.key === "Escape") {
      grid.restore();
    } else if (event.key === "Enter" && event.target.classList?.contains("tile")) {
      grid.toggleMaximise();
    } else if ((event.key === "Delete" || event.key === "Backspace") && event.target.classList?.contains("tile")) {
      grid.clearSelected();
    } else {
      return;
    }
    event.preventDefault();
  });
}

function setNotice(kind, text) {
  const node = document.getElementById(`notice-${kind}`);
  if (!node) return;
  node.textContent = text || "";
  node.hidden = !text;
}

async function checkCapabilities() {
  const problems = [];
  const hls = await hlsLibraryPresent(HLS_MODULE_URL);
  if (!webRtcSupported()) problems.push("This browser has no WebRTC: video plays over HLS.");
  if (!hls) problems.push("HLS fallback is unavailable (hls.js is not installed on the gateway).");
  setNotice("capabilities", problems.join(" "));
}

function main() {
  const list = new CameraList(document.getElementById("camera-list"));
  const grid = new Grid(document.getElementById("grid"));

  onUnauthorized(() => {
    setNotice("gateway", "Not signed in.");
    showSignIn(() => {
      setNotice("gateway", "");
      list.refresh();
    });
  });

  list.addEventListener("select", (event) => {
    grid.open(event.detail);
    list.setOnWall(grid.shownCameras());
  });
  list.addEventListener("update", (event) => {
    grid.updateCameras(event.detail);
    const count = event.detail.length;
    const online = event.detail.filter((c) => c.state === "online").length;
    document.getElementById("camera-count").textContent = `${online} of ${count} online`;
  });
  list.addEventListener("error", (event) => {
    const err = event.detail;
    if (err && err.status !== 401) setNotice("gateway", `Gateway: ${err.message}. Retrying…`);
    else if (!err) setNotice("gateway", "");
  });
  grid.addEventListener("change", () => list.setOnWall(grid.shownCameras()));

  setupLayoutButtons(grid);
  setupKeyboard(grid);
  list.start();
  checkCapabilities();

  // Release every WebRTC session on the gateway when the page goes away.
  window.addEventListener("pagehide", () => grid.releaseAll());
  // Back from the back/forward cache with released players: start afresh.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) window.location.reload();
  });

  // For tests and the browser console.
  window.citygate = { grid, list };
}

main();
