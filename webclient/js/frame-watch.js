// Watches a <video> element for decoded frames: the first one, and a picture that froze.

const POLL_MS = 250;

function frameCount(video) {
  const quality = video.getVideoPlaybackQuality?.();
  if (quality) return quality.totalVideoFrames;
  return Math.round(video.currentTime * 1000); // any progress counts
}

/** A watcher for one playback; `stop()` ends every promise it handed out. */
export class FrameWatch {
  #video;
  #timers = new Set();
  #stopped = false;

  constructor(video) {
    this.#video = video;
  }

  #poll(test, resolve) {
    const timer = setInterval(() => {
      if (this.#stopped) {
        clearInterval(timer);
        this.#timers.delete(timer);
        return;
      }
      const result = test();
      if (result !== undefined) {
        clearInterval(timer);
        this.#timers.delete(timer);
        resolve(result);
      }
    }, POLL_MS);
    this.#timers.add(timer);
  }

  /** Resolves true when a frame is shown, false after `timeoutMs` without one. */
  firstFrame(timeoutMs) {
    const video = this.#video;
    const start = frameCount(video);
    const deadline = performance.now() + timeoutMs;
    return new Promise((resolve) => {
      this.#poll(() => {
        if (video.videoWidth > 0 && video.readyState >= 2 && frameCount(video) !== start) return true;
        if (performance.now() > deadline) return false;
        return undefined;
      }, resolve);
    });
  }

  /** Resolves with a reason once no new frame has been shown for `stallMs` (while the page is visible). */
  stalled(stallMs) {
    const video = this.#video;
    let last = frameCount(video);
    let since = performance.now();
    return new Promise((resolve) => {
      this.#poll(() => {
        const now = performance.now();
        const count = frameCount(video);
        if (count !== last || document.hidden || video.paused) {
          // Hidden pages may stop decoding; a paused video is the user's choice.
          last = count;
          since = now;
          return undefined;
        }
        if (now - since > stallMs) return `no picture for ${Math.round(stallMs / 1000)} s`;
        return undefined;
      }, resolve);
    });
  }

  stop() {
    this.#stopped = true;
    this.#timers.forEach(clearInterval);
    this.#timers.clear();
  }
}
