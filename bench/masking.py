"""Privacy-mask benchmark: CPU per masked 720p25 camera, its breakdown, how many masked
cameras this machine keeps in real time, and FFmpeg doing the same job in the same run.

Processes, so that each side's CPU is its own:

- the camera: bench/camera_farm.py, 1280x720 25 fps "busy" H.264 (~2 Mbit/s), pre-encoded
  and looped (costs almost nothing); every RTSP client gets its own session;
- ours: this script in ``--worker`` mode, running N real ``Camera``s (RTSP ingest → private
  unmasked hub → ``MaskStage``: PyAV decode, the ``fill`` filter plugin, libx264 encode →
  public hub) with one reader each, as the gateway does; CPU from /proc/<pid>/stat, the
  decode/filter/encode split from the stage's per-thread CPU clocks;
- the peer: ``ffmpeg -rtsp_transport tcp -i rtsp://… -vf drawbox=…:t=fill -c:v libx264
  -preset ultrafast -tune zerolatency -b:v 2M -g 50 -f null -`` on the same camera, both as
  given (FFmpeg picks its threads) and with one thread like ours (``-threads 1``).

    python bench/masking.py [--seconds 10] [--max-cameras 8] [--quick]

``--playback`` measures instead how fast a recording made before a mask is played back
masked (``gateway.recording.remask``: decode, the ``fill`` filter, libx264 with the mask
stage's settings, fMP4 like the recorder's), in multiples of real time, over
``--playback-minutes`` (default 10) of 60 s recorded 720p25 segments. Goal: >= 4x.

    python bench/masking.py --playback [--playback-minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _client import CpuMeter, percentile, stop_process  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 25
BITRATE = 2_000_000
KEYFRAME_SECONDS = 2.0
#: The masked rectangle, normalised: a third of the width, half of the height.
RECT = ((0.30, 0.20), (0.63, 0.20), (0.63, 0.70), (0.30, 0.70))
REAL_TIME = 0.97  #: share of the camera's frames a camera must deliver to count as real time


# -- the worker: our mask stage, N cameras ------------------------------------------------


async def worker(url: str, cameras: int, warmup: float, seconds: float) -> dict:
    from citygate_plugins.cameras.generic_rtsp import GenericRtspCamera, GenericRtspOptions
    from gateway.cameras import Camera
    from gateway.config import CameraConfig, IngestConfig, MaskConfig, MaskingConfig
    from gateway.events import EventBus
    from gateway.plugins import load_plugins

    filters = load_plugins().mask_filters()
    masking = MaskingConfig(preset="ultrafast", bitrate=BITRATE, keyframe_interval=KEYFRAME_SECONDS, encoder_threads=1)
    events = EventBus()
    cams = [
        Camera(
            CameraConfig(
                id=f"m{i}", vendor="generic_rtsp", area="bench", options=GenericRtspOptions(url=url),
                masks=(MaskConfig(points=RECT, filter="fill"),),
            ),
            GenericRtspCamera, IngestConfig(), events, masking=masking, filters=filters,
        )
        for i in range(cameras)
    ]
    await asyncio.gather(*(c.start() for c in cams))
    counts = [0] * cameras
    delays: list[float] = []
    measuring = False

    async def read(i: int, cam: Camera) -> None:
        while cam.hub.info is None:
            await asyncio.sleep(0.05)
        async for packet in cam.open_reader("bench", lossless=True):
            if measuring:
                counts[i] += 1
                delays.append(time.time() - packet.wallclock)  # ingest → masked packet out

    readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(cams)]
    try:
        await asyncio.sleep(warmup)
        before = [_stats(c) for c in cams]
        meter = CpuMeter(os.getpid())
        meter.start()
        measuring = True
        start = time.monotonic()
        await asyncio.sleep(seconds)
        measuring = False
        wall = time.monotonic() - start
        cpu = meter.stop()
        after = [_stats(c) for c in cams]
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*(c.stop() for c in cams), return_exceptions=True)
        await events.aclose()
    steps = {k: sum(a[k] - b[k] for a, b in zip(after, before)) for k in ("decode", "filter", "encode", "frames", "skipped")}
    return {
        "cameras": cameras,
        "cpu_percent": cpu,
        "wall": wall,
        "fps": [c / wall for c in counts],
        "skipped": steps["skipped"],
        "frames": steps["frames"],
        "in_fps": steps["frames"] / wall / cameras,
        "step_percent": {k: 100 * steps[k] / wall for k in ("decode", "filter", "encode")},
        "step_ms": {k: 1000 * steps[k] / max(steps["frames"], 1) for k in ("decode", "filter", "encode")},
        "delay_ms_p50": 1000 * percentile(delays, 50),
        "delay_ms_p95": 1000 * percentile(delays, 95),
    }


def _stats(camera) -> dict[str, float]:  # noqa: ANN001 - a gateway Camera
    stats = camera.mask_stats()
    if stats is None:
        return {"decode": 0.0, "filter": 0.0, "encode": 0.0, "frames": 0, "skipped": 0}
    return {"decode": stats.decode, "filter": stats.filter, "encode": stats.encode, "frames": stats.frames, "skipped": stats.skipped}


# -- the parent: farm, ours, ffmpeg -------------------------------------------------------


def start_farm() -> tuple[subprocess.Popen, str]:
    farm = subprocess.Popen(
        [sys.executable, str(HERE / "camera_farm.py"), "--width", str(WIDTH), "--height", str(HEIGHT), "--fps", str(FPS),
         "--bitrate", str(BITRATE), "--keyframe-interval", str(KEYFRAME_SECONDS), "--pattern", "busy",
         "--preencoded-seconds", "4"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    ready, _, _ = select.select([farm.stdout], [], [], 60.0)
    line = farm.stdout.readline().split() if ready else []
    if not line or line[0] != "READY":
        stop_process(farm)
        raise RuntimeError("camera farm did not start")
    return farm, line[1]


def run_ours(url: str, cameras: int, warmup: float, seconds: float) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", url, "--cameras", str(cameras), "--warmup", str(warmup), "--seconds", str(seconds)],
        capture_output=True, text=True, cwd=REPO, timeout=warmup + seconds + 60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ffmpeg_command(url: str, threads: int | None) -> list[str]:
    x0, y0 = RECT[0]
    x1, y1 = RECT[2]
    box = f"drawbox=x={round(x0 * WIDTH)}:y={round(y0 * HEIGHT)}:w={round((x1 - x0) * WIDTH)}:h={round((y1 - y0) * HEIGHT)}:color=black:t=fill"
    thread_args = ["-threads", str(threads)] if threads else []
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostats", *thread_args, "-rtsp_transport", "tcp", "-i", url,
        "-vf", box, "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", str(BITRATE),
        "-g", str(round(KEYFRAME_SECONDS * FPS)), *thread_args, "-f", "null", "-",
    ]  # fmt: skip


def run_ffmpeg(url: str, threads: int | None, warmup: float, seconds: float) -> dict:
    cmd = ffmpeg_command(url, threads)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"ffmpeg exited: {proc.stderr.read()[-2000:]}")
        meter = CpuMeter(proc.pid)
        meter.start()
        time.sleep(seconds)
        cpu = meter.stop()
    finally:
        stop_process(proc)
    return {"cpu_percent": cpu, "command": " ".join(cmd)}


def real_time(result: dict) -> bool:
    return min(result["fps"]) >= REAL_TIME * FPS and result["skipped"] == 0


# -- masked playback of a recording made before the mask ---------------------------------


def recorded_segment(seconds: float, start: float) -> bytes:
    """A stored segment as the recorder writes it: 720p25 H.264, one-second fragments."""
    import numpy as np

    from gateway.config import MaskingConfig
    from gateway.live.fmp4 import Fragmenter
    from gateway.media.masking import _Encoder
    from gateway.media.packet import CLOCK_RATE, MediaPacket, StreamInfo

    import av

    camera = _Encoder(WIDTH, HEIGHT, FPS, MaskingConfig(preset="veryfast", bitrate=BITRATE, keyframe_interval=KEYFRAME_SECONDS))
    rng = np.random.default_rng(7)
    texture = rng.integers(16, 235, size=(HEIGHT, WIDTH + 64), dtype=np.uint8)
    fragmenter = Fragmenter(1 << 60, CLOCK_RATE, wallclock_timeline=True)
    parts, info = [], None
    step = CLOCK_RATE // FPS
    for i in range(round(seconds * FPS)):
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        y = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.planes[0].height, frame.planes[0].line_size)
        y[:, :WIDTH] = texture[:, (i * 2) % 64 : (i * 2) % 64 + WIDTH]  # a slow pan over texture
        for plane in frame.planes[1:]:
            np.frombuffer(plane, np.uint8)[:] = 128
        frame.pts, frame.time_base = i * step, Fraction(1, CLOCK_RATE)
        for data, pts, key in camera.encode(frame):
            if info is None:
                info = StreamInfo(codec="h264", width=WIDTH, height=HEIGHT, parameter_sets=camera.keeper.parameter_sets)
            parts += fragmenter.push(MediaPacket(data, pts, pts, key, start + pts / CLOCK_RATE, info))
    parts += fragmenter.flush()
    return parts[0].init.data + b"".join(p.data for p in parts)


def playback_bench(minutes: float) -> None:
    from gateway.config import MaskingConfig
    from gateway.interfaces import MaskShape
    from gateway.media.masking import instantiate_filters
    from gateway.plugins import load_plugins
    from gateway.recording.remask import MaskPlan, mask_digest, remask_segment

    segment_seconds = 60.0
    count = max(1, round(minutes * 60 / segment_seconds))
    start = time.time() - 86400
    print(f"recording: {count} x {segment_seconds:.0f} s segments of {WIDTH}x{HEIGHT} {FPS} fps H.264 ~{BITRATE // 1000} kbit/s, "
          "recorded unmasked; a fill mask drawn later")
    made = time.monotonic()
    segment = recorded_segment(segment_seconds, start)
    print(f"  (made the source segment in {time.monotonic() - made:.1f} s: {len(segment) / 1e6:.1f} MB)")
    shapes = (MaskShape(points=RECT, filter="fill"),)
    plan = MaskPlan(camera="bench", version=1, digest=mask_digest(shapes), shapes=shapes)
    filters = instantiate_filters(load_plugins().mask_filters())
    settings = MaskingConfig()  # the gateway's defaults: what playback uses
    wall0, cpu0 = time.monotonic(), time.process_time()
    frames = 0
    for i in range(count):
        frames += remask_segment(segment, plan, filters, settings, start=start + i * segment_seconds).frames
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    seconds = count * segment_seconds
    print(f"masked playback: {seconds / 60:.0f} min of video re-masked in {wall:.1f} s ({frames} frames, "
          f"{frames / wall:.0f} fps) = {seconds / wall:.1f}x real time (goal >= 4x); "
          f"CPU {100 * cpu / wall:.0f} % of one core on this {os.cpu_count()}-core machine "
          f"(libx264 {settings.preset}, {settings.encoder_threads} encoder thread, decoder threads auto)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--max-cameras", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="short runs, capacity up to 5 cameras")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--cameras", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--playback", action="store_true", help="masked playback of a recording made before the mask")
    parser.add_argument("--playback-minutes", type=float, default=10.0)
    args = parser.parse_args()
    if args.playback:
        sys.path.insert(0, str(REPO))
        playback_bench(args.playback_minutes)
        return
    if args.worker:
        print(json.dumps(asyncio.run(worker(args.worker, args.cameras, args.warmup, args.seconds))), flush=True)
        return
    if args.quick:
        args.seconds, args.warmup, args.max_cameras = 6.0, 3.0, 5

    farm, url = start_farm()
    try:
        print(f"camera: {WIDTH}x{HEIGHT} {FPS} fps H.264 ~{BITRATE // 1000} kbit/s from bench/camera_farm.py ({url})")
        print(f"masked region: {RECT}; libx264 ultrafast, zerolatency, {BITRATE // 1000} kbit/s, keyframe every {KEYFRAME_SECONDS:.0f} s")
        print(f"machine: {os.cpu_count()} cores; CPU in % of one core; {args.seconds:.0f} s per measurement after {args.warmup:.0f} s warm-up\n")

        one = run_ours(url, 1, args.warmup, args.seconds)
        peer = run_ffmpeg(url, None, args.warmup, args.seconds)
        peer1 = run_ffmpeg(url, 1, args.warmup, args.seconds)
        s = one["step_percent"]
        ms = one["step_ms"]
        ingest = one["cpu_percent"] - sum(s.values())
        print("one masked camera")
        print(f"  Citygate mask stage          {one['cpu_percent']:6.1f} %   ({one['fps'][0]:.1f} fps out, "
              f"ingest→masked packet p50 {one['delay_ms_p50']:.0f} ms, p95 {one['delay_ms_p95']:.0f} ms)")
        print(f"    decode (PyAV)              {s['decode']:6.1f} %   {ms['decode']:.2f} ms/frame")
        print(f"    filter (fill, numpy)       {s['filter']:6.1f} %   {ms['filter']:.2f} ms/frame")
        print(f"    encode (libx264, 1 thread) {s['encode']:6.1f} %   {ms['encode']:.2f} ms/frame")
        print(f"    ingest, hubs, event loop   {ingest:6.1f} %")
        print(f"  ffmpeg, its own threads      {peer['cpu_percent']:6.1f} %")
        print(f"  ffmpeg -threads 1            {peer1['cpu_percent']:6.1f} %")
        print(f"  ratio Citygate / ffmpeg:     {one['cpu_percent'] / peer['cpu_percent']:.2f}x (its own threads), "
              f"{one['cpu_percent'] / peer1['cpu_percent']:.2f}x (one thread, same settings as ours); target <= 1.2x")
        print(f"  peer command: {peer['command']}\n")

        print("masked cameras in real time (every camera >= "
              f"{REAL_TIME * FPS:.1f} fps out, no GOP skipped)")
        sustained = 0
        for n in range(2, args.max_cameras + 1):
            result = run_ours(url, n, args.warmup, args.seconds)
            ok = real_time(result)
            fps = result["fps"]
            print(f"  {n} cameras: CPU {result['cpu_percent']:6.1f} % ({result['cpu_percent'] / n:.1f} % each), "
                  f"fps in {result['in_fps']:.1f}, out min {min(fps):.1f} / mean {sum(fps) / n:.1f}, skipped {result['skipped']}, "
                  f"delay p95 {result['delay_ms_p95']:.0f} ms -> {'real time' if ok else 'NOT real time'}")
            if not ok:
                break
            sustained = n
        else:
            print(f"  (stopped at --max-cameras {args.max_cameras})")
        sustained = max(sustained, 1 if real_time(one) else 0)
        print(f"\nsustained: {sustained} masked 720p25 cameras on this {os.cpu_count()}-core machine (target >= 4)")
    finally:
        stop_process(farm)


if __name__ == "__main__":
    main()
