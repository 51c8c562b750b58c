// The traffic page (#/traffic): vehicle counts per camera and counting line, as a bar chart
// drawn here in SVG (no chart library) and a table, per hour, day or week
// (GET /api/analytics/cameras, GET /api/analytics/counts), with the same counts as CSV.
// Only cameras of the user's areas are offered; "#/traffic?camera=<id>&line=<name>" opens one.

import { request } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const INTERVALS = [
  ["hour", "Per hour (last 24 h)", 86400],
  ["day", "Per day (last 31 days)", 31 * 86400],
  ["week", "Per week (last 12 weeks)", 12 * 7 * 86400],
];
// One colour class per series (direction, or lane and direction), cycled.
const SERIES_CLASSES = 6;

function el(tag, className, text = "", attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== "") node.textContent = text;
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function label(start, interval) {
  const d = new Date(start * 1000);
  if (interval === "hour") return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** Every interval start from `from` to `to` (so empty intervals show as zero). */
function slots(from, to, interval) {
  const out = [];
  const d = new Date(from * 1000);
  if (interval === "hour") d.setMinutes(0, 0, 0);
  else {
    d.setHours(0, 0, 0, 0);
    if (interval === "week") d.setDate(d.getDate() - ((d.getDay() + 6) % 7)); // Monday
  }
  while (d.getTime() / 1000 < to) {
    out.push(d.getTime() / 1000);
    if (interval === "hour") d.setHours(d.getHours() + 1);
    else d.setDate(d.getDate() + (interval === "week" ? 7 : 1));
  }
  return out;
}

/** Grouped bars: one group per interval, one bar per series. Returns an <svg>. */
export function barChart(starts, series, interval, { width = 720, height = 220 } = {}) {
  const pad = { left: 36, right: 8, top: 8, bottom: 24 };
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "traffic-chart", role: "img" });
  const max = Math.max(1, ...series.flatMap((s) => starts.map((t) => s.values.get(t) || 0)));
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const group = plotW / Math.max(starts.length, 1);
  const bar = Math.max(1, (group * 0.8) / Math.max(series.length, 1));
  const total = series.reduce((sum, s) => sum + [...s.values.values()].reduce((a, b) => a + b, 0), 0);
  chart.setAttribute("aria-label", `${total} vehicles in ${starts.length} intervals, ${series.length} series`);
  chart.dataset.total = String(total);
  for (const frac of [0, 0.5, 1]) {
    const y = pad.top + plotH * (1 - frac);
    chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "traffic-grid" }));
    const tick = svg("text", { x: pad.left - 4, y: y + 4, class: "traffic-axis", "text-anchor": "end" });
    tick.textContent = String(Math.round(max * frac));
    chart.append(tick);
  }
  const every = Math.ceil(starts.length / 12);
  starts.forEach((start, i) => {
    const x0 = pad.left + i * group + group * 0.1;
    series.forEach((s, j) => {
      const n = s.values.get(start) || 0;
      if (!n) return;
      const h = (n / max) * plotH;
      const rect = svg("rect", {
        x: (x0 + j * bar).toFixed(1), y: (pad.top + plotH - h).toFixed(1), width: Math.max(bar - 1, 1).toFixed(1),
        height: h.toFixed(1), class: `traffic-bar traffic-series-${s.index % SERIES_CLASSES}`,
      });
      const title = svg("title");
      title.textContent = `${s.name}, ${label(start, interval)}: ${n}`;
      rect.append(title);
      chart.append(rect);
    });
    if (i % every === 0) {
      const text = svg("text", { x: x0, y: height - 6, class: "traffic-axis" });
      text.textContent = label(start, interval);
      chart.append(text);
    }
  });
  return chart;
}

export class TrafficPage {
  #root;
  #cameras = [];
  #parts = {};
  #seq = 0;

  constructor(root) {
    this.#root = root;
  }

  async show() {
    const root = this.#root;
    root.hidden = false;
    root.replaceChildren();
    const head = el("div", "page-head");
    head.append(el("h2", "", "Traffic counts", { id: "traffic-heading" }));
    const form = el("form", "traffic-form", "", { "aria-label": "Counts to show" });
    const camera = el("select", "", "", { name: "camera", "aria-label": "Camera" });
    const line = el("select", "", "", { name: "line", "aria-label": "Counting line" });
    const interval = el("select", "", "", { name: "interval", "aria-label": "Interval" });
    for (const [value, text] of INTERVALS) interval.append(el("option", "", text, { value }));
    const csv = el("a", "traffic-csv", "CSV", { download: "" });
    form.append(camera, line, interval, csv);
    const message = el("p", "page-message", "", { role: "status" });
    message.hidden = true;
    const legend = el("ul", "traffic-legend", "", { "aria-label": "Series" });
    const chartBox = el("div", "traffic-chart-box");
    const table = el("table", "traffic-table");
    root.append(head, form, message, legend, chartBox, table);
    this.#parts = { camera, line, interval, csv, message, legend, chartBox, table };
    camera.addEventListener("change", () => {
      this.#fillLines();
      this.#load();
    });
    line.addEventListener("change", () => this.#load());
    interval.addEventListener("change", () => this.#load());
    form.addEventListener("submit", (event) => event.preventDefault());

    try {
      const response = await request("/api/analytics/cameras");
      this.#cameras = await response.json();
    } catch (error) {
      this.#message(error.message);
      return;
    }
    const counting = this.#cameras.filter((c) => c.analyzers.some((a) => a.lines.length));
    if (!counting.length) {
      this.#message("No camera of your areas counts vehicles.");
      return;
    }
    for (const c of counting) camera.append(el("option", "", c.name, { value: c.id }));
    const params = new URLSearchParams(window.location.hash.split("?")[1] || "");
    if (params.get("camera") && counting.some((c) => c.id === params.get("camera"))) camera.value = params.get("camera");
    this.#fillLines(params.get("line"));
    await this.#load();
  }

  hide() {
    this.#seq += 1;
    this.#root.replaceChildren();
    this.#root.hidden = true;
  }

  #message(text) {
    const { message } = this.#parts;
    message.textContent = text || "";
    message.hidden = !text;
  }

  #fillLines(wanted = null) {
    const { camera, line } = this.#parts;
    const cam = this.#cameras.find((c) => c.id === camera.value);
    const lines = cam ? cam.analyzers.flatMap((a) => a.lines) : [];
    line.replaceChildren(...lines.map((l) => el("option", "", l.name, { value: l.name })));
    if (wanted && lines.some((l) => l.name === wanted)) line.value = wanted;
  }

  async #load() {
    const { camera, line, interval, csv, legend, chartBox, table } = this.#parts;
    const seq = ++this.#seq;
    const span = INTERVALS.find(([value]) => value === interval.value)[2];
    const to = Date.now() / 1000;
    const from = to - span;
    const query = new URLSearchParams({ camera: camera.value, line: line.value, interval: interval.value, from: String(from), to: String(to) });
    csv.href = `/api/analytics/counts?${query}&format=csv`;
    let body;
    try {
      body = await (await request(`/api/analytics/counts?${query}`)).json();
    } catch (error) {
      if (seq === this.#seq) this.#message(error.message);
      return;
    }
    if (seq !== this.#seq) return; // a newer choice is on its way
    this.#message("");
    const series = new Map(); // "lane direction" -> {name, index, values: Map(start -> count)}
    for (const row of body.counts) {
      const name = row.lane ? `${row.lane} ${row.direction}` : row.direction;
      if (!series.has(name)) series.set(name, { name, index: series.size, values: new Map() });
      const s = series.get(name);
      s.values.set(row.start, (s.values.get(row.start) || 0) + row.count);
    }
    const starts = slots(from, to, interval.value);
    for (const s of series.values()) for (const t of s.values.keys()) if (!starts.includes(t)) starts.push(t);
    starts.sort((a, b) => a - b);
    const list = [...series.values()];
    legend.replaceChildren(
      ...list.map((s) => {
        const item = el("li", `traffic-series-${s.index % SERIES_CLASSES}`, s.name);
        item.dataset.total = String([...s.values.values()].reduce((a, b) => a + b, 0));
        return item;
      }),
    );
    chartBox.replaceChildren(barChart(starts, list, interval.value));
    const headRow = el("tr");
    headRow.append(el("th", "", "From", { scope: "col" }), ...list.map((s) => el("th", "", s.name, { scope: "col" })));
    const tbody = el("tbody");
    for (const start of starts) {
      if (!list.some((s) => s.values.get(start))) continue;
      const tr = el("tr");
      tr.append(el("td", "", new Date(start * 1000).toLocaleString()), ...list.map((s) => el("td", "", String(s.values.get(start) || 0))));
      tbody.append(tr);
    }
    const thead = el("thead");
    thead.append(headRow);
    table.replaceChildren(thead, tbody);
    if (!body.counts.length) this.#message("No vehicles counted in this period.");
  }
}
