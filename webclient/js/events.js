// The gateway's events channel (/api/events, a WebSocket), kept open with reconnects.
//
// Events dispatched:
//   'state'  detail: {now, user, pushes}   first message of every connection
//   'event'  detail: {kind, at, camera, user, detail}
//   'open', 'close' (detail: {code})
//   'session-ended'  the gateway closed the channel because the session ended (4401);
//                    a page's next request meets the 401 that leads back to sign-in
// The gateway sends a ping every 15 s; a connection silent for WATCHDOG_MS is replaced.

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 15000;
const WATCHDOG_MS = 45000;
export const CLOSE_SESSION_ENDED = 4401;

export class EventsClient extends EventTarget {
  #ws = null;
  #stopped = true;
  #backoff = BACKOFF_MIN_MS;
  #retry = null;
  #watchdog = null;
  #lastState = null;

  /** The latest 'state' message (null before the first connection). */
  get state() {
    return this.#lastState;
  }

  get connected() {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  start() {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#retry);
    clearTimeout(this.#watchdog);
    if (this.#ws) this.#ws.close(1000, "bye");
    this.#ws = null;
  }

  #connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const ws = (this.#ws = new WebSocket(`${scheme}://${window.location.host}/api/events`));
    ws.addEventListener("open", () => {
      this.#backoff = BACKOFF_MIN_MS;
      this.#feedWatchdog(ws);
      this.dispatchEvent(new Event("open"));
    });
    ws.addEventListener("message", (message) => {
      if (ws !== this.#ws) return;
      this.#feedWatchdog(ws);
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      if (data.type === "state") {
        this.#lastState = data;
        this.dispatchEvent(new CustomEvent("state", { detail: data }));
      } else if (data.type === "event") {
        this.dispatchEvent(new CustomEvent("event", { detail: data.event }));
      }
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.#ws) return;
      clearTimeout(this.#watchdog);
      this.#ws = null;
      this.dispatchEvent(new CustomEvent("close", { detail: { code: event.code } }));
      if (this.#stopped) return;
      if (event.code === CLOSE_SESSION_ENDED) this.dispatchEvent(new Event("session-ended"));
      this.#retry = setTimeout(() => {
        if (!this.#stopped) this.#connect();
      }, this.#backoff);
      this.#backoff = Math.min(this.#backoff * 2, BACKOFF_MAX_MS);
    });
  }

  #feedWatchdog(ws) {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => {
      console.warn("events: no message for a while; reconnecting");
      ws.close(4000, "silent");
    }, WATCHDOG_MS);
  }
}
