// Entry point: sign-in, then the pages the user's role allows (Live, Users, Audit) behind
// a hash router, the user menu, and the way back to the sign-in screen (sign-out, or any
// 401 while in use).

import { getSession, hlsLibraryPresent, onUnauthorized, releasesSettled, signOut } from "./api.js";
import { ApiDocsPage } from "./apidocs.js";
import { AuditPage } from "./audit-view.js";
import { CameraList } from "./camera-list.js";
import { CamerasAdminPage } from "./cameras-admin.js";
import { Grid, LAYOUTS } from "./grid.js";
import { HLS_MODULE_URL } from "./hls-playback.js";
import { EventsClient } from "./events.js";
import { ExportsPage } from "./exports.js";
import { HealthPage } from "./health.js";
import { IncidentDialog, IncidentsPage } from "./incidents.js";
import { authenticate, changePasswordForm } from "./login.js";
import { MapPage } from "./map.js";
import { MaskEditorPage } from "./mask-editor.js";
import { PlaybackPage } from "./playback.js";
import { PlatesPage } from "./plates.js";
import { PtzPads } from "./ptz-pad.js";
import { PushDialog } from "./push-dialog.js";
import { Router } from "./router.js";
import { StationPage } from "./station.js";
import { ToursPage } from "./tours.js";
import { TrafficPage } from "./traffic.js";
import { UserMenu, can } from "./session.js";
import { UsersPage } from "./users-admin.js";
import { WallsPanel, memoryStorage, popoutParams } from "./walls.js";
import { webRtcSupported } from "./whep.js";

const KEY_LAYOUTS = { 1: 1, 4: 4, 9: 9, 6: 16 }; // "16" typed ends on 6
const SESSION_ENDED = "Your session ended; sign in again.";

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

/** localStorage with the user's name in every key: each account keeps its own wall. */
function userStorage(username) {
  const key = (name) => `${name}:${username}`;
  return {
    getItem: (name) => window.localStorage.getItem(key(name)),
    setItem: (name, value) => window.localStorage.setItem(key(name), value),
  };
}

/** The live view: the camera list and the video wall; players run only while it is shown. */
class LivePage {
  #user;
  list = null;
  grid = null;
  ptz = null;
  events = null; // the workspace's events channel (PTZ lock holders)
  walls = null; // the saved walls panel (WallsPanel), for users who may watch
  storage; // where the grid remembers itself: per user, or nowhere in a pop-out window

  constructor(user, storage) {
    this.#user = user;
    this.storage = storage;
  }

  show() {
    const gridRoot = document.getElementById("grid");
    const listRoot = document.getElementById("camera-list");
    gridRoot.replaceChildren();
    listRoot.replaceChildren();
    const grid = (this.grid = new Grid(gridRoot, { storage: this.storage }));
    const list = (this.list = new CameraList(listRoot, { events: this.events }));
    const empty = document.getElementById("live-empty");
    list.addEventListener("select", (event) => {
      grid.open(event.detail);
      list.setOnWall(grid.shownCameras());
    });
    list.addEventListener("update", (event) => {
      if (this.list !== list) return;
      grid.updateCameras(event.detail);
      const count = event.detail.length;
      const online = event.detail.filter((c) => c.state === "online").length;
      document.getElementById("camera-count").textContent = count ? `${online} of ${count} online` : "none";
      empty.hidden = count > 0;
      document.body.classList.toggle("no-cameras", count === 0);
    });
    list.addEventListener("error", (event) => {
      const err = event.detail;
      if (err && err.status !== 401) setNotice("gateway", `Gateway: ${err.message}. Retrying…`);
      else if (!err) setNotice("gateway", "");
    });
    grid.addEventListener("change", () => {
      list.setOnWall(grid.shownCameras());
      syncLayoutButtons(grid);
    });
    syncLayoutButtons(grid);
    // "#/live?camera=d1" (the playback page's "Jump to live"): show that camera.
    // "#/live?cameras=d1,d2" (the map's click or rectangle): show those cameras.
    const params = new URLSearchParams(window.location.hash.split("?")[1] || "");
    const wanted = [params.get("camera"), ...(params.get("cameras") || "").split(",")].filter(Boolean);
    if (wanted.length) {
      history.replaceState(null, "", "#/live");
      const reveal = (event) => {
        list.removeEventListener("update", reveal);
        if (wanted.length > 1 && wanted.length > grid.layout) grid.setLayout(LAYOUTS.find((n) => n >= wanted.length) || 16);
        for (const id of wanted) {
          if (event.detail.some((c) => c.id === id) && !grid.shownCameras().has(id)) grid.open(id);
        }
        list.setOnWall(grid.shownCameras());
      };
      list.addEventListener("update", reveal);
    }
    if (can(this.#user, "ptz.control")) this.ptz = new PtzPads({ grid, list, user: this.#user, events: this.events });
    // the wall last opened comes back at sign-in, unless the address asks for cameras
    this.walls?.attach(grid, { restore: !wanted.length });
    list.start();
  }

  /** Stop every player (their WHEP sessions are DELETEd) and the list's refreshes. */
  hide() {
    this.walls?.detach();
    if (this.ptz) this.ptz.destroy();
    this.ptz = null;
    if (this.list) this.list.stop();
    if (this.grid) this.grid.releaseAll();
    this.list = this.grid = null;
    document.getElementById("grid").replaceChildren();
    document.getElementById("camera-list").replaceChildren();
    document.getElementById("live-empty").hidden = true;
    document.body.classList.remove("no-cameras");
    document.getElementById("camera-count").textContent = "";
    setNotice("gateway", "");
  }
}

function syncLayoutButtons(grid) {
  document
    .querySelectorAll("[data-layout-button]")
    .forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.layoutButton) === grid.layout)));
}

/** One signed-in user's pages; stop() tears everything down again. */
class Workspace {
  constructor(user) {
    this.user = user;
    // "?wall=<id>" (or "?walls=..&cycle=N"): a pop-out window showing only a saved wall
    const popout = popoutParams();
    document.body.classList.toggle("wall-window", !!popout);
    const storage = popout ? memoryStorage() : userStorage(user.username);
    const pages = { live: (this.live = new LivePage(user, storage)) };
    if (can(user, "live.view")) this.live.walls = new WallsPanel(document.getElementById("walls"), { user, storage, popout });
    const linked = [];
    if (can(user, "live.view", "snapshot.view")) linked.push("live");
    if (can(user, "live.view", "snapshot.view")) {
      pages.map = this.map = new MapPage(document.getElementById("page-map"));
      linked.push("map");
    }
    if (can(user, "live.view", "snapshot.view", "system.monitor")) {
      pages.health = this.health = new HealthPage(document.getElementById("page-health"));
      linked.push("health");
    }
    if (can(user, "users.manage")) {
      pages.users = this.users = new UsersPage(document.getElementById("page-users"), { me: user.username });
      linked.push("users");
    }
    if (can(user, "cameras.manage")) {
      pages.cameras = new CamerasAdminPage(document.getElementById("page-cameras"));
      linked.push("cameras");
    }
    // Like live, the playback page opens for everyone (the gateway says why it refuses);
    // its link shows only with the right.
    pages.playback = this.playback = new PlaybackPage(document.getElementById("page-playback"), { user });
    if (can(user, "playback.view")) linked.push("playback");
    if (can(user, "audit.read")) {
      pages.audit = this.audit = new AuditPage(document.getElementById("page-audit"));
      linked.push("audit");
    }
    if (can(user, "mask.edit")) {
      pages.masks = this.masks = new MaskEditorPage(document.getElementById("page-masks"));
      linked.push("masks");
    }
    if (can(user, "cameras.manage", "ptz.control")) {
      pages.tours = this.toursPage = new ToursPage(document.getElementById("page-tours"), { user });
      linked.push("tours");
    }
    if (can(user, "incident.open", "incident.manage")) {
      pages.incidents = this.incidentsPage = new IncidentsPage(document.getElementById("page-incidents"));
      linked.push("incidents");
    }
    if (can(user, "plates.search", "plates.watch")) {
      pages.plates = this.plates = new PlatesPage(document.getElementById("page-plates"), { user });
      linked.push("plates");
    }
    if (can(user, "analytics.view")) {
      pages.traffic = this.trafficPage = new TrafficPage(document.getElementById("page-traffic"));
      linked.push("traffic");
    }
    if (can(user, "export.request", "export.approve", "export.produce", "audit.read")) {
      pages.exports = this.exports = new ExportsPage(document.getElementById("page-exports"), { user });
      linked.push("exports");
    }
    // The API description opens for every signed-in user; its link shows for those who
    // run or integrate the system.
    pages.api = new ApiDocsPage(document.getElementById("page-api"));
    if (can(user, "system.monitor", "cameras.manage", "users.manage")) linked.push("api");
    // Without live rights the live page still opens (cameras pushed to a rescue station
    // appear there), but is home only when nothing else is.
    // The events channel (pushes, camera notices). A station account lands on the station
    // page, where pushed cameras open by themselves, and has no navigation.
    this.events = new EventsClient();
    this.live.events = this.events;
    if (this.health) this.health.events = this.events;
    if (this.toursPage) this.toursPage.events = this.events;
    if (user.station) {
      pages.station = this.station = new StationPage(document.getElementById("page-station"), { events: this.events });
    }
    if (can(user, "push.send")) this.pushes = new PushDialog({ events: this.events });
    // a tile's "!" (and playback's "Incident") opens an incident on its camera
    if (can(user, "incident.open")) this.incidents = new IncidentDialog();
    this.events.start();
    const home = this.station ? "station" : linked[0] || "live";
    this.router = new Router(pages, { home, nav: document.getElementById("nav") });
    this.router.start(this.station ? [] : linked);
  }

  get grid() {
    return this.live.grid;
  }

  stop() {
    this.router.stop();
    this.events.stop();
    if (this.pushes) this.pushes.destroy();
    if (this.incidents) this.incidents.destroy();
    this.live.hide();
    if (this.users) this.users.destroy();
    if (this.audit) this.audit.destroy();
    if (this.masks) this.masks.destroy();
    if (this.plates) this.plates.destroy();
    this.playback.destroy();
  }
}

function setupKeyboard(current) {
  document.addEventListener("keydown", (event) => {
    const grid = current()?.grid;
    if (!grid || document.body.dataset.view !== "live") return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest?.("input, textarea, select, [contenteditable], dialog")) return;
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

async function main() {
  let workspace = null;
  let signingIn = false;
  const menu = new UserMenu(document.getElementById("user-menu"));

  const start = (user) => {
    signingIn = false;
    menu.show(user);
    workspace = new Workspace(user);
  };
  const stop = () => {
    menu.hide();
    if (workspace) workspace.stop();
    workspace = null;
  };
  const signInAgain = async (notice = "", pending = null, username = "") => {
    signingIn = true;
    start(await authenticate({ notice, pending, username }));
  };

  // A 401 while in use (idle timeout, disabled account, revoked session): back to sign-in.
  onUnauthorized(() => {
    if (!workspace || signingIn) return;
    const { username } = workspace.user;
    stop();
    signInAgain(SESSION_ENDED, null, username);
  });

  menu.addEventListener("sign-out", async () => {
    if (!workspace) return;
    stop(); // players DELETE their WHEP sessions while the session is still valid ...
    signingIn = true;
    await releasesSettled(); // ... and they finish before it ends
    const providerSignOut = await signOut();
    if (providerSignOut) {
      window.location.assign(providerSignOut); // OpenID Connect: end the provider's session too
      return;
    }
    signInAgain();
  });
  menu.addEventListener("change-password", async () => {
    if (await changePasswordForm({ username: workspace?.user.username || "" })) {
      setNotice("info", "Password changed. Your other sessions were signed out.");
      setTimeout(() => setNotice("info", ""), 6000);
    }
  });

  document.querySelectorAll("[data-layout-button]").forEach((b) =>
    b.addEventListener("click", () => workspace?.grid?.setLayout(Number(b.dataset.layoutButton))),
  );
  setupKeyboard(() => workspace);

  // Release every WebRTC session on the gateway when the page goes away.
  window.addEventListener("pagehide", () => workspace?.grid?.releaseAll());
  // Back from the back/forward cache with released players: start afresh.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) window.location.reload();
  });

  // For tests and the browser console.
  window.citygate = {
    get grid() {
      return workspace?.grid ?? null;
    },
    get list() {
      return workspace?.live.list ?? null;
    },
    get walls() {
      return workspace?.live.walls ?? null;
    },
    get user() {
      return workspace?.user ?? null;
    },
    get station() {
      return workspace?.station?.info ?? null;
    },
  };

  checkCapabilities();
  let session = null;
  try {
    session = await getSession();
  } catch (err) {
    setNotice("gateway", `Gateway: ${err.message}.`);
  }
  if (session && !session.must_change_password) start(session.user);
  else await signInAgain("", session);
}

main();
