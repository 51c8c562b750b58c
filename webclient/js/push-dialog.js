// "Push to station": for users with push.send. A button in the top bar opens a dialog to
// send cameras to rescue and crisis-management stations (cameras, stations, incident
// reason, duration) and lists the active pushes with "+15 min" and "End" buttons. The
// list follows push.* events from the events channel.

import { listCameras, request } from "./api.js";
import { countdownText } from "./station.js";

const EXTEND_MINUTES = 15;

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "className") node.className = value;
    else node.setAttribute(key, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function json(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

export async function createPush(body) {
  return (await request("/api/pushes", json("POST", body))).json();
}

export async function extendPush(id, minutes) {
  return (await request(`/api/pushes/${id}/extend`, json("POST", { minutes }))).json();
}

export async function revokePush(id) {
  return (await request(`/api/pushes/${id}`, { method: "DELETE" })).json();
}

export async function activePushes() {
  return (await request("/api/pushes?state=active")).json();
}

export class PushDialog {
  #events;
  #button;
  #dialog;
  #form;
  #message;
  #list;
  #pushes = [];
  #timer = null;
  #onEvent = (event) => {
    if (event.detail.kind.startsWith("push.")) this.#refreshList();
  };

  constructor({ events, topbar = document.querySelector(".topbar") }) {
    this.#events = events;
    this.#button = el("button", { type: "button", className: "push-open", id: "push-open", "aria-haspopup": "dialog" }, "Push to station");
    this.#button.addEventListener("click", () => this.open());
    const menu = topbar.querySelector("#user-menu");
    topbar.insertBefore(this.#button, menu);
    this.#dialog = this.#build();
    document.body.append(this.#dialog);
    events.addEventListener("event", this.#onEvent);
    this.#refreshList();
    this.#timer = setInterval(() => this.#tick(), 1000);
  }

  destroy() {
    this.#events.removeEventListener("event", this.#onEvent);
    clearInterval(this.#timer);
    if (this.#dialog.open) this.#dialog.close();
    this.#dialog.remove();
    this.#button.remove();
  }

  #build() {
    const dialog = el("dialog", { id: "push-dialog", className: "push-dialog", "aria-labelledby": "push-title" });
    const form = (this.#form = el("form", { method: "dialog" }));
    form.append(el("h2", { id: "push-title" }, "Push cameras to stations"));
    const cams = el("fieldset", { className: "push-cameras" });
    cams.append(el("legend", {}, "Cameras"));
    const stations = el("fieldset", { className: "push-stations" });
    stations.append(el("legend", {}, "Stations"));
    const reason = el("label", {}, "Incident reason ");
    reason.append(el("input", { name: "reason", required: "", maxlength: "500", autocomplete: "off" }));
    const minutes = el("label", {}, "Minutes ");
    minutes.append(el("input", { name: "minutes", type: "number", min: "1", step: "1", required: "" }));
    this.#message = el("p", { className: "push-message", role: "alert" });
    const actions = el("div", { className: "push-actions" });
    const send = el("button", { type: "submit", className: "primary" }, "Push");
    const cancel = el("button", { type: "button", "data-action": "cancel" }, "Close");
    cancel.addEventListener("click", () => dialog.close());
    actions.append(send, cancel);
    this.#list = el("ul", { className: "push-list", "aria-label": "Active pushes" });
    form.append(cams, stations, reason, minutes, this.#message, actions, el("h3", {}, "Active pushes"), this.#list);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#send();
    });
    dialog.append(form);
    return dialog;
  }

  async open() {
    this.#message.textContent = "";
    this.#message.dataset.kind = "error";
    const form = this.#form;
    try {
      const [cameras, stations] = await Promise.all([listCameras(), (await request("/api/pushes/stations")).json()]);
      this.#fill(form.querySelector(".push-cameras"), "camera", cameras.map((c) => [c.id, c.name || c.id]));
      this.#fill(
        form.querySelector(".push-stations"),
        "station",
        stations.stations.filter((s) => !s.disabled).map((s) => [s.username, s.display_name || s.username]),
      );
      const minutes = form.querySelector('input[name="minutes"]');
      minutes.max = String(stations.max_minutes);
      if (!minutes.value) minutes.value = String(stations.default_minutes);
    } catch (err) {
      this.#message.textContent = err.message;
    }
    this.#refreshList();
    if (!this.#dialog.open) this.#dialog.showModal();
  }

  #fill(fieldset, name, entries) {
    const checked = new Set([...fieldset.querySelectorAll("input:checked")].map((i) => i.value));
    fieldset.querySelectorAll("label").forEach((l) => l.remove());
    if (!entries.length) {
      fieldset.append(el("label", { className: "push-none" }, name === "station" ? "No station accounts" : "No cameras"));
      return;
    }
    for (const [value, text] of entries) {
      const label = el("label", {});
      const box = el("input", { type: "checkbox", name, value });
      box.checked = checked.has(value);
      label.append(box, ` ${text}`);
      fieldset.append(label);
    }
  }

  async #send() {
    const form = this.#form;
    this.#message.dataset.kind = "error";
    const picked = (name) => [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);
    const body = {
      cameras: picked("camera"),
      stations: picked("station"),
      reason: form.querySelector('input[name="reason"]').value.trim(),
      minutes: Number(form.querySelector('input[name="minutes"]').value),
    };
    if (!body.cameras.length || !body.stations.length) {
      this.#message.textContent = "Choose at least one camera and one station.";
      return;
    }
    try {
      const push = await createPush(body);
      this.#message.textContent = `Pushed to ${push.stations.join(", ")}.`;
      this.#message.dataset.kind = "ok";
      form.querySelector('input[name="reason"]').value = "";
      this.#refreshList();
    } catch (err) {
      this.#message.textContent = err.message;
    }
  }

  async #refreshList() {
    try {
      this.#pushes = await activePushes();
    } catch {
      return;
    }
    this.#button.textContent = this.#pushes.length ? `Pushes (${this.#pushes.length})` : "Push to station";
    this.#renderList();
  }

  #renderList() {
    const now = Date.now() / 1000;
    const rows = this.#pushes
      .filter((p) => p.expires_at > now)
      .map((push) => {
        const li = el("li", { "data-push-id": String(push.id) });
        li.append(
          el("span", { className: "push-list-reason" }, push.reason),
          el("span", { className: "push-list-what" }, `${push.cameras.join(", ")} → ${push.stations.join(", ")}`),
          el("span", { className: "push-list-left" }, `${countdownText(push.expires_at - now)} left`),
        );
        const more = el("button", { type: "button", "data-action": "extend" }, `+${EXTEND_MINUTES} min`);
        more.addEventListener("click", () => this.#act(() => extendPush(push.id, EXTEND_MINUTES)));
        const end = el("button", { type: "button", "data-action": "revoke" }, "End");
        end.addEventListener("click", () => this.#act(() => revokePush(push.id)));
        li.append(more, end);
        return li;
      });
    if (!rows.length) rows.push(el("li", { className: "push-none" }, "None"));
    this.#list.replaceChildren(...rows);
  }

  /** Count down in place; a push that ran out leaves the list. */
  #tick() {
    const now = Date.now() / 1000;
    if (this.#pushes.some((p) => p.expires_at <= now)) {
      this.#pushes = this.#pushes.filter((p) => p.expires_at > now);
      this.#renderList();
      return;
    }
    for (const push of this.#pushes) {
      const left = this.#list.querySelector(`[data-push-id="${push.id}"] .push-list-left`);
      if (left) left.textContent = `${countdownText(push.expires_at - now)} left`;
    }
  }

  async #act(action) {
    this.#message.dataset.kind = "error";
    try {
      await action();
      this.#message.textContent = "";
    } catch (err) {
      this.#message.textContent = err.message;
    }
    this.#refreshList();
  }
}
