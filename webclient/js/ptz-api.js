// The gateway's PTZ routes of one camera (/api/cameras/{id}/ptz/...). Commands resolve to
// the control lock as the gateway sees it after the command ({camera, holder, role,
// priority, yours, can_take, your_priority, ...}); a refusal throws ApiError (409 names
// the holder).

import { request } from "./api.js";

function post(path, body) {
  const options = { method: "POST" };
  if (body !== undefined) {
    options.headers = { "Content-Type": "application/json" };
    options.body = JSON.stringify(body);
  }
  return request(path, options);
}

export class PtzApi {
  #base;

  constructor(cameraId) {
    this.#base = `/api/cameras/${encodeURIComponent(cameraId)}/ptz`;
  }

  /** Continuous move; velocities -1..1 (positive pan turns right, positive tilt up). */
  async move({ pan = 0, tilt = 0, zoom = 0 }) {
    return (await (await post(`${this.#base}/move`, { pan, tilt, zoom })).json()).lock;
  }

  async stop() {
    return (await (await post(`${this.#base}/stop`)).json()).lock;
  }

  async home() {
    return (await (await post(`${this.#base}/home`)).json()).lock;
  }

  /** [{token, name}] */
  async presets() {
    return (await request(`${this.#base}/presets`)).json();
  }

  async gotoPreset(token) {
    return (await (await post(`${this.#base}/presets/${encodeURIComponent(token)}/go`)).json()).lock;
  }

  /** Store the current position (needs cameras.manage); resolves to {token, name}. */
  async savePreset(name) {
    return (await post(`${this.#base}/presets`, { name })).json();
  }

  async lock() {
    return (await request(`${this.#base}/lock`)).json();
  }

  /** Take control (free, ours already, or held by a lower PTZ priority). */
  async take() {
    return (await post(`${this.#base}/lock`)).json();
  }

  async release() {
    return (await request(`${this.#base}/lock`, { method: "DELETE" })).json();
  }
}
