"""PTZ privacy-mask benchmark: what a mask that follows a moving dome costs.

One process, one demo dome (the virtual PTZ camera: 1280x720 25 fps, rendered and encoded
live with libx264 in the same process), a real ``Camera`` (RTSP ingest → tracker → mask
stage → public hub) with one lossless reader, measured three times over the same scene:

1. unmasked (passthrough), the dome still and then panning: the baseline — the demo
   camera's own rendering and encoding (dearer while the picture moves) plus ingest;
2. masked with a scene-anchored mask over the garden, the dome standing still;
3. the same mask while the dome pans continuously (projection of the mask from the tracked
   position for every picture, swept over the path of the move).

It prints the process CPU of each phase (% of one core), the mask stage's own thread CPU
split into decode / filter (projection and rasterising included) / encode, frames
delivered, and ingest → masked-packet delay. The goal of issue 14: masking while moving costs
no more than 1.2x masking while still.

    python bench/ptz_masking.py [--seconds 10] [--warmup 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _client import CpuMeter, percentile  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 25
#: The garden at home (pan 0, tilt 0, zoom 0.5), grown a little: as an administrator draws it.
GARDEN = ((0.67, 0.64), (0.81, 0.64), (0.81, 0.80), (0.67, 0.80))


async def phase(name: str, *, masked: bool, moving: bool, warmup: float, seconds: float) -> dict:
    from citygate_plugins.cameras.demo import DemoCamera, DemoOptions
    from gateway.cameras import Camera
    from gateway.config import CameraConfig, IngestConfig, MaskConfig, MaskingConfig
    from gateway.events import EventBus
    from gateway.plugins import load_plugins

    masks = (MaskConfig(points=GARDEN, filter="fill", drawn_at=(0.0, 0.0, 0.5)),) if masked else ()
    events = EventBus()
    camera = Camera(
        CameraConfig(
            id=f"dome-{name}", vendor="demo", area="bench",
            options=DemoOptions(width=WIDTH, height=HEIGHT, fps=FPS, keyframe_interval=2.0), masks=masks,
        ),
        DemoCamera, IngestConfig(), events, masking=MaskingConfig(encoder_threads=1),
        filters=load_plugins().mask_filters(),
    )
    await camera.start()
    count = 0
    delays: list[float] = []
    measuring = False

    async def read() -> None:
        nonlocal count
        while camera.hub.info is None:
            await asyncio.sleep(0.05)
        async for packet in camera.open_reader("bench", lossless=True):
            if measuring:
                count += 1
                delays.append(time.time() - packet.wallclock)

    reader = asyncio.create_task(read())
    head = camera.vendor.head
    try:
        await asyncio.sleep(warmup)
        if moving:
            # 6.75 degrees a second, a slow patrol pan, told to the tracker as PtzService does
            if camera.tracker is not None:
                camera.tracker.command_started()
            head.continuous_move(0.15, 0.0, 0.0)
            if camera.tracker is not None:
                camera.tracker.command_done()
        stats0 = _stage(camera)
        meter = CpuMeter(os.getpid())
        meter.start()
        measuring = True
        start = time.monotonic()
        await asyncio.sleep(seconds)
        measuring = False
        wall = time.monotonic() - start
        cpu = meter.stop()
        stats1 = _stage(camera)
    finally:
        head.stop()
        reader.cancel()
        await camera.stop()
        await events.aclose()
    steps = {k: stats1[k] - stats0[k] for k in stats0}
    frames = max(steps["frames"], 1)
    return {
        "phase": name,
        "cpu_percent": cpu,
        "fps": count / wall,
        "stage_percent": {k: 100 * steps[k] / wall for k in ("decode", "filter", "encode")},
        "stage_ms": {k: 1000 * steps[k] / frames for k in ("decode", "filter", "encode")},
        "delay_ms_p50": 1000 * percentile(delays, 50),
        "delay_ms_p95": 1000 * percentile(delays, 95),
    }


def _stage(camera) -> dict[str, float]:  # noqa: ANN001 - a gateway Camera
    s = camera.mask_stats()
    if s is None:
        return {"decode": 0.0, "filter": 0.0, "encode": 0.0, "frames": 0}
    return {"decode": s.decode, "filter": s.filter, "encode": s.encode, "frames": s.frames}


async def run(warmup: float, seconds: float) -> None:
    results = []
    for name, masked, moving in (
        ("unmasked-still", False, False), ("unmasked-moving", False, True),
        ("masked-still", True, False), ("masked-moving", True, True),
    ):
        results.append(await phase(name, masked=masked, moving=moving, warmup=warmup, seconds=seconds))
    print(f"# PTZ masking, demo dome {WIDTH}x{HEIGHT}@{FPS}, {seconds:g}s per phase, one process")
    print(f"{'phase':15} {'cpu %':>7} {'fps':>6} {'stage %':>8} {'decode ms':>10} {'filter ms':>10} {'encode ms':>10} {'delay p50/p95 ms':>18}")
    for r in results:
        stage = sum(r["stage_percent"].values())
        ms = r["stage_ms"]
        print(
            f"{r['phase']:15} {r['cpu_percent']:7.1f} {r['fps']:6.1f} {stage:8.1f} {ms['decode']:10.2f} {ms['filter']:10.2f} "
            f"{ms['encode']:10.2f} {r['delay_ms_p50']:8.0f}/{r['delay_ms_p95']:<8.0f}"
        )
    base_still, base_moving, still, moving = results
    still_stage = sum(still["stage_percent"].values())
    moving_stage = sum(moving["stage_percent"].values())
    # the camera renders and encodes a moving picture at a higher cost too: compare like with like
    cost_still = still["cpu_percent"] - base_still["cpu_percent"]
    cost_moving = moving["cpu_percent"] - base_moving["cpu_percent"]
    print(f"masking cost over passthrough (process CPU): still {cost_still:.1f} % of a core, moving {cost_moving:.1f} % "
          f"({cost_moving / cost_still:.2f}x)")
    print(f"mask stage while moving / while still: {moving_stage / still_stage:.2f}x "
          f"(filter step incl. projection: {moving['stage_ms']['filter'] / max(still['stage_ms']['filter'], 1e-9):.2f}x; goal <= 1.2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(run(args.warmup, args.seconds))


if __name__ == "__main__":
    main()
