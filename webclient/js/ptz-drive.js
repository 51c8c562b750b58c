// Turns held inputs (joystick, keys, zoom buttons) into continuous-move commands.
//
// Each input sets its own velocity; the sum is what the camera should do. A change is sent
// at most every MIN_INTERVAL_MS (one request in flight at a time, the newest wins); while
// the camera moves the command is repeated every REPEAT_MS, because the gateway stops a
// move that is not repeated within its move timeout (a client that vanished mid-drag must
// not leave the dome spinning). All inputs at rest sends one stop.

const REPEAT_MS = 1000;
const MIN_INTERVAL_MS = 100;
const STEP = 0.05; // velocities are rounded to this, so a wobbling hand sends few commands
const ZERO = Object.freeze({ pan: 0, tilt: 0, zoom: 0 });

const clamp = (v) => Math.max(-1, Math.min(1, v));
const round = (v) => Math.round(clamp(v) / STEP) * STEP || 0; // no -0
const same = (a, b) => a.pan === b.pan && a.tilt === b.tilt && a.zoom === b.zoom;
const still = (v) => same(v, ZERO);

export class PtzDrive {
  #api;
  #onLock;
  #onError;
  #inputs = new Map(); // input name -> {pan, tilt, zoom}
  #target = ZERO; // the velocity last asked for
  #running = ZERO; // the velocity the gateway last accepted
  #busy = false;
  #sentAt = -Infinity;
  #halted = false; // refused: no repeats until an input changes
  #timer = null;
  #closed = false;
  #generation = 0; // reset() makes answers to earlier requests moot

  /** `api` is a PtzApi; `onLock(lock)` after each accepted command, `onError(err)` on refusals. */
  constructor(api, { onLock = () => {}, onError = () => {} } = {}) {
    this.#api = api;
    this.#onLock = onLock;
    this.#onError = onError;
  }

  /** True while the gateway runs a move of ours. */
  get moving() {
    return !still(this.#running);
  }

  /** Set one input's velocity (null or all zero: that input is at rest). */
  set(input, velocity) {
    if (this.#closed) return;
    if (velocity && !still({ pan: velocity.pan || 0, tilt: velocity.tilt || 0, zoom: velocity.zoom || 0 })) {
      this.#inputs.set(input, { pan: velocity.pan || 0, tilt: velocity.tilt || 0, zoom: velocity.zoom || 0 });
    } else {
      this.#inputs.delete(input);
    }
    this.#schedule();
  }

  /** Forget every input without a stop: the gateway already stopped our move (control taken over). */
  reset() {
    this.#generation += 1;
    this.#inputs.clear();
    this.#target = this.#running = ZERO;
    clearTimeout(this.#timer);
  }

  /** Stop for good; a running move is stopped on the gateway. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#inputs.clear();
    clearTimeout(this.#timer);
    if (this.moving) this.#api.stop().catch(() => {});
    this.#running = ZERO;
  }

  #wanted() {
    const sum = { pan: 0, tilt: 0, zoom: 0 };
    for (const v of this.#inputs.values()) {
      sum.pan += v.pan;
      sum.tilt += v.tilt;
      sum.zoom += v.zoom;
    }
    return { pan: round(sum.pan), tilt: round(sum.tilt), zoom: round(sum.zoom) };
  }

  #schedule() {
    clearTimeout(this.#timer);
    if (this.#closed || this.#busy) return; // the request in flight reschedules when it ends
    const wanted = this.#wanted();
    const changed = !same(wanted, this.#target);
    if (changed) this.#halted = false;
    let due;
    if (changed) {
      if (still(wanted) && !this.moving) {
        this.#target = ZERO; // nothing of ours is moving: no stop needed
        return;
      }
      due = this.#sentAt + MIN_INTERVAL_MS;
    } else if (!still(wanted) && !this.#halted) {
      due = this.#sentAt + REPEAT_MS;
    } else {
      return;
    }
    this.#timer = setTimeout(() => this.#send(), Math.max(0, due - performance.now()));
  }

  async #send() {
    if (this.#closed) return;
    const wanted = this.#wanted();
    const generation = this.#generation;
    this.#busy = true;
    this.#sentAt = performance.now();
    this.#target = wanted;
    try {
      const lock = still(wanted) ? await this.#api.stop() : await this.#api.move(wanted);
      if (generation === this.#generation) {
        this.#running = wanted;
        if (!this.#closed) this.#onLock(lock);
      }
    } catch (err) {
      // An answer from before reset() (control was taken over meanwhile) says nothing new.
      if (generation === this.#generation) {
        this.#halted = true;
        if (err.status === 409) this.#running = ZERO; // someone else holds the camera
        if (!this.#closed) this.#onError(err);
      }
    } finally {
      this.#busy = false;
    }
    this.#schedule();
  }
}
