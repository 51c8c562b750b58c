"""Glass-to-glass latency in Chromium over WHEP, with the FFmpeg and the native RTSP ingest.

For each ingest client (``[ingest] client``) the bench starts ``python -m gateway serve``
with one demo camera (1280x720 25 fps, live time code: ARCHITECTURE.md "The demo camera's
time code"), recording off, signs a user in through the API, and opens the gateway's page
in Debian's Chromium (Playwright driving ``/usr/bin/chromium``). In the page, a plain
``RTCPeerConnection`` (H.264 forced) plays the camera's WHEP stream in a ``<video>``; every
``requestVideoFrameCallback`` draws the frame's top strip to a canvas, decodes the time
code and records ``expectedDisplayTime - time code``: camera render and encode, the demo
camera's RTSP server, the gateway's ingest, WebRTC and Chromium's decode and display.

    python bench/glass.py [--seconds 20] [--warmup 3] [--clients ffmpeg,native]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
from playwright import async_api

from _client import create_user, free_port, percentile, sign_in, stop_process, wait_camera_online, auth_headers

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CAMERA_ID = "bench"
CHROMIUM = os.environ.get("CITYGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

#: Runs in the page (through the DevTools protocol, so the gateway's CSP does not apply).
PLAYER = """
async ([cameraId, token, jitterTarget]) => {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
  const h264 = RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/H264");
  transceiver.setCodecPreferences(h264);
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  if (jitterTarget !== null) transceiver.receiver.jitterBufferTarget = jitterTarget;
  pc.ontrack = (event) => { video.srcObject = event.streams[0] || new MediaStream([event.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
  });
  const response = await fetch(`/api/cameras/${cameraId}/whep`, {
    method: "POST", headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) throw new Error(`WHEP ${response.status}: ${await response.text()}`);
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  window.latencies = [];
  window.unreadable = 0;
  const onFrame = (now, meta) => {
    const w = meta.width, h = meta.height;
    if (canvas.width !== w) { canvas.width = w; canvas.height = 16; }
    ctx.drawImage(video, 0, 0, w, h, 0, 0, w, h);
    const rows = ctx.getImageData(0, 2, w, 12).data;  // rows 2..13 of the 16-row strip
    let code = 0;
    for (let bit = 0; bit < 48; bit++) {
      const x0 = Math.round((bit + 0.25) * w / 48), x1 = Math.round((bit + 0.75) * w / 48);
      let sum = 0, n = 0;
      for (let y = 0; y < 12; y++) for (let x = x0; x < x1; x++) {
        const i = (y * w + x) * 4;
        sum += 0.299 * rows[i] + 0.587 * rows[i + 1] + 0.114 * rows[i + 2]; n++;
      }
      code = code * 2 + (sum / n >= 128 ? 1 : 0);
    }
    // Date.now(): the wall clock the camera's time code uses (performance.timeOrigin plus a
    // monotonic time drifts from it by a few ms over a browser's life).
    const latency = Date.now() + (meta.expectedDisplayTime - now) - code;
    if (latency > -50 && latency < 10000) window.latencies.push(latency); else window.unreadable++;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  window.benchPc = pc;
}
"""


def write_config(conf: Path, client: str) -> None:
    conf.mkdir(parents=True)
    (conf / "gateway.toml").write_text(f'[server]\ndata-dir = "data"\n[ingest]\nclient = "{client}"\n')
    (conf / "cameras.toml").write_text(
        f'[[camera]]\nid = "{CAMERA_ID}"\nvendor = "demo"\narea = "centre"\nrecord = false\n'
        "[camera.options]\nwidth = 1280\nheight = 720\nfps = 25\nkeyframe-interval = 2.0\n"
    )
    roles = REPO / "conf" / "roles.toml"
    if roles.exists():
        shutil.copy(roles, conf / "roles.toml")


async def measure_in_chromium(
    base: str, token: str | None, seconds: float, warmup: float, jitter_target: float | None
) -> tuple[list[float], int]:
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(base + "/")
            await page.evaluate(PLAYER, [CAMERA_ID, token or "", jitter_target])
            await asyncio.sleep(warmup)
            await page.evaluate("() => { window.latencies = []; window.unreadable = 0; }")
            await asyncio.sleep(seconds)
            latencies = await page.evaluate("() => window.latencies")
            unreadable = await page.evaluate("() => window.unreadable")
        finally:
            await browser.close()
    return latencies, unreadable


async def run_one(client: str, args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="citygate-bench-glass-"))
    gateway = None
    log = tmp / "gateway.log"
    try:
        conf = tmp / "conf"
        write_config(conf, client)
        password = create_user(conf, "bench")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with open(log, "w") as out:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(conf), "--bind", "127.0.0.1", "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )
        token = None
        for _ in range(150):  # the gateway takes a moment to listen
            try:
                token = await sign_in(base, "bench", password) if password else None
                break
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.2)
        async with aiohttp.ClientSession(headers=auth_headers(token)) as http:
            await wait_camera_online(http, base, CAMERA_ID)
        latencies, unreadable = await measure_in_chromium(base, token, args.seconds, args.warmup, args.jitter_buffer_target)
    except Exception:
        if log.exists():
            print(f"--- gateway log (last lines) ---\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stop_process(gateway)
        shutil.rmtree(tmp, ignore_errors=True)
    if not latencies:
        raise RuntimeError(f"{client}: Chromium showed no frame with a readable time code ({unreadable} unreadable)")
    return {
        "client": client, "frames": len(latencies), "unreadable": unreadable,
        "p50": percentile(latencies, 50), "p90": percentile(latencies, 90), "min": min(latencies),
    }


async def main_async(args: argparse.Namespace) -> None:
    print(f"glass-to-glass in Chromium over WHEP: demo camera 1280x720 25 fps in the gateway, {args.seconds:.0f} s per "
          f"run after {args.warmup:.0f} s warm-up, {os.cpu_count()} cores, everything on 127.0.0.1; "
          f"jitterBufferTarget {'default' if args.jitter_buffer_target is None else args.jitter_buffer_target}", flush=True)
    print(f"{'ingest client':<14} {'frames':>7} {'p50 ms':>8} {'p90 ms':>8} {'min ms':>8} {'unreadable':>10}")
    for client in args.clients:
        r = await run_one(client, args)
        print(f"{r['client']:<14} {r['frames']:>7} {r['p50']:>8.1f} {r['p90']:>8.1f} {r['min']:>8.1f} {r['unreadable']:>10}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="playing time before measuring")
    parser.add_argument("--clients", default="ffmpeg,native", help="ingest clients to compare, in order")
    parser.add_argument("--jitter-buffer-target", type=float, default=None,
                        help="set RTCRtpReceiver.jitterBufferTarget (ms) in the page; default: Chromium's own")
    args = parser.parse_args()
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
