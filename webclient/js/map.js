// The camera map: every camera the user may see at its place, coloured by state, with a
// cone where it looks. Click a camera to watch it; "Select area" and drag a rectangle to
// open every camera inside it on the wall.
//
// Works without internet: tiles only from the city's own server ([map] tile-url), and
// without one the city's GeoJSON (streets, districts) as a plain vector background.
// Leaflet is installed with npm into webclient/node_modules (see webclient/package.json).

import * as L from "../node_modules/leaflet/dist/leaflet-src.esm.js";
import { request } from "./api.js";

async function getJson(path) {
  return (await request(path)).json();
}

const CONE_METRES = 70;
const REFRESH_MS = 5000;

/** A polygon ring for the heading cone: apex at the camera, `fov` wide, `metres` long. */
function cone([lat, lon], heading, fov, metres = CONE_METRES) {
  const points = [[lat, lon]];
  const perDegLat = 111320;
  const perDegLon = 111320 * Math.cos((lat * Math.PI) / 180);
  const half = Math.min(fov, 359) / 2;
  for (let a = heading - half; a <= heading + half + 0.01; a += Math.max(2, fov / 12)) {
    const rad = (a * Math.PI) / 180;
    points.push([lat + (Math.cos(rad) * metres) / perDegLat, lon + (Math.sin(rad) * metres) / perDegLon]);
  }
  return points;
}

function stateOf(camera) {
  if (camera.state !== "online") return camera.state === "connecting" ? "connecting" : "offline";
  if (camera.masked) return "masked";
  return camera.recording ? "recording" : "online";
}

export class MapPage {
  #root;
  #map = null;
  #layer = null;
  #timer = null;
  #cameras = [];
  #selecting = false;
  #box = null;
  #start = null;

  constructor(root) {
    this.#root = root;
  }

  show() {
    this.#root.hidden = false;
    this.#root.replaceChildren();
    const head = document.createElement("div");
    head.className = "map-head";
    const title = document.createElement("h2");
    title.id = "map-heading";
    title.textContent = "Camera map";
    const select = document.createElement("button");
    select.type = "button";
    select.dataset.action = "select-area";
    select.textContent = "Select area";
    select.title = "Drag a rectangle on the map to open its cameras on the wall";
    select.setAttribute("aria-pressed", "false");
    select.addEventListener("click", () => this.#setSelecting(!this.#selecting, select));
    const legend = document.createElement("p");
    legend.className = "map-legend";
    for (const s of ["recording", "online", "masked", "connecting", "offline"]) {
      const item = document.createElement("span");
      item.className = `map-key map-state-${s}`;
      item.textContent = s;
      legend.append(item);
    }
    const status = document.createElement("p");
    status.className = "map-status";
    status.setAttribute("role", "status");
    head.append(title, select, legend, status);
    const canvas = document.createElement("div");
    canvas.id = "map-canvas";
    canvas.className = "map-canvas";
    this.#root.append(head, canvas);
    this.#status = status;
    this.#select = select;
    this.#load(canvas);
  }

  #status = null;
  #select = null;

  hide() {
    clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#map) this.#map.remove();
    this.#map = this.#layer = null;
    this.#root.replaceChildren();
    this.#root.hidden = true;
  }

  async #load(canvas) {
    let view;
    try {
      view = await getJson("/api/map");
    } catch (err) {
      this.#status.textContent = `Map unavailable: ${err.message}`;
      return;
    }
    if (!canvas.isConnected) return;
    const map = (this.#map = L.map(canvas, { zoomControl: true, boxZoom: false, maxZoom: view.max_zoom }));
    map.attributionControl.setPrefix(false);
    if (view.tile_url) {
      L.tileLayer(view.tile_url, { maxZoom: view.max_zoom, attribution: view.tile_attribution }).addTo(map);
    } else if (view.background) {
      try {
        const data = await getJson(view.background);
        L.geoJSON(data, {
          style: (f) => ({ className: `map-bg map-bg-${(f.properties && f.properties.kind) || "other"}` }),
          interactive: false,
        }).addTo(map);
      } catch (err) {
        this.#status.textContent = `Background unavailable: ${err.message}`;
      }
    }
    const points = view.cameras.map((c) => c.location);
    if (view.center) map.setView(view.center, view.zoom);
    else if (points.length) map.fitBounds(L.latLngBounds(points).pad(0.3), { maxZoom: view.zoom });
    else map.setView([0, 0], 2);
    this.#layer = L.layerGroup().addTo(map);
    this.#draw(view.cameras);
    if (view.unplaced.length) this.#status.textContent = `Not on the map (no location): ${view.unplaced.join(", ")}`;
    this.#root.dataset.ready = "true";
    map.on("mousedown", (e) => this.#boxStart(e));
    map.on("mousemove", (e) => this.#boxMove(e));
    map.on("mouseup", () => this.#boxEnd());
    this.#timer = setTimeout(() => this.#refresh(), REFRESH_MS);
  }

  async #refresh() {
    try {
      const view = await getJson("/api/map");
      if (this.#map) this.#draw(view.cameras);
    } catch {
      // keep the last picture; the next refresh tries again
    }
    if (this.#map) this.#timer = setTimeout(() => this.#refresh(), REFRESH_MS);
  }

  #draw(cameras) {
    this.#cameras = cameras;
    this.#layer.clearLayers();
    for (const c of cameras) {
      const state = stateOf(c);
      if (c.heading !== null) {
        L.polygon(cone(c.location, c.heading, c.fov_degrees || 60), {
          className: `map-cone map-state-${state}`,
          interactive: false,
        }).addTo(this.#layer);
      }
      const marker = L.circleMarker(c.location, { radius: 8, className: `map-camera map-state-${state}` });
      marker.bindTooltip(`${c.name} — ${state}`);
      marker.on("click", () => this.#open([c.id]));
      marker.addTo(this.#layer);
      const el = marker.getElement();
      if (el) {
        el.dataset.camera = c.id;
        el.dataset.state = state;
        el.setAttribute("aria-label", `${c.name} (${state})`);
      }
    }
  }

  #open(ids) {
    if (!ids.length) return;
    window.location.hash = `#/live?cameras=${ids.map(encodeURIComponent).join(",")}`;
  }

  #setSelecting(on, button) {
    this.#selecting = on;
    button.setAttribute("aria-pressed", String(on));
    this.#root.classList.toggle("map-selecting", on);
    if (!this.#map) return;
    if (on) this.#map.dragging.disable();
    else this.#map.dragging.enable();
  }

  #boxStart(e) {
    if (!this.#selecting) return;
    this.#start = e.latlng;
    this.#box = L.rectangle(L.latLngBounds(e.latlng, e.latlng), { className: "map-box", interactive: false }).addTo(this.#map);
  }

  #boxMove(e) {
    if (this.#box && this.#start) this.#box.setBounds(L.latLngBounds(this.#start, e.latlng));
  }

  #boxEnd() {
    if (!this.#box) return;
    const bounds = this.#box.getBounds();
    this.#box.remove();
    this.#box = this.#start = null;
    this.#setSelecting(false, this.#select);
    const inside = this.#cameras.filter((c) => bounds.contains(c.location)).map((c) => c.id);
    if (inside.length) this.#open(inside);
    else this.#status.textContent = "No camera in that area.";
  }
}
