// PTZ patrol tours (#/tours): pick a PTZ camera, see its tours and their state (stopped,
// running, paused while someone steers), start or stop one (ptz.control) and, with
// cameras.manage, edit them: steps (preset, dwell seconds, speed), daily time windows and
// whether the tour is enabled. Follows `ptz.tour` events from the events channel.

import { listCameras, request } from "./api.js";
import { can } from "./session.js";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "className") node.className = value;
    else if (value === true) node.setAttribute(key, "");
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function json(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

export class ToursPage {
  #root;
  #user;
  /** The events channel (set by the app once it exists). */
  events;
  #camera = null;
  #presets = [];
  #onEvent = (event) => {
    if (event.detail.kind === "ptz.tour" && event.detail.camera === this.#camera) this.#refresh();
  };

  constructor(root, { user, events = null }) {
    this.#root = root;
    this.#user = user;
    this.events = events;
  }

  async show() {
    this.#root.hidden = false;
    this.events?.addEventListener("event", this.#onEvent);
    const cameras = (await listCameras()).filter((c) => c.ptz?.presets);
    const select = el("select", { name: "camera", id: "tours-camera" },
      ...cameras.map((c) => el("option", { value: c.id }, c.name || c.id)));
    select.addEventListener("change", () => this.#choose(select.value));
    this.list = el("div", { className: "tours-list" });
    this.message = el("p", { className: "page-message", role: "alert" });
    this.editor = el("div", { className: "tours-editor" });
    this.#root.replaceChildren(
      el("h2", { id: "tours-heading" }, "Patrol tours"),
      el("label", {}, "Camera ", select), this.message, this.list, this.editor,
    );
    if (cameras.length) await this.#choose(cameras[0].id);
  }

  hide() {
    this.events?.removeEventListener("event", this.#onEvent);
    this.#root.hidden = true;
    this.#root.replaceChildren();
  }

  async #choose(camera) {
    this.#camera = camera;
    this.#presets = await (await request(`/api/cameras/${camera}/ptz/presets`)).json();
    await this.#refresh();
    this.editor.replaceChildren(...(can(this.#user, "cameras.manage") ? [this.#form()] : []));
  }

  async #refresh() {
    const camera = this.#camera;
    const tours = await (await request(`/api/cameras/${camera}/tours`)).json();
    if (camera !== this.#camera) return;
    const rows = tours.map((t) => {
      const start = el("button", { type: "button", className: "tour-start" }, "Start");
      start.addEventListener("click", () => this.#act(t.id, "start"));
      const stop = el("button", { type: "button", className: "tour-stop" }, "Stop");
      stop.addEventListener("click", () => this.#act(t.id, "stop"));
      const edit = el("button", { type: "button", className: "tour-edit" }, "Edit");
      edit.addEventListener("click", () => this.editor.replaceChildren(this.#form(t)));
      const steps = t.steps.map((s) => `${this.#presetName(s.preset)} ${s.dwell_seconds}s`).join(" → ");
      const windows = t.schedule.map((w) => `${w.from}–${w.to}`).join(", ") || "on demand";
      return el("li", { "data-tour-id": String(t.id), "data-state": t.state },
        el("strong", {}, t.name), ` (${t.state}${t.enabled ? "" : ", disabled"}) ${steps}; ${windows} `,
        ...(can(this.#user, "ptz.control") ? [t.state === "stopped" ? start : stop] : []),
        ...(can(this.#user, "cameras.manage") ? [edit] : []));
    });
    this.list.replaceChildren(el("ul", {}, ...rows));
  }

  #presetName(token) {
    return this.#presets.find((p) => p.token === token)?.name || token;
  }

  async #act(tourId, verb) {
    try {
      await request(`/api/cameras/${this.#camera}/tours/${tourId}/${verb}`, { method: "POST" });
      this.message.textContent = "";
    } catch (err) {
      this.message.textContent = err.message;
    }
    await this.#refresh();
  }

  #stepRow(step = { preset: this.#presets[0]?.token, dwell_seconds: 10, speed: null }) {
    const preset = el("select", { name: "preset" },
      ...this.#presets.map((p) => el("option", { value: p.token, selected: p.token === step.preset }, p.name)));
    const dwell = el("input", { name: "dwell", type: "number", min: "0.5", max: "3600", step: "0.5", value: String(step.dwell_seconds) });
    const speed = el("input", { name: "speed", type: "number", min: "0.05", max: "1", step: "0.05", value: step.speed ?? "", placeholder: "camera's" });
    const remove = el("button", { type: "button", className: "secondary" }, "Remove");
    const row = el("li", { className: "tour-step" }, el("label", {}, "Preset ", preset), el("label", {}, "Dwell s ", dwell),
      el("label", {}, "Speed ", speed), remove);
    remove.addEventListener("click", () => row.remove());
    return row;
  }

  #windowRow(w = { from: "22:00", to: "06:00" }) {
    const row = el("li", { className: "tour-window" },
      el("label", {}, "From ", el("input", { name: "from", type: "time", value: w.from })),
      el("label", {}, "To ", el("input", { name: "to", type: "time", value: w.to })));
    const remove = el("button", { type: "button", className: "secondary" }, "Remove");
    remove.addEventListener("click", () => row.remove());
    row.append(remove);
    return row;
  }

  #form(tour = null) {
    const steps = el("ol", { className: "tour-steps" }, ...(tour ? tour.steps.map((s) => this.#stepRow(s)) : [this.#stepRow()]));
    const windows = el("ul", { className: "tour-windows" }, ...(tour ? tour.schedule.map((w) => this.#windowRow(w)) : []));
    const addStep = el("button", { type: "button", className: "tour-add-step" }, "Add step");
    addStep.addEventListener("click", () => steps.append(this.#stepRow()));
    const addWindow = el("button", { type: "button" }, "Add time window");
    addWindow.addEventListener("click", () => windows.append(this.#windowRow()));
    const name = el("input", { name: "name", required: true, maxlength: "100", value: tour?.name || "" });
    const enabled = el("input", { name: "enabled", type: "checkbox", checked: tour ? tour.enabled : true });
    const form = el("form", { className: "tour-form", id: "tour-form" },
      el("h3", {}, tour ? `Edit ${tour.name}` : "New tour"),
      el("label", {}, "Name ", name), steps, addStep, windows, addWindow, el("label", {}, enabled, " Enabled"),
      el("button", { type: "submit", className: "primary" }, "Save"));
    if (tour) {
      const del = el("button", { type: "button", className: "secondary tour-delete" }, "Delete");
      del.addEventListener("click", async () => {
        await request(`/api/cameras/${this.#camera}/tours/${tour.id}`, { method: "DELETE" });
        this.editor.replaceChildren(this.#form());
        await this.#refresh();
      });
      form.append(del);
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {
        name: name.value,
        enabled: enabled.checked,
        steps: [...steps.querySelectorAll(".tour-step")].map((row) => {
          const speed = row.querySelector("[name=speed]").value;
          return {
            preset: row.querySelector("[name=preset]").value,
            dwell_seconds: Number(row.querySelector("[name=dwell]").value),
            speed: speed ? Number(speed) : null,
          };
        }),
        schedule: [...windows.querySelectorAll(".tour-window")].map((row) => ({
          from: row.querySelector("[name=from]").value, to: row.querySelector("[name=to]").value,
        })),
      };
      const path = `/api/cameras/${this.#camera}/tours${tour ? `/${tour.id}` : ""}`;
      try {
        await request(path, json(tour ? "PUT" : "POST", body));
        this.message.textContent = "";
        this.editor.replaceChildren(this.#form());
      } catch (err) {
        this.message.textContent = err.message;
      }
      await this.#refresh();
    });
    return form;
  }
}
