"""Analytics benchmark: CPU per camera of decoding, vehicle counting and plate reading at
720p, and their accuracy against the demo traffic camera's ground truth.

The demo camera's ``traffic`` pattern (``plugins/cameras/demo_traffic.py``: four lanes,
cars with Ukrainian, Polish and Vietnamese plates, motorbikes with Vietnamese two-line
plates, wrong-way drivers) at 1280x720, 25 fps, drawn by the demo camera's own renderer
(clock and time code included) over one whole loop of ``conf/cameras.toml``'s traffic
camera (``demo-4``), encoded once with libx264 (ultrafast, ~2 Mbit/s, a keyframe a second),
then:

1. **steps**: thread CPU per picture of PyAV decoding (every picture, as a camera needs),
   of the luma copy and the ``vehicle-count`` analyzer at its rate, and of the
   ``plate-reader`` at its rate (options and rates as configured for ``demo-4``);
2. **runner**: ``--cameras`` cameras' packets published in real time into hubs that the
   real ``AnalyticsRunner`` reads (pump on the loop, decode thread, analyzer thread; the
   counting analyzer only), the process's CPU over ``--seconds``: % of one core per camera,
   as the gateway would spend on top of ingest (RTSP ingest itself: see bench/ingest.py);
3. **accuracy**: vehicles counted per lane and direction over one loop (through encode and
   decode) against the ground truth (``demo_traffic.ground_truth``), wrong-way events against
   the wrong-way drivers, and plates read exactly against the plates driven past.

    python bench/analytics.py [--seconds 20] [--cameras 1] [--fps 10] [--seed N]
    python bench/analytics.py --real [--seconds 20]   # main against sub stream (stream = "sub")

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
from typing import Any

import av
import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from citygate_plugins.analytics.plate_reader import PlateReader  # noqa: E402
from citygate_plugins.analytics.vehicle_count import VehicleCounter  # noqa: E402
from citygate_plugins.cameras.demo import _Renderer  # noqa: E402 - the demo camera's own drawing
from citygate_plugins.cameras.demo_traffic import LINE_Y, TrafficOptions, ground_truth, passages  # noqa: E402
from gateway import config as config_mod  # noqa: E402
from gateway.analytics.runner import AnalyticsRunner, frame_converter  # noqa: E402
from gateway.config import AnalyticsConfig, CameraConfig  # noqa: E402
from gateway.interfaces import AnalyzerFrame  # noqa: E402
from gateway.media.h26x import ParameterSetKeeper  # noqa: E402
from gateway.media.hub import StreamHub  # noqa: E402
from gateway.media.packet import CLOCK_RATE, TIME_BASE, MediaPacket, StreamInfo  # noqa: E402
from gateway.plugins import load_plugins  # noqa: E402

W, H, FPS = 1280, 720, 25
LEAD = 4.0  #: seconds before the measured loop: background learning, as in tests/test_demo_traffic.py (40 pictures;
#: with 2 s, a vehicle already in view at the start can leave a ghost that counts: seed 2 counted 1 extra)
TAIL = 1.5  #: seconds after it (the last vehicles leave the picture)


def shipped_camera() -> CameraConfig:
    """The traffic camera of ``conf/cameras.toml``, its analytics options validated."""
    plugins = load_plugins()
    cfg = config_mod.load(ROOT / "conf", vendors=plugins.camera_vendors(), analyzers=plugins.analyzers(), env={})
    return next(c for c in cfg.cameras if c.options.pattern == "traffic")


def entry(camera: CameraConfig, analyzer: str) -> AnalyticsConfig:
    return next(a for a in camera.analytics if a.analyzer == analyzer)


def encode_clip(camera: CameraConfig, start: float, seconds: float, *, width: int = W, height: int = H,
                pattern: str | None = None, preset: str = "ultrafast", bitrate: int = 2_000_000,
                ) -> tuple[list[tuple[bytes, bool, float]], bytes, float, float]:
    """The traffic (or another demo ``pattern``) from ``start``: (annex B access unit,
    keyframe, scene time) per picture, parameter sets, Mbit/s, and ms to draw a picture."""
    options = msgspec.structs.replace(camera.options, width=width, height=height, fps=FPS)
    if pattern is not None:
        options = msgspec.structs.replace(options, pattern=pattern)
    renderer = _Renderer(options, camera.name or camera.id)
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS)
    ctx.bit_rate = bitrate
    params = f"keyint={FPS}:min-keyint={FPS}:scenecut=0:repeat-headers=1:bframes=0"
    ctx.options = {"preset": preset, "tune": "zerolatency", "x264-params": params}
    if preset != "ultrafast":
        ctx.options = {**ctx.options, "profile": "main"}  # CABAC and deblocking, like a real camera
    keeper = ParameterSetKeeper("h264", b"")
    units: list[tuple[bytes, bool, float]] = []
    total = int(seconds * FPS)
    draw = 0.0
    for i in range(total):
        at = start + i / FPS
        t0 = time.perf_counter()
        frame = renderer.render(i, at)
        draw += time.perf_counter() - t0
        frame.pts = i
        for packet in ctx.encode(frame):
            data, key = keeper.process(bytes(packet))
            units.append((data, key or packet.is_keyframe, start + packet.pts / FPS))
    for packet in ctx.encode(None):
        data, key = keeper.process(bytes(packet))
        units.append((data, key or packet.is_keyframe, start + packet.pts / FPS))
    mbits = sum(len(d) for d, _, _ in units) * 8 / (len(units) / FPS) / 1e6
    return units, keeper.parameter_sets, mbits, draw * 1000 / total


def steps(units: list[tuple[bytes, bool, float]], camera: CameraConfig, fps: float, *, plates: bool = True) -> dict[str, Any]:
    """Thread CPU per picture of each step, and what counting and plate reading found."""
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count = 1
    counting, plates = entry(camera, "vehicle-count"), entry(camera, "plate-reader")
    counter = VehicleCounter("bench", counting.options)
    reader = PlateReader("bench", plates.options)
    every = max(1, round(FPS / fps))
    every_plate = max(1, round(FPS / (plates.fps or PlateReader.default_fps)))
    decode = luma = count = plate = 0.0
    analysed = read = 0
    found: list[tuple[float, str, dict]] = []
    for i, (data, _key, at) in enumerate(units):
        t0 = time.thread_time()
        packet = av.Packet(data)
        packet.pts = packet.dts = i * CLOCK_RATE // FPS
        packet.time_base = TIME_BASE
        frames = decoder.decode(packet)
        decode += time.thread_time() - t0
        for frame in frames:
            at = units[0][2] + frame.pts / CLOCK_RATE
            if i % every == 0:
                t1 = time.thread_time()
                plane = frame_converter(frame)("gray")  # as the runner hands it over
                t2 = time.thread_time()
                picture = AnalyzerFrame("bench", frame.pts, at, frame.width, frame.height, lambda kind, p=plane: p)
                found += [(o.at, o.kind, o.payload) for o in counter.analyze(picture)]
                count += time.thread_time() - t2
                luma += t2 - t1
                analysed += 1
            if plates and i % every_plate == 0:
                t3 = time.thread_time()
                picture = AnalyzerFrame("bench", frame.pts, at, frame.width, frame.height, frame_converter(frame))
                found += [(o.at, o.kind, o.payload) for o in reader.analyze(picture)]
                plate += time.thread_time() - t3
                read += 1
    n = len(units)
    return {
        "decode_ms": decode * 1000 / n, "luma_ms": luma * 1000 / max(analysed, 1), "count_ms": count * 1000 / max(analysed, 1),
        "decode_pct": 100 * decode / (n / FPS), "count_pct": 100 * (luma + count) / (n / FPS),
        "plate_ms": plate * 1000 / max(read, 1), "plate_pct": 100 * plate / (n / FPS), "plate_fps": FPS / every_plate,
        "found": found,
    }


def accuracy(options: TrafficOptions, found: list[tuple[float, str, dict]], start: float, end: float) -> list[str]:
    """Lines comparing what the analyzers found in ``[start, end)`` with the ground truth."""
    truth = ground_truth(options, start, end, LINE_Y)
    counted = Counter((p["lane"], p["direction"]) for at, kind, p in found if kind == "count" and start <= at < end)
    right = sum(min(counted[k], truth[k]) for k in truth)
    lines = [
        f"counting: {right}/{sum(truth.values())} vehicles in the right lane and direction, {sum(counted.values()) - right} extra"
        f" ({'equal to' if counted == truth else 'differs from'} the ground truth per lane and direction)",
    ]
    for key in sorted(set(truth) | set(counted)):
        lines.append(f"  {key[0]} {key[1]}: counted {counted[key]}, truth {truth[key]}")
    passed = passages(options, start, end, LINE_Y)
    wrong = sorted((p.vehicle.lane, p.vehicle.direction) for p in passed if p.vehicle.wrong_way)
    events = sorted((p["lane"], p["direction"]) for at, kind, p in found if kind == "wrong-direction" and start <= at < end)
    lines.append(f"wrong way: {len(events)} events for {len(wrong)} wrong-way drivers ({'the same' if events == wrong else 'differ'})")
    plates = {p.vehicle.plate: p.vehicle for p in passed}
    reads = [p["plate"] for _, kind, p in found if kind == "plate"]
    exact = set(plates) & set(reads)
    wrong_reads = [r for r in reads if r not in plates]
    by_kind = Counter((v.kind, v.country) for v in plates.values())
    exact_kind = Counter((plates[p].kind, plates[p].country) for p in exact)
    lines.append(f"plates: {len(exact)}/{len(plates)} read exactly ({100 * len(exact) / max(len(plates), 1):.0f} %), "
                 f"{len(wrong_reads)} wrong reads {wrong_reads or ''}; "
                 + ", ".join(f"{k[1]} {k[0]}s {exact_kind[k]}/{n}" for k, n in sorted(by_kind.items())))
    missed = sorted(" / ".join(plates[p].lines) for p in set(plates) - exact)
    if missed:
        lines.append(f"  missed: {', '.join(missed)}")
    return lines


async def runner(units: list[tuple[bytes, bool, float]], parameter_sets: bytes, camera: CameraConfig, cameras: int,
                 seconds: float, fps: float, size: tuple[int, int] = (W, H)) -> dict[str, float]:
    """The real runner on ``cameras`` hubs fed in real time; the process's CPU per camera."""
    counting = AnalyticsConfig(analyzer="vehicle-count", fps=fps, options=entry(camera, "vehicle-count").options)
    info = StreamInfo(codec="h264", width=size[0], height=size[1], parameter_sets=parameter_sets, declared_fps=FPS)
    hubs = [StreamHub(f"bench-{i}") for i in range(cameras)]
    fakes = [
        SimpleNamespace(
            id=f"bench-{i}", hub=hub, config=SimpleNamespace(analytics=(counting,)),
            open_reader=lambda name, hub=hub: hub.open_reader(name),
            masked=False, tap_masked_pictures=lambda *args, **kwargs: None,  # no privacy masks here
        )
        for i, hub in enumerate(hubs)
    ]

    async def feed(seconds: float) -> tuple[float, float]:
        """Publish the clip into every hub in real time: (wall seconds, process CPU seconds)."""
        start = time.monotonic()
        cpu0 = time.process_time()
        i = 1
        while time.monotonic() - start < seconds:
            due = start + i / FPS
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            data, key, _ = units[i % len(units)]
            now = time.time()
            for hub in hubs:
                hub.publish(MediaPacket(data=data, pts=i * CLOCK_RATE // FPS, dts=i * CLOCK_RATE // FPS, keyframe=key, wallclock=now, info=info))
            i += 1
        return time.monotonic() - start, time.process_time() - cpu0

    # the feeding alone (hubs without readers): what a camera's ingest would cost anyway
    feed_wall, feed_cpu = await feed(min(seconds, 10.0))
    async with AnalyticsRunner({"vehicle-count": VehicleCounter}) as run:
        for fake in fakes:
            hub = fake.hub
            data, key, _ = units[0]
            hub.publish(MediaPacket(data=data, pts=0, dts=0, keyframe=key, wallclock=time.time(), info=info))
            await run.attach(fake)  # type: ignore[arg-type]
        wall, cpu = await feed(seconds)
        stats = run.stats()
    analysed = sum(a.frames for s in stats for a in s.analyzers)
    skipped = sum(s.decode.skipped for s in stats)
    decoding = 100 * sum(s.decode.cpu_seconds for s in stats) / wall / cameras
    analysing = 100 * sum(a.cpu_seconds for s in stats for a in s.analyzers) / wall / cameras
    total = 100 * cpu / wall / cameras
    feeding = 100 * feed_cpu / feed_wall / cameras
    return {"pct_per_camera": total - feeding, "pct_with_feeding": total, "pct_feeding": feeding,
            "pct_decoding": decoding, "pct_analysing": analysing,
            "analysed_fps": analysed / wall / cameras, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--fps", type=float, default=VehicleCounter.default_fps, help="analysed pictures per second (counting)")
    parser.add_argument("--seed", type=int, default=None, help="another traffic seed than conf/cameras.toml's")
    parser.add_argument("--real", action="store_true",
                        help="the runner on camera-like streams instead (libx264 veryfast, main profile, no B-frames):"
                             " 720p main stream against a 640x360 sub stream, CPU and counting accuracy")
    args = parser.parse_args()
    if args.real:
        real(args)
        return
    camera = shipped_camera()
    traffic: TrafficOptions = camera.options.traffic
    if args.seed is not None:
        traffic = msgspec.structs.replace(traffic, seed=args.seed)
        camera = msgspec.structs.replace(camera, options=msgspec.structs.replace(camera.options, traffic=traffic))
    loop = traffic.loop_seconds
    start = traffic.origin + 1000 * loop  # a loop's start, LEAD seconds into the clip
    print(f"encoding one loop of camera {camera.id}'s traffic ({traffic.vehicles} vehicles in {loop:g} s, seed {traffic.seed})"
          f" at {W}x{H} {FPS} fps ...", flush=True)
    units, parameter_sets, mbits, draw_ms = encode_clip(camera, start - LEAD, LEAD + loop + TAIL)
    print(f"clip: {len(units)} pictures, {mbits:.2f} Mbit/s (libx264 ultrafast); the demo camera draws a picture in {draw_ms:.2f} ms")
    s = steps(units, camera, args.fps)
    print(f"decode: {s['decode_ms']:.2f} ms per picture = {s['decode_pct']:.1f} % of a core at {FPS} fps (every picture is decoded)")
    print(f"counting at {args.fps:g} fps: luma {s['luma_ms']:.2f} ms + analyzer {s['count_ms']:.2f} ms per analysed picture"
          f" = {s['count_pct']:.1f} % of a core")
    print(f"plate reading at {s['plate_fps']:g} fps: {s['plate_ms']:.1f} ms per analysed picture = {s['plate_pct']:.1f} % of a core")
    print(f"decode + counting + plates: {s['decode_pct'] + s['count_pct'] + s['plate_pct']:.1f} % of a core per camera (steps, one thread)")
    for line in accuracy(traffic, s["found"], start, start + loop):
        print(line)
    r = asyncio.run(runner(units, parameter_sets, camera, args.cameras, args.seconds, args.fps))
    print(f"runner, {args.cameras} camera(s) in real time for {args.seconds:g}s: {r['pct_per_camera']:.1f} % of a core per camera"
          f" (loop + decode thread + counting thread; {r['pct_with_feeding']:.1f} % with the bench feeding the hub, which alone"
          f" takes {r['pct_feeding']:.1f} %), {r['analysed_fps']:.1f} pictures analysed per second per camera,"
          f" {r['skipped']} packets skipped; {os.cpu_count()} cores")


SUB = (640, 360)


def real(args: argparse.Namespace) -> None:
    """What ``stream = "sub"`` saves on a camera-like stream, and what it does to counting."""
    camera = shipped_camera()
    traffic: TrafficOptions = camera.options.traffic
    loop = traffic.loop_seconds
    start = traffic.origin + 1000 * loop
    print(f"encoding one loop of the traffic at {W}x{H} (4 Mbit/s) and {SUB[0]}x{SUB[1]} (1 Mbit/s), libx264 veryfast,"
          " main profile, no B-frames (CABAC and deblocking, like a camera) ...", flush=True)
    clips = {}
    for name, size, rate in (("main", (W, H), 4_000_000), ("sub", SUB, 1_000_000)):
        clips[name] = (size, *encode_clip(camera, start - LEAD, LEAD + loop + TAIL, width=size[0], height=size[1],
                                          preset="veryfast", bitrate=rate))
    for name in ("main", "sub", "main", "sub"):  # alternated: the machine's load changes meanwhile
        size, units, ps, mbits, _ = clips[name]
        r = asyncio.run(runner(units, ps, camera, args.cameras, args.seconds, args.fps, size))
        print(f"runner on the {name} stream ({size[0]}x{size[1]}, {mbits:.1f} Mbit/s), {args.cameras} camera(s), {args.seconds:g} s:"
              f" {r['pct_per_camera']:.1f} % of a core per camera ({r['pct_with_feeding']:.1f} % with the bench feeding the hub,"
              f" {r['pct_feeding']:.1f} % alone; in its threads: decoding {r['pct_decoding']:.1f} %, counting"
              f" {r['pct_analysing']:.1f} %), {r['analysed_fps']:.1f} pictures analysed per second,"
              f" {r['skipped']} packets skipped", flush=True)
    for name in ("main", "sub"):
        size, units, _, mbits, _ = clips[name]
        s = steps(units, camera, args.fps, plates=False)
        print(f"{name} stream: decode {s['decode_pct']:.1f} %, counting {s['count_pct']:.1f} % of a core (steps, one thread)")
        for line in accuracy(traffic, s["found"], start, start + loop):
            if not line.startswith(("plates", "  missed")):
                print("  " + line)

if __name__ == "__main__":
    main()
