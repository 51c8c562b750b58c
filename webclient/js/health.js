// The camera health page (#/health): every camera the user may see, worst first
// (GET /api/health/cameras), refreshed every few seconds; a camera's detail with its bitrate
// and frame-rate history drawn as small SVG sparklines (GET /api/health/cameras/{id});
// alarms raised and cleared arrive at once from the events channel (camera.alarm,
// camera.alarm_cleared) into the rows and the alarm log. "#/health?camera=<id>" opens a detail.

import { request } from "./api.js";

const REFRESH_MS = 3000;
const LOG_LENGTH = 50;
const SVG = "http://www.w3.org/2000/svg";
const SORTS = [
  ["worst", "Worst first"],
  ["uptime", "Lowest uptime"],
  ["id", "By id"],
];
const ALARM_LABELS = {
  offline: "offline",
  frozen: "frozen picture",
  bitrate_collapse: "bitrate collapse",
  recording_stopped: "recording stopped",
};
const COLUMNS = ["Camera", "State", "Alarms", "Uptime 24 h", "Uptime 7 d", "Reconnects", "Bitrate", "Frame rate", "Keyframe interval", "Gaps 24 h"];

function el(tag, className, text = "", attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== "") node.textContent = text;
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

const percent = (share) => (share === null || share === undefined ? "—" : `${(share * 100).toFixed(share >= 0.999 || share === 0 ? 0 : 1)} %`);
const kbits = (bps) => (bps ? `${Math.round(bps / 1000)} kbit/s` : "—");
const fpsText = (fps) => (fps ? `${fps.toFixed(1)} fps` : "—");
const seconds = (s) => (s === null || s === undefined ? "—" : `${s.toFixed(s < 10 ? 1 : 0)} s`);
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

function duration(s) {
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

const alarmLabel = (kind) => ALARM_LABELS[kind] || kind;

/** A sparkline of `values` (numbers) as an <svg> with one polyline; no chart library. */
export function sparkline(values, { width = 320, height = 48, label = "" } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("class", "health-spark");
  svg.setAttribute("role", "img");
  const max = Math.max(...values, 0);
  const min = Math.min(...values, 0);
  const last = values.length ? values[values.length - 1] : null;
  svg.setAttribute("aria-label", `${label}: ${values.length} samples${values.length ? `, from ${min} to ${max}` : ""}`);
  svg.dataset.samples = String(values.length);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("class", "health-spark-line");
  const span = max - min || 1;
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  line.setAttribute(
    "points",
    values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - ((v - min) / span) * (height - 4)).toFixed(1)}`).join(" "),
  );
  svg.append(line);
  if (last !== null) {
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${label}: now ${last}`;
    svg.append(title);
  }
  return svg;
}

export class HealthPage {
  #root;
  events = null; // the workspace's events channel (set after construction)
  #timer = null;
  #running = false;
  #report = [];
  #rows = new Map(); // camera id -> <tr>
  #selected = null;
  #refused = null; // a camera whose detail was refused: not asked again (each refusal is audited)
  #parts = {};
  #onEvent = (event) => this.#alarmEvent(event.detail);

  constructor(root, { events = null } = {}) {
    this.#root = root;
    this.events = events;
  }

  show() {
    const root = this.#root;
    root.hidden = false;
    root.replaceChildren();
    const head = el("div", "page-head");
    head.append(el("h2", "", "Camera health", { id: "health-heading" }));
    const count = el("span", "page-count", "", { "aria-live": "polite" });
    const sort = el("select", "health-sort", "", { name: "sort", "aria-label": "Sort cameras" });
    for (const [value, text] of SORTS) sort.append(el("option", "", text, { value }));
    sort.addEventListener("change", () => this.#refresh());
    head.append(count, sort);
    const message = el("p", "page-message", "", { role: "status" });
    message.hidden = true;

    const logBox = el("section", "health-log", "", { "aria-labelledby": "health-log-heading" });
    logBox.append(el("h3", "", "Alarms as they happen", { id: "health-log-heading" }));
    const log = el("ol", "health-alarm-log", "", { "aria-live": "polite" });
    logBox.append(log);

    const table = el("table", "health-table");
    const headRow = el("tr");
    for (const name of COLUMNS) headRow.append(el("th", "", name, { scope: "col" }));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(headRow);

    const detail = el("section", "health-detail", "", { "aria-live": "polite", "aria-labelledby": "health-detail-heading" });
    detail.hidden = true;
    root.append(head, message, logBox, table, detail);
    this.#parts = { count, sort, message, log, table, body: table.tBodies[0], detail };
    this.#rows.clear();

    const params = new URLSearchParams(window.location.hash.split("?")[1] || "");
    this.#selected = params.get("camera");
    this.#running = true;
    this.events?.addEventListener("event", this.#onEvent);
    const tick = async () => {
      await this.#refresh();
      if (this.#running) this.#timer = setTimeout(tick, REFRESH_MS);
    };
    tick();
  }

  hide() {
    this.#running = false;
    clearTimeout(this.#timer);
    this.events?.removeEventListener("event", this.#onEvent);
    this.#root.replaceChildren();
    this.#root.hidden = true;
    this.#rows.clear();
  }

  #message(text) {
    const { message } = this.#parts;
    message.textContent = text || "";
    message.hidden = !text;
  }

  async #refresh() {
    const sort = this.#parts.sort?.value || "worst";
    try {
      const report = await (await request(`/api/health/cameras?sort=${encodeURIComponent(sort)}`)).json();
      if (!this.#running) return;
      this.#report = report;
      this.#message("");
    } catch (err) {
      if (this.#running && err.status !== 401) this.#message(`Camera health unavailable: ${err.message}`);
      return;
    }
    this.#renderTable();
    if (this.#selected && this.#selected !== this.#refused) await this.#loadDetail(this.#selected);
  }

  #renderTable() {
    const { body, count } = this.#parts;
    const seen = new Set();
    this.#report.forEach((camera, position) => {
      seen.add(camera.id);
      let row = this.#rows.get(camera.id);
      if (!row) {
        row = this.#makeRow(camera.id);
        this.#rows.set(camera.id, row);
      }
      this.#fillRow(row, camera);
      if (body.children[position] !== row) body.insertBefore(row, body.children[position] || null);
    });
    for (const [id, row] of this.#rows) {
      if (!seen.has(id)) {
        row.remove();
        this.#rows.delete(id);
      }
    }
    const alarmed = this.#report.filter((c) => c.alarms.length).length;
    count.textContent = `${this.#report.length} cameras${alarmed ? `, ${alarmed} with alarms` : ""}`;
  }

  #makeRow(id) {
    const row = el("tr", "health-row", "", { "data-camera": id });
    for (let i = 0; i < COLUMNS.length; i++) row.append(el("td"));
    const open = el("button", "health-open", "", { type: "button" });
    row.cells[0].append(open);
    open.addEventListener("click", () => this.select(id));
    return row;
  }

  #fillRow(row, c) {
    const cells = row.cells;
    row.dataset.state = c.state;
    row.dataset.alarms = c.alarms.map((a) => a.kind).join(" ");
    row.classList.toggle("selected", c.id === this.#selected);
    const open = cells[0].querySelector("button");
    open.textContent = c.name || c.id;
    open.setAttribute("aria-label", `Details of ${c.name || c.id}`);
    let area = cells[0].querySelector(".health-area");
    if (!area) cells[0].append((area = el("span", "health-area")));
    area.textContent = c.area;
    cells[1].replaceChildren(el("span", "badge", c.state, { "data-state": c.state }), el("span", "health-since", ` ${duration(Date.now() / 1000 - c.since)}`));
    cells[1].title = c.last_error || "";
    cells[2].replaceChildren(...c.alarms.map((a) => this.#alarmBadge(a)));
    if (!c.alarms.length) cells[2].textContent = "—";
    cells[3].textContent = percent(c.uptime_24h);
    cells[4].textContent = percent(c.uptime_7d);
    cells[5].textContent = String(c.reconnects);
    cells[6].textContent = kbits(c.bitrate);
    cells[7].textContent = fpsText(c.fps);
    cells[8].textContent = seconds(c.keyframe_interval);
    cells[9].textContent = c.gaps_24h.length ? `${c.gaps_24h.length} (${duration(c.gap_seconds_24h)})` : "none";
  }

  #alarmBadge(alarm) {
    return el("span", "health-alarm", alarmLabel(alarm.kind), {
      "data-alarm": alarm.kind,
      title: `${alarm.detail} (since ${clock(alarm.since)})`,
    });
  }

  /** Show one camera's detail (and keep it current). */
  async select(id) {
    this.#selected = id;
    this.#refused = null;
    for (const [rowId, row] of this.#rows) row.classList.toggle("selected", rowId === id);
    history.replaceState(null, "", `#/health?camera=${encodeURIComponent(id)}`);
    await this.#loadDetail(id);
  }

  async #loadDetail(id) {
    const { detail } = this.#parts;
    let camera;
    try {
      camera = await (await request(`/api/health/cameras/${encodeURIComponent(id)}`)).json();
    } catch (err) {
      if (!this.#running || this.#selected !== id) return;
      if (err.status === 403 || err.status === 404) this.#refused = id;
      detail.hidden = false;
      detail.dataset.camera = id;
      detail.replaceChildren(el("h3", "", `Camera ${id}`, { id: "health-detail-heading" }), el("p", "health-refused", err.message, { role: "alert" }));
      return;
    }
    if (!this.#running || this.#selected !== id) return;
    this.#renderDetail(camera);
  }

  #renderDetail(c) {
    const { detail } = this.#parts;
    detail.hidden = false;
    detail.dataset.camera = c.id;
    const close = el("button", "health-close", "Close", { type: "button" });
    close.addEventListener("click", () => {
      this.#selected = null;
      detail.hidden = true;
      history.replaceState(null, "", "#/health");
      for (const row of this.#rows.values()) row.classList.remove("selected");
    });
    const facts = el("dl", "health-facts");
    const fact = (name, value) => facts.append(el("dt", "", name), el("dd", "", value));
    fact("State", `${c.state} for ${duration(Date.now() / 1000 - c.since)}${c.last_error ? ` (${c.last_error})` : ""}`);
    fact("Uptime", `${percent(c.uptime_24h)} over 24 h, ${percent(c.uptime_7d)} over 7 d`);
    fact("Reconnects", String(c.reconnects));
    fact("Now", `${kbits(c.bitrate)}, ${fpsText(c.fps)}`);
    fact("Keyframes", `every ${seconds(c.keyframe_interval)}${c.last_keyframe_at ? `, last at ${clock(c.last_keyframe_at)}` : ""}`);
    fact("Same picture for", seconds(c.frozen_for));
    fact("Recording", c.recording ? (c.last_segment_end ? `last segment ended ${clock(c.last_segment_end)}` : "no segment yet") : "not recorded");

    const samples = c.history || [];
    const charts = el("div", "health-charts");
    const bitrate = el("figure", "health-chart", "", { "data-series": "bitrate" });
    bitrate.append(sparkline(samples.map((s) => Math.round(s[1] / 1000)), { label: "Bitrate (kbit/s)" }), el("figcaption", "", "Bitrate, kbit/s"));
    const fps = el("figure", "health-chart", "", { "data-series": "fps" });
    fps.append(sparkline(samples.map((s) => s[2]), { label: "Frame rate (fps)" }), el("figcaption", "", "Frame rate, fps"));
    charts.append(bitrate, fps);

    const alarms = el("ul", "health-detail-alarms");
    for (const a of c.alarms) {
      const item = el("li", "", "", { "data-alarm": a.kind });
      item.append(this.#alarmBadge(a), document.createTextNode(` ${a.detail}, since ${clock(a.since)}`));
      alarms.append(item);
    }
    if (!c.alarms.length) alarms.append(el("li", "", "No alarms"));
    const gaps = el("ul", "health-gaps");
    for (const g of c.gaps_24h) gaps.append(el("li", "", `${clock(g.start)}–${clock(g.end)} (${duration(g.end - g.start)}): ${g.reason}`));
    if (!c.gaps_24h.length) gaps.append(el("li", "", "No recording gaps in the last 24 h"));

    detail.replaceChildren(
      el("h3", "", `${c.name || c.id} · ${c.area}`, { id: "health-detail-heading" }),
      close,
      facts,
      charts,
      el("h4", "", "Alarms"),
      alarms,
      el("h4", "", "Recording gaps (24 h)"),
      gaps,
    );
  }

  /** camera.alarm / camera.alarm_cleared from the events channel: into the log and the row at once. */
  #alarmEvent(event) {
    if (!event || (event.kind !== "camera.alarm" && event.kind !== "camera.alarm_cleared") || !event.camera) return;
    const kind = event.detail?.alarm || "alarm";
    const raised = event.kind === "camera.alarm";
    const camera = this.#report.find((c) => c.id === event.camera);
    const name = camera?.name || event.camera;
    const item = el("li", raised ? "health-log-raised" : "health-log-cleared", "", {
      "data-camera": event.camera,
      "data-alarm": kind,
      "data-kind": event.kind,
    });
    item.append(
      el("time", "", clock(event.at || Date.now() / 1000)),
      document.createTextNode(` ${name}: ${alarmLabel(kind)} ${raised ? "raised" : "cleared"}${raised && event.detail?.reason ? ` (${event.detail.reason})` : ""}`),
    );
    const { log } = this.#parts;
    log.prepend(item);
    while (log.children.length > LOG_LENGTH) log.lastElementChild.remove();
    if (!camera) return;
    camera.alarms = camera.alarms.filter((a) => a.kind !== kind);
    if (raised) camera.alarms.push({ kind, since: event.at || Date.now() / 1000, detail: event.detail?.reason || "" });
    const row = this.#rows.get(camera.id);
    if (row) this.#fillRow(row, camera);
  }
}
