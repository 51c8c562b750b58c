// The recording timeline: recorded spans and gaps of one camera over a time range, hour
// and minute ticks in local time, a cursor at the playback position. Clicking, dragging or
// the arrow keys pick a wall-clock time. Event: 'seek' (detail: epoch seconds).

const MAJOR_STEPS = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
const MINOR_STEPS = [10, 30, 60, 300, 600, 900, 1800, 3600, 10800];
const MIN_LABEL_PX = 84;
const MIN_MINOR_PX = 7;

function el(tag, className, props = {}) {
  const node = document.createElement(tag);
  node.className = className;
  Object.assign(node, props);
  return node;
}

/** "14:05" or "14:05:09" in the browser's locale and time zone. */
export function clockText(seconds, withSeconds = true) {
  const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (withSeconds) options.second = "2-digit";
  return new Date(seconds * 1000).toLocaleTimeString([], options);
}

function dayText(seconds) {
  return new Date(seconds * 1000).toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" });
}

/** Ticks every `step` seconds aligned on local midnight (so on whole local hours and minutes). */
function ticks(from, to, step) {
  const midnight = new Date(from * 1000);
  midnight.setHours(0, 0, 0, 0);
  const base = midnight.getTime() / 1000;
  const out = [];
  for (let t = base + Math.ceil((from - base) / step) * step; t <= to; t += step) out.push(t);
  return out;
}

export class Timeline extends EventTarget {
  #root;
  #track;
  #ticks;
  #cursor;
  #hover;
  #from = 0;
  #to = 1;
  #now = Infinity;
  #items = [];
  #position = null;
  #dragging = false;
  #resize;

  constructor(root) {
    super();
    this.#root = root;
    root.classList.add("timeline");
    root.tabIndex = 0;
    root.setAttribute("role", "slider");
    root.setAttribute("aria-label", "Recording timeline: click or drag to pick a time");
    this.#track = el("div", "timeline-track");
    this.#ticks = el("div", "timeline-ticks");
    this.#cursor = el("div", "timeline-cursor", { hidden: true });
    this.#hover = el("div", "timeline-hover", { hidden: true });
    root.replaceChildren(this.#track, this.#ticks, this.#cursor, this.#hover);
    root.addEventListener("pointerdown", (e) => this.#down(e));
    root.addEventListener("pointermove", (e) => this.#move(e));
    root.addEventListener("pointerup", (e) => this.#up(e));
    root.addEventListener("pointercancel", () => this.#cancel());
    root.addEventListener("pointerleave", () => {
      if (!this.#dragging) this.#hover.hidden = true;
    });
    root.addEventListener("keydown", (e) => this.#key(e));
    this.#resize = new ResizeObserver(() => this.#renderTicks());
    this.#resize.observe(root);
  }

  get from() {
    return this.#from;
  }

  get to() {
    return this.#to;
  }

  /** Show [from, to) (epoch seconds); later than `now` is the future, drawn apart. */
  setRange(from, to, now = Date.now() / 1000) {
    this.#from = from;
    this.#to = to;
    this.#now = now;
    this.#root.dataset.from = String(from);
    this.#root.dataset.to = String(to);
    this.#root.setAttribute("aria-valuemin", String(Math.floor(from)));
    this.#root.setAttribute("aria-valuemax", String(Math.ceil(to)));
    this.#renderItems();
    this.#renderTicks();
    this.setPosition(this.#position);
  }

  /** The gateway's timeline items: {kind: "segment"|"gap", start, end, reason?}. */
  setItems(items, now = Date.now() / 1000) {
    this.#items = items;
    this.#now = now;
    this.#renderItems();
  }

  /** Move the cursor to a wall-clock time (null hides it). */
  setPosition(seconds) {
    this.#position = seconds;
    const shown = seconds !== null && seconds >= this.#from && seconds <= this.#to;
    this.#cursor.hidden = !shown;
    if (seconds === null) {
      this.#root.removeAttribute("aria-valuenow");
      this.#root.removeAttribute("aria-valuetext");
      return;
    }
    if (shown && !this.#dragging) this.#cursor.style.left = this.#percent(seconds);
    this.#root.setAttribute("aria-valuenow", String(Math.round(seconds)));
    this.#root.setAttribute("aria-valuetext", `${dayText(seconds)} ${clockText(seconds)}`);
  }

  destroy() {
    this.#resize.disconnect();
    this.#root.replaceChildren();
  }

  #percent(seconds) {
    const span = this.#to - this.#from;
    return `${(Math.min(Math.max(seconds - this.#from, 0), span) / span) * 100}%`;
  }

  #span(kind, start, end, title) {
    const node = el("div", "timeline-span", { title });
    node.dataset.kind = kind;
    node.dataset.start = String(start);
    node.dataset.end = String(end);
    node.style.left = this.#percent(start);
    node.style.width = `${((end - start) / (this.#to - this.#from)) * 100}%`;
    return node;
  }

  #renderItems() {
    const nodes = [];
    let run = null; // consecutive segments drawn as one recorded span
    const flush = () => {
      if (!run) return;
      const title = `Recorded ${clockText(run.start)} – ${clockText(run.end)}`;
      nodes.push(this.#span("segment", run.start, run.end, title));
      run = null;
    };
    for (const item of this.#items) {
      const start = Math.max(item.start, this.#from);
      const end = Math.min(item.end, this.#to, item.kind === "gap" ? this.#now : Infinity);
      if (end <= start) continue;
      if (item.kind === "segment") {
        if (run && start - run.end < 1) run.end = Math.max(run.end, end);
        else {
          flush();
          run = { start, end };
        }
        continue;
      }
      flush();
      const gap = this.#span("gap", start, end, `${item.reason || "no recording"}: ${clockText(start)} – ${clockText(end)}`);
      gap.dataset.reason = item.reason || "";
      nodes.push(gap);
    }
    flush();
    if (this.#now < this.#to) {
      const from = Math.max(this.#now, this.#from);
      nodes.push(this.#span("future", from, this.#to, "Not yet recorded"));
    }
    this.#track.replaceChildren(...nodes);
  }

  #renderTicks() {
    const width = this.#root.clientWidth;
    const span = this.#to - this.#from;
    if (!width || span <= 0) return;
    const px = (step) => (step / span) * width;
    const major = MAJOR_STEPS.find((s) => px(s) >= MIN_LABEL_PX) || MAJOR_STEPS.at(-1);
    const minor = MINOR_STEPS.find((s) => s < major && major % s === 0 && px(s) >= MIN_MINOR_PX);
    const nodes = [];
    const majors = new Set(ticks(this.#from, this.#to, major));
    for (const t of minor ? ticks(this.#from, this.#to, minor) : []) {
      if (majors.has(t)) continue;
      const tick = el("span", "timeline-tick");
      tick.style.left = this.#percent(t);
      nodes.push(tick);
    }
    for (const t of majors) {
      const tick = el("span", "timeline-tick major");
      tick.style.left = this.#percent(t);
      const midnight = new Date(t * 1000).getHours() === 0 && new Date(t * 1000).getMinutes() === 0;
      tick.append(el("span", "timeline-label", { textContent: midnight ? dayText(t) : clockText(t, false) }));
      nodes.push(tick);
    }
    this.#ticks.replaceChildren(...nodes);
  }

  #timeAt(event) {
    const box = this.#root.getBoundingClientRect();
    const fraction = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
    return this.#from + fraction * (this.#to - this.#from);
  }

  #showHover(seconds) {
    this.#hover.hidden = false;
    this.#hover.textContent = clockText(seconds);
    this.#hover.style.left = this.#percent(seconds);
  }

  #down(event) {
    if (event.button !== 0) return;
    this.#dragging = true;
    this.#root.setPointerCapture(event.pointerId);
    this.#root.classList.add("dragging");
    const seconds = this.#timeAt(event);
    this.#cursor.hidden = false;
    this.#cursor.style.left = this.#percent(seconds);
    this.#showHover(seconds);
  }

  #move(event) {
    const seconds = this.#timeAt(event);
    this.#showHover(seconds);
    if (this.#dragging) this.#cursor.style.left = this.#percent(seconds);
  }

  #up(event) {
    if (!this.#dragging) return;
    this.#dragging = false;
    this.#root.classList.remove("dragging");
    this.#seek(this.#timeAt(event));
  }

  #cancel() {
    this.#dragging = false;
    this.#root.classList.remove("dragging");
    this.#hover.hidden = true;
    this.setPosition(this.#position);
  }

  #key(event) {
    const base = this.#position ?? this.#from;
    const step = event.shiftKey ? 60 : 10;
    const targets = {
      ArrowLeft: base - step,
      ArrowRight: base + step,
      PageUp: base - 600,
      PageDown: base + 600,
      Home: this.#from,
      End: Math.min(this.#to, this.#now),
    };
    if (!(event.key in targets)) return;
    event.preventDefault();
    this.#seek(Math.min(Math.max(targets[event.key], this.#from), this.#to));
  }

  #seek(seconds) {
    this.setPosition(seconds);
    this.dispatchEvent(new CustomEvent("seek", { detail: seconds }));
  }
}
