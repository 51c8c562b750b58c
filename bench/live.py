"""Live view: WebRTC and LL-HLS latency, WebRTC start time (main and sub stream), and the gateway's CPU per viewer.

Three kinds of process, so that only the gateway's own work is counted:

- the camera: bench/camera_farm.py encoding 1280x720 25 fps "busy" H.264 (~2 Mbit/s) live,
  so every frame carries its capture time in the demo time code; a second farm is the
  camera's 640x360 sub stream, which the gateway pulls only while someone watches it;
- the gateway: ``python -m gateway serve`` with one ``generic_rtsp`` camera pulling the farm
  (recording off), so its CPU is ingest + live output only; measured from /proc/<pid>/stat;
- the viewers: aiortc peers (here, or in 1-2 child processes for the CPU runs) and an
  LL-HLS client, all on 127.0.0.1.

Latency is "now − time code" for each decoded frame, so it covers camera encode, RTSP,
the gateway, WebRTC or HLS transport and the viewer's decode. When the gateway has access
control, the bench creates a user with ``citygate users add`` and uses an API token.

    python bench/live.py [--seconds 20] [--viewers 1,10,50] [--quick] [--ingest-client native]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from _client import (
    CpuMeter,
    auth_headers,
    close_viewer,
    create_user,
    free_port,
    luma_top,
    median,
    open_viewer,
    percentile,
    sign_in,
    stop_process,
    udp_receive_errors,
    viewer_counter,
    wait_camera_online,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CAMERA_ID = "bench"
WIDTH, HEIGHT, FPS = 1280, 720, 25
#: aiortc's receiver releases a frame only when the next one starts (ARCHITECTURE.md).
AIORTC_HOLD_MS = 1000 / FPS
#: A viewer gets "full frame rate" at this share of the camera's rate or more.
FULL_RATE = 0.95
#: Percent of all cores busy at which a run is flagged as limited by the host.
SATURATED = 95.0

#: The sub stream: what a camera sends for wall tiles, pulled only while someone watches it.
SUB_WIDTH, SUB_HEIGHT, SUB_BITRATE = 640, 360, 500_000
#: The bench's ``live.sub-stream-linger``: short, so each cold sample starts a fresh pull.
SUB_LINGER = 1.0
#: bench/camera_farm.py's default keyframe interval, seconds.
SUB_GOP = 2.0

TARGET_WEBRTC_P50 = 150.0
TARGET_FIRST_FRAME = 300.0
TARGET_CPU_PER_VIEWER = 1.5
TARGET_HLS_P50 = 1500.0
TARGET_HLS_VS_FFMPEG = 1.5


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class MachineMeter:
    def start(self) -> None:
        self._start = machine_busy()

    def stop(self) -> float:
        """Percent of all cores busy since start()."""
        busy, total = machine_busy()
        return 100 * (busy - self._start[0]) / max(1, total - self._start[1])


# -- setup -------------------------------------------------------------------------------


def write_config(conf: Path, farm_url: str, sub_url: str, max_viewers: int, ingest_client: str = "ffmpeg") -> None:
    conf.mkdir(parents=True)
    (conf / "gateway.toml").write_text(
        '[server]\ndata-dir = "data"\n'
        f'[ingest]\nclient = "{ingest_client}"\n'
        f"[live]\nmax-viewers-per-camera = {max_viewers}\nmax-viewers = {max_viewers}\n"
        f"sub-stream-linger = {SUB_LINGER}\n"
        "[hls]\nidle-timeout = 2.0\n"
    )
    (conf / "cameras.toml").write_text(
        f'[[camera]]\nid = "{CAMERA_ID}"\nvendor = "generic_rtsp"\narea = "centre"\nrecord = false\n'
        f'[camera.options]\nurl = "{farm_url}"\nsub-url = "{sub_url}"\n'
    )
    roles = REPO / "conf" / "roles.toml"
    if roles.exists():
        shutil.copy(roles, conf / "roles.toml")


def start_farm(width: int = WIDTH, height: int = HEIGHT, bitrate: int = 2_000_000) -> tuple[subprocess.Popen, str]:
    farm = subprocess.Popen(
        [sys.executable, str(HERE / "camera_farm.py"), "--width", str(width), "--height", str(height),
         "--fps", str(FPS), "--pattern", "busy", "--preencoded-seconds", "0", "--bitrate", str(bitrate)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    ready, _, _ = select.select([farm.stdout], [], [], 30.0)
    line = farm.stdout.readline().split() if ready else []  # EOF (empty) if the farm dies
    if not line or line[0] != "READY":
        stop_process(farm)
        raise RuntimeError("camera farm did not start")
    return farm, line[1]


async def wait_http(base_url: str, gateway: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited ({gateway.returncode}):\n{log.read_text()[-3000:]}")
            try:
                async with http.get(f"{base_url}/api/health") as resp:
                    await resp.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
    raise RuntimeError(f"the gateway did not answer within {timeout:.0f}s")


# -- 1, 2: one decoding viewer -----------------------------------------------------------


async def webrtc_latency(http: aiohttp.ClientSession, base: str, seconds: float, warmup: float) -> dict:
    from gateway.media.timecode import read_timecode

    viewer = await open_viewer(http, base, CAMERA_ID)
    latencies: list[float] = []
    frames = 0
    try:
        track = viewer.track
        await asyncio.wait_for(track.recv(), 10)
        skip_until = time.monotonic() + warmup  # past the cached-GOP burst
        while time.monotonic() < skip_until:
            await asyncio.wait_for(track.recv(), 5)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            frame = await asyncio.wait_for(track.recv(), 5)
            now = time.time() * 1000
            frames += 1
            stamp = read_timecode(luma_top(frame))
            if stamp is not None:
                latencies.append(now - stamp)
        elapsed = time.monotonic() - started
    finally:
        await close_viewer(http, base, viewer)
    return {"latencies": latencies, "fps": frames / elapsed, "unreadable": frames - len(latencies)}


async def first_frames(http: aiohttp.ClientSession, base: str, sessions: int) -> dict:
    answers, firsts = [], []
    for _ in range(sessions):
        viewer = await open_viewer(http, base, CAMERA_ID)
        answers.append(1000 * (time.monotonic() - viewer.posted_at))
        try:
            await asyncio.wait_for(viewer.track.recv(), 10)
            firsts.append(1000 * (time.monotonic() - viewer.posted_at))
        finally:
            await close_viewer(http, base, viewer)
        await asyncio.sleep(0.3)
    return {"answers": answers, "firsts": firsts}


async def sub_first_frames(http: aiohttp.ClientSession, base: str, sessions: int, log: Path) -> dict:
    """Offer -> first frame of the sub stream: cold (this viewer starts the RTSP pull) and warm
    (a second viewer while the first holds the pull)."""
    cold, warm, sizes, chosen = [], [], set(), set()
    started = log.read_text().count(": started for a viewer")
    for _ in range(sessions):
        # The previous pull has stopped; the random part spreads the start over the camera's GOP,
        # since a cold viewer waits for the camera's next keyframe.
        await asyncio.sleep(SUB_LINGER + 1.0 + random.uniform(0, SUB_GOP))
        viewer = await open_viewer(http, base, CAMERA_ID, "sub")
        chosen.add(viewer.profile)
        try:
            frame = await asyncio.wait_for(viewer.track.recv(), 15)
            cold.append(1000 * (time.monotonic() - viewer.posted_at))
            sizes.add((frame.width, frame.height))
            other = await open_viewer(http, base, CAMERA_ID, "sub")
            try:
                await asyncio.wait_for(other.track.recv(), 10)
                warm.append(1000 * (time.monotonic() - other.posted_at))
            finally:
                await close_viewer(http, base, other)
        finally:
            await close_viewer(http, base, viewer)
    pulls = log.read_text().count(": started for a viewer") - started
    return {"cold": cold, "warm": warm, "sizes": sizes, "chosen": chosen, "pulls": pulls}


# -- 3: many non-decoding viewers in child processes --------------------------------------


async def child_viewers(base: str, count: int, token: str | None, camera_id: str = CAMERA_ID) -> None:
    """Child process: ``count`` peers of ``camera_id`` that count frames without decoding
    (``viewer_counter``); driven over stdin."""
    counter = viewer_counter()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(headers=auth_headers(token)) as http:
        limit = asyncio.Semaphore(5)

        async def one():
            async with limit:
                return await open_viewer(http, base, camera_id)

        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        viewers = [v for v in results if not isinstance(v, BaseException)]
        errors = [repr(e) for e in results if isinstance(e, BaseException)]

        def frames() -> list[int]:
            return [counter.frames(v) for v in viewers]

        async def packets() -> list[int]:
            return [await counter.packets(v) for v in viewers]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(frames()):
            await asyncio.sleep(0.1)
        print(json.dumps({"ready": len(viewers), "receiving": sum(1 for f in frames() if f), "errors": errors[:3]}), flush=True)
        try:
            while True:
                line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
                if line != "MARK":
                    break
                marked = time.monotonic()
                print(json.dumps({"t": marked, "frames": frames(), "packets": await packets()}), flush=True)
        finally:
            await asyncio.gather(*(close_viewer(http, base, v) for v in viewers), return_exceptions=True)


class ViewerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, base: str, count: int, token: str | None, camera_id: str = CAMERA_ID) -> ViewerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--child-viewers", str(count), "--url", base, "--camera", camera_id,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, env={**os.environ, "BENCH_TOKEN": token or ""},
        )
        return cls(proc)

    async def read(self, timeout: float) -> dict:
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"viewer process exited ({await self.proc.wait()})")
        return json.loads(line)

    async def mark(self) -> dict:
        self.proc.stdin.write(b"MARK\n")
        await self.proc.stdin.drain()
        return await self.read(10)

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        try:
            self.proc.stdin.write(b"QUIT\n")
            await self.proc.stdin.drain()
            await asyncio.wait_for(self.proc.wait(), 20)
        except (TimeoutError, ConnectionError):
            self.proc.kill()
            await self.proc.wait()


async def wait_steady(children: list[ViewerProcess], timeout: float = 20.0) -> None:
    """Wait until no viewer is still catching up (the cached GOP, a retransmission) at more than the frame rate.

    A new viewer gets the cached GOP at once, and a viewer whose first packets were lost gets
    a burst after its retransmissions; either would inflate the frame rate of the window.
    """
    deadline = time.monotonic() + timeout
    before = [await c.mark() for c in children]
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        after = [await c.mark() for c in children]
        rates = [(f1 - f0) / (a["t"] - b["t"]) for b, a in zip(before, after) for f0, f1 in zip(b["frames"], a["frames"])]
        if max(rates, default=0) <= 1.2 * FPS:
            return
        before = after


async def cpu_with_viewers(base: str, gateway_pid: int, token: str | None, count: int, seconds: float, warmup: float) -> dict:
    shares = [count] if count <= 10 else [count - count // 2, count // 2]
    children: list[ViewerProcess] = []
    try:
        for share in shares:
            children.append(await ViewerProcess.start(base, share, token))
        ready = [await c.read(90) for c in children]
        receiving = sum(r["receiving"] for r in ready)
        errors = [e for r in ready for e in r["errors"]]
        await asyncio.sleep(warmup)
        await wait_steady(children)
        gateway, machine = CpuMeter(gateway_pid), MachineMeter()
        clients = [CpuMeter(c.proc.pid) for c in children]
        before = [await c.mark() for c in children]
        drops = udp_receive_errors()
        gateway.start()
        machine.start()
        for meter in clients:
            meter.start()
        await asyncio.sleep(seconds)
        cpu = gateway.stop()
        busy = machine.stop()
        client_cpu = sum(m.stop() for m in clients)
        drops = udp_receive_errors() - drops
        after = [await c.mark() for c in children]
    finally:
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)

    def rates(key: str) -> list[float]:
        return [(n1 - n0) / (a["t"] - b["t"]) for b, a in zip(before, after) for n0, n1 in zip(b[key], a[key])]

    return {
        "viewers": count, "receiving": receiving, "errors": errors, "cpu": cpu, "fps": rates("frames"),
        "pps": rates("packets"), "client_cpu": client_cpu, "processes": len(children), "machine": busy, "drops": drops,
    }


# -- 4, 5: LL-HLS and ffmpeg ----------------------------------------------------------------

MUXER_LOG = re.compile(r"camera (\S+): HLS muxer stopped after ([\d.]+)s, (\d+) packets, ([\d.]+)s CPU")


async def hls_run(http: aiohttp.ClientSession, base: str, gateway_pid: int, seconds: float, warmup: float) -> dict | str:
    from _llhls import LlHlsClient

    from gateway.media.timecode import read_timecode

    url = f"{base}/api/cameras/{CAMERA_ID}/hls/index.m3u8"
    async with http.get(url) as resp:
        if resp.status == 404:
            return "HLS not available (no such route in this gateway)"
    client = LlHlsClient(http, url, read_timecode)
    task = asyncio.create_task(client.run(seconds, warmup))
    meter = CpuMeter(gateway_pid)
    try:
        await asyncio.wait({task}, timeout=warmup)
        meter.start()
        await asyncio.wait({task}, timeout=seconds)
        cpu = meter.stop()
        result = await asyncio.wait_for(task, 20)
    except Exception as exc:
        task.cancel()
        return f"HLS not available: {exc!r}"
    return {"result": result, "cpu": cpu}


def ffmpeg_hls_cpu(farm_url: str, out: Path, seconds: float, warmup: float) -> float | str:
    if shutil.which("ffmpeg") is None:
        return "ffmpeg not installed"
    out.mkdir()
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-rtsp_transport", "tcp", "-i", farm_url,
         "-c", "copy", "-f", "hls", "-hls_time", "1", str(out / "index.m3u8")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            return f"ffmpeg exited: {proc.stderr.read()[-500:]}"
        meter = CpuMeter(proc.pid)
        meter.start()
        time.sleep(seconds)
        cpu = meter.stop()
        segments = len(list(out.glob("*.ts")))
        return cpu if segments else "ffmpeg wrote no segment"
    finally:
        stop_process(proc)


# -- orchestration -------------------------------------------------------------------------


def header(title: str) -> None:
    print(f"\n{title}\n{'-' * len(title)}", flush=True)


async def measure(args: argparse.Namespace, base: str, gateway: subprocess.Popen, log: Path, password: str | None,
                  farm_pid: int, farm_url: str, tmp: Path) -> None:
    await wait_http(base, gateway, log)
    token = await sign_in(base, "bench", password) if password else None
    print(f"access: {'signed in as bench (API token)' if token else 'no sign-in (this gateway has no access control yet)'}")
    seconds, warmup = args.seconds, args.warmup
    async with aiohttp.ClientSession(headers=auth_headers(token)) as http:
        await wait_camera_online(http, base, CAMERA_ID)
        await asyncio.sleep(warmup)

        header("Gateway CPU baseline (camera ingested, no viewers)")
        meter, camera = CpuMeter(gateway.pid), CpuMeter(farm_pid)
        meter.start()
        camera.start()
        await asyncio.sleep(seconds)
        baseline = meter.stop()
        print(f"{'gateway CPU % of one core':<50} {baseline:>7.2f}")
        print(f"{'(the camera process, encoding live: not counted)':<50} {camera.stop():>7.2f}", flush=True)

        header(f"1. WebRTC glass-to-glass latency, one aiortc viewer, {seconds:.0f} s")
        r = await webrtc_latency(http, base, seconds, warmup=2.0)
        lat = r["latencies"]
        p50, p95 = percentile(lat, 50), percentile(lat, 95)
        print(f"{'frames':>8} {'fps':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'p50 browser-equiv':>18}  target p50")
        print(f"{len(lat):>8} {r['fps']:>6.1f} {p50:>8.0f} {p95:>8.0f} {max(lat, default=float('nan')):>8.0f} "
              f"{p50 - AIORTC_HOLD_MS:>18.0f}  <= {TARGET_WEBRTC_P50:.0f} ms: {verdict(p50 <= TARGET_WEBRTC_P50)}")
        print(f"note: aiortc's receiver holds each frame until the next one starts (+1 frame, {AIORTC_HOLD_MS:.0f} ms at "
              f"{FPS} fps);\n      a browser completes frames on the RTP marker bit. The browser-equivalent column "
              "subtracts one frame.\n      The figure includes the camera's encode and this client's decode.", flush=True)
        if r["unreadable"]:
            print(f"      {r['unreadable']} frames had no readable time code")

        header(f"2. WebRTC offer to first frame, {args.sessions} fresh sessions")
        r = await first_frames(http, base, args.sessions)
        print(f"{'':<28} {'median ms':>10} {'max ms':>8}")
        print(f"{'POST offer -> 201 answer':<28} {median(r['answers']):>10.0f} {max(r['answers']):>8.0f}")
        first = median(r["firsts"])
        print(f"{'POST offer -> first frame':<28} {first:>10.0f} {max(r['firsts']):>8.0f}  target <= "
              f"{TARGET_FIRST_FRAME:.0f} ms: {verdict(first <= TARGET_FIRST_FRAME)}")
        print("note: 'first frame' is the first decoded frame at the aiortc client (includes ICE, DTLS and decode).",
              flush=True)

        header(f"2b. Sub stream on demand ({SUB_WIDTH}x{SUB_HEIGHT}): offer to first frame, {args.sessions} sessions")
        r = await sub_first_frames(http, base, args.sessions, log)
        sizes = ", ".join(f"{w}x{h}" for w, h in sorted(r["sizes"]))
        print(f"{'':<44} {'median ms':>10} {'max ms':>8}")
        print(f"{'cold: this viewer starts the RTSP pull':<44} {median(r['cold']):>10.0f} {max(r['cold']):>8.0f}")
        print(f"{'warm: the pull already runs for another':<44} {median(r['warm']):>10.0f} {max(r['warm']):>8.0f}")
        print(f"served profile {'/'.join(sorted(r['chosen']))}, frames {sizes}, {r['pulls']} pulls started for "
              f"{args.sessions} cold sessions (linger {SUB_LINGER:g} s).\n"
              f"note: cold = RTSP DESCRIBE/SETUP/PLAY + waiting for the camera's next keyframe (GOP {SUB_GOP:g} s here, so\n"
              f"      about {SUB_GOP / 2:g} s on average and up to {SUB_GOP:g} s) + WebRTC; warm = the cached GOP sent at once.",
              flush=True)

        header(f"3. Gateway CPU with WebRTC viewers (% of one core, {seconds:.0f} s per run)")
        print(f"{'viewers':>7} {'procs':>5} {'CPU total':>9} {'per viewer':>10} {'marginal':>8} {'fps min':>7} "
              f"{'fps med':>7} {'full rate':>9} {'pkt/s med':>9} {'clients':>7} {'machine':>7} {'UDP drops':>9}")
        print(f"{0:>7} {'-':>5} {baseline:>9.2f}", flush=True)
        judged: tuple[int, float] | None = None  # the largest run where every viewer got full rate
        previous = (0, baseline)
        for count in args.viewer_counts:
            r = await cpu_with_viewers(base, gateway.pid, token, count, seconds, warmup)
            per = (r["cpu"] - baseline) / count
            marginal = (r["cpu"] - previous[1]) / (count - previous[0])
            previous = (count, r["cpu"])
            fps = r["fps"]
            full = sum(1 for f in fps if f >= FULL_RATE * FPS)
            if full == count:
                judged = (count, per)
            print(f"{count:>7} {r['processes']:>5} {r['cpu']:>9.2f} {per:>10.2f} {marginal:>8.2f} {min(fps, default=0):>7.1f} "
                  f"{median(fps):>7.1f} {f'{full}/{count}':>9} {median(r['pps']):>9.0f} {r['client_cpu']:>6.0f}% "
                  f"{r['machine']:>6.0f}% {r['drops']:>9}", flush=True)
            if r["errors"] or r["receiving"] < count:
                print(f"        {count - r['receiving']} viewers got no frame within 30 s; failed offers: {r['errors']}")
            if r["machine"] >= SATURATED:
                print("        the host's cores were saturated in this run: the figures show the machine's limit, "
                      "not only the gateway's")
            await asyncio.sleep(3)  # let the sessions close before the next run
        print("per viewer = (total - baseline) / viewers; marginal = the CPU added per viewer since the previous row.")
        print("Viewers: aiortc peers in separate processes that count the complete frames aiortc's jitter buffer "
              "assembles,\ninstead of decoding them (a patched decoder thread); pkt/s = RTP packets received "
              "(inbound-rtp stats).\nfull rate = viewers that got >= "
              f"{FULL_RATE:.0%} of {FPS} fps; clients = the viewer processes' CPU; machine = all {os.cpu_count()} "
              "cores busy,\nevery process on the host; UDP drops = datagrams the kernel dropped for full receive "
              "buffers (machine-wide).")
        if judged:
            count, per = judged
            print(f"target <= {TARGET_CPU_PER_VIEWER} % per viewer, judged on the largest run where every viewer got "
                  f"full rate ({count} viewers, {per:.2f} %): {verdict(per <= TARGET_CPU_PER_VIEWER)}", flush=True)
        else:
            print(f"target <= {TARGET_CPU_PER_VIEWER} % per viewer: not judged, no run had every viewer at full rate",
                  flush=True)

        header(f"4. LL-HLS latency, one client with blocking reloads and preload hints, {seconds:.0f} s")
        hls = await hls_run(http, base, gateway.pid, seconds, warmup)
        if isinstance(hls, str):
            print(hls, flush=True)
        else:
            res = hls["result"]
            p50, p95 = percentile(res.latencies, 50), percentile(res.latencies, 95)
            print(f"{'parts':>6} {'frames':>7} {'p50 ms':>8} {'p95 ms':>8} {'newest/part p50':>16} {'requests/s':>10}"
                  "  target p50")
            print(f"{res.parts:>6} {len(res.latencies):>7} {p50:>8.0f} {p95:>8.0f} {percentile(res.newest, 50):>16.0f}"
                  f" {res.requests / res.seconds:>10.1f}"
                  f"  <= {TARGET_HLS_P50:.0f} ms: {verdict(p50 <= TARGET_HLS_P50)}")
            print("note: now - time code of every frame when its part has arrived and been decoded (frames of a part "
                  "span one part);\n      'newest/part' is the part's last frame. A player that keeps "
                  f"PART-HOLD-BACK ({res.part_hold_back} s) behind the live edge adds up to that much.", flush=True)

    header("5. HLS muxing CPU: the gateway vs ffmpeg on the same camera (% of one core)")
    if isinstance(hls, str):
        print("HLS not available", flush=True)
        return
    gateway_hls = hls["cpu"] - baseline
    await asyncio.sleep(4)  # the muxer stops after its idle timeout and logs its own CPU
    muxer = MUXER_LOG.findall(log.read_text())
    ffmpeg = await asyncio.to_thread(ffmpeg_hls_cpu, farm_url, tmp / "ffmpeg-hls", seconds, warmup)
    print(f"{'gateway with one LL-HLS client, minus baseline':<52} {gateway_hls:>7.2f}")
    if muxer:
        _, elapsed, _, cpu = muxer[-1]
        print(f"{'  of which the muxer cutting parts (its own count)':<52} {100 * float(cpu) / float(elapsed):>7.2f}")
    if isinstance(ffmpeg, str):
        print(f"ffmpeg: {ffmpeg}")
        return
    ratio = gateway_hls / ffmpeg if ffmpeg > 0 else float("inf")
    print(f"{'ffmpeg -c copy -f hls -hls_time 1 (whole process)':<52} {ffmpeg:>7.2f}")
    print(f"{'ratio gateway / ffmpeg':<52} {ratio:>7.2f}  target <= {TARGET_HLS_VS_FFMPEG}x: "
          f"{verdict(ratio <= TARGET_HLS_VS_FFMPEG)}")
    rate = hls["result"].requests / hls["result"].seconds
    print(f"note: the gateway's share also answers the client's {rate:.0f} HTTP requests/s (blocking playlist reloads and\n"
          "      parts); ffmpeg writes files for nobody, and its figure includes its own RTSP ingest, which the\n"
          "      gateway's baseline already holds.", flush=True)


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="citygate-bench-live-"))
    farm = sub_farm = gateway = None
    log = tmp / "gateway.log"
    try:
        farm, farm_url = start_farm()
        sub_farm, sub_url = start_farm(SUB_WIDTH, SUB_HEIGHT, SUB_BITRATE)
        conf = tmp / "conf"
        write_config(conf, farm_url, sub_url, max(args.viewer_counts) + 5, args.ingest_client)
        password = create_user(conf, "bench")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with open(log, "w") as out:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(conf), "--bind", "127.0.0.1", "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )
        print(f"live-view benchmark: camera {WIDTH}x{HEIGHT} {FPS} fps H.264 ~2 Mbit/s (busy pattern, live time code) "
              f"from bench/camera_farm.py;\n{args.seconds:.0f} s per run, {os.cpu_count()} cores, gateway pid "
              f"{gateway.pid}, everything on 127.0.0.1; ingest client {args.ingest_client}", flush=True)
        asyncio.run(measure(args, base, gateway, log, password, farm.pid, farm_url, tmp))
    except Exception:
        if log.exists():
            print(f"--- gateway log (last lines) ---\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stop_process(gateway)
        stop_process(farm)
        stop_process(sub_farm)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement run")
    parser.add_argument("--warmup", type=float, default=3.0, help="settling time before each run")
    parser.add_argument("--viewers", default="1,10,50", help="viewer counts for the CPU runs")
    parser.add_argument("--sessions", type=int, default=10, help="fresh sessions for the first-frame time")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s runs")
    parser.add_argument("--ingest-client", choices=("ffmpeg", "native"), default="ffmpeg",
                        help="the gateway's RTSP ingest ([ingest] client); native completes pictures on the marker bit")
    parser.add_argument("--child-viewers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--camera", default=CAMERA_ID, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_viewers:
        asyncio.run(child_viewers(args.url, args.child_viewers, os.environ.get("BENCH_TOKEN") or None, args.camera))
        return
    if args.quick:
        args.seconds, args.warmup = 5.0, 2.0
    args.viewer_counts = [int(c) for c in args.viewers.split(",") if c.strip()]
    run(args)


if __name__ == "__main__":
    main()
