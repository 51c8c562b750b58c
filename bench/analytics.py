"""Analytics benchmark: CPU per camera of decoding and vehicle counting at 720p, and the
counter's accuracy against the synthetic street's ground truth.

The street of ``tests/traffic_video.py`` at 1280x720, 25 fps, encoded once with libx264
(ultrafast, ~2 Mbit/s, a keyframe a second: the bitrate is printed; real streets cost more
to decode than this synthetic one), then:

1. **steps**: thread CPU per picture of PyAV decoding (every picture, as a camera needs),
   of the luma copy, and of the ``vehicle-count`` analyzer at its default 10 fps;
2. **runner**: ``--cameras`` cameras' packets published in real time into hubs that the
   real ``AnalyticsRunner`` reads (pump on the loop, decode thread, analyzer thread), the
   process's CPU over ``--seconds``: % of one core per camera, as the gateway would spend
   on top of ingest (RTSP ingest itself: see bench/ingest.py);
3. **accuracy**: vehicles counted per lane and direction through encode and decode, against
   the ground truth.

    python bench/analytics.py [--seconds 20] [--cameras 1] [--fps 10]

Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from citygate_plugins.analytics.vehicle_count import VehicleCounter, VehicleCountOptions  # noqa: E402
from gateway.analytics.runner import AnalyticsRunner, frame_converter  # noqa: E402
from gateway.config import AnalyticsConfig  # noqa: E402
from gateway.interfaces import AnalyzerFrame  # noqa: E402
from gateway.media.h26x import ParameterSetKeeper  # noqa: E402
from gateway.media.hub import StreamHub  # noqa: E402
from gateway.media.packet import CLOCK_RATE, TIME_BASE, MediaPacket, StreamInfo  # noqa: E402
from tests.traffic_video import SCENARIO_SECONDS, Street, ground_truth  # noqa: E402

W, H, FPS = 1280, 720, 25
LEAD = 2.0  #: seconds of empty street before the vehicles (background learning)
OPTIONS = {
    "lines": [{
        "name": "main", "points": [[0.5, 0.05], [0.5, 0.95]], "directions": ["eastbound", "westbound"],
        "lanes": [{"name": "north", "span": [0.0, 0.5]}, {"name": "south", "span": [0.5, 1.0], "one-way": "westbound"}],
    }],
}


def encode_clip() -> tuple[list[tuple[bytes, bool]], bytes, float]:
    """The street at 720p: (annex B access unit, keyframe) per picture, parameter sets, Mbit/s."""
    street = Street(W, H)
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS)
    ctx.bit_rate = 2_000_000
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0:repeat-headers=1"}
    keeper = ParameterSetKeeper("h264", b"")
    units: list[tuple[bytes, bool]] = []
    total = int((LEAD + SCENARIO_SECONDS) * FPS)
    for i in range(total):
        t = i / FPS - LEAD
        frame = street.frame(t if t >= 0 else None)
        frame.pts = i
        for packet in ctx.encode(frame):
            data, key = keeper.process(bytes(packet))
            units.append((data, key or packet.is_keyframe))
    for packet in ctx.encode(None):
        data, key = keeper.process(bytes(packet))
        units.append((data, key or packet.is_keyframe))
    mbits = sum(len(d) for d, _ in units) * 8 / (len(units) / FPS) / 1e6
    return units, keeper.parameter_sets, mbits


def options() -> VehicleCountOptions:
    return msgspec.convert(OPTIONS, VehicleCountOptions)


def steps(units: list[tuple[bytes, bool]], fps: float) -> dict[str, float]:
    """Thread CPU per picture of each step, and what counting found."""
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count = 1
    counter = VehicleCounter("bench", options())
    every = max(1, round(FPS / fps))
    decode = luma = count = 0.0
    analysed = 0
    found: Counter[tuple[str, str]] = Counter()
    for i, (data, _key) in enumerate(units):
        t0 = time.thread_time()
        packet = av.Packet(data)
        packet.pts = packet.dts = i * CLOCK_RATE // FPS
        packet.time_base = TIME_BASE
        frames = decoder.decode(packet)
        decode += time.thread_time() - t0
        for frame in frames:
            if i % every:
                continue
            t1 = time.thread_time()
            plane = frame_converter(frame)("gray")  # as the runner hands it over
            t2 = time.thread_time()
            picture = AnalyzerFrame("bench", i, i / FPS, frame.width, frame.height, lambda kind, p=plane: p)
            for obs in counter.analyze(picture):
                if obs.kind == "count":
                    found[(obs.payload["lane"], obs.payload["direction"])] += 1
            count += time.thread_time() - t2
            luma += t2 - t1
            analysed += 1
    n = len(units)
    return {
        "decode_ms": decode * 1000 / n, "luma_ms": luma * 1000 / max(analysed, 1), "count_ms": count * 1000 / max(analysed, 1),
        "decode_pct": 100 * decode / (n / FPS), "count_pct": 100 * (luma + count) / (n / FPS), "found": found,  # type: ignore[dict-item]
    }


async def runner(units: list[tuple[bytes, bool]], parameter_sets: bytes, cameras: int, seconds: float, fps: float) -> dict[str, float]:
    """The real runner on ``cameras`` hubs fed in real time; the process's CPU per camera."""
    entry = AnalyticsConfig(analyzer="vehicle-count", fps=fps, options=options())
    info = StreamInfo(codec="h264", width=W, height=H, parameter_sets=parameter_sets, declared_fps=FPS)
    hubs = [StreamHub(f"bench-{i}") for i in range(cameras)]
    fakes = [
        SimpleNamespace(
            id=f"bench-{i}", hub=hub, config=SimpleNamespace(analytics=(entry,)),
            open_reader=lambda name, hub=hub: hub.open_reader(name),
        )
        for i, hub in enumerate(hubs)
    ]
    step = 1 / FPS
    async with AnalyticsRunner({"vehicle-count": VehicleCounter}) as run:
        for fake in fakes:
            hub = fake.hub
            data, key = units[0]
            hub.publish(MediaPacket(data=data, pts=0, dts=0, keyframe=key, wallclock=time.time(), info=info))
            await run.attach(fake)  # type: ignore[arg-type]
        start = time.monotonic()
        cpu0 = time.process_time()
        i = 1
        while time.monotonic() - start < seconds:
            due = start + i * step
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            data, key = units[i % len(units)]
            now = time.time()
            for hub in hubs:
                hub.publish(MediaPacket(data=data, pts=i * CLOCK_RATE // FPS, dts=i * CLOCK_RATE // FPS, keyframe=key, wallclock=now, info=info))
            i += 1
        wall = time.monotonic() - start
        cpu = time.process_time() - cpu0
        stats = run.stats()
    analysed = sum(a.frames for s in stats for a in s.analyzers)
    skipped = sum(s.decode.skipped for s in stats)
    return {"pct_per_camera": 100 * cpu / wall / cameras, "analysed_fps": analysed / wall / cameras, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--fps", type=float, default=VehicleCounter.default_fps, help="analysed pictures per second")
    args = parser.parse_args()
    print(f"encoding the synthetic street at {W}x{H} {FPS} fps ...", flush=True)
    units, parameter_sets, mbits = encode_clip()
    print(f"clip: {len(units)} pictures, {mbits:.2f} Mbit/s (libx264 ultrafast)")
    s = steps(units, args.fps)
    print(f"decode: {s['decode_ms']:.2f} ms per picture = {s['decode_pct']:.1f} % of a core at {FPS} fps (every picture is decoded)")
    print(f"counting at {args.fps:g} fps: luma {s['luma_ms']:.2f} ms + analyzer {s['count_ms']:.2f} ms per analysed picture"
          f" = {s['count_pct']:.1f} % of a core")
    print(f"decode + counting: {s['decode_pct'] + s['count_pct']:.1f} % of a core per camera (steps, one thread)")
    truth = ground_truth()
    found = s["found"]
    right = sum(min(found[k], truth[k]) for k in truth)
    print(f"accuracy: counted {dict(found)}; truth {dict(truth)}; {right}/{sum(truth.values())} vehicles in the right lane and direction,"
          f" {sum(found.values()) - right} extra")
    r = asyncio.run(runner(units, parameter_sets, args.cameras, args.seconds, args.fps))
    print(f"runner, {args.cameras} camera(s) in real time for {args.seconds:g}s: {r['pct_per_camera']:.1f} % of a core per camera"
          f" (loop + decode thread + analyzer thread), {r['analysed_fps']:.1f} pictures analysed per second per camera,"
          f" {r['skipped']} packets skipped; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
