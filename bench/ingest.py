"""Ingest cost: CPU and memory per passthrough camera at N = 1, 8, 32, for each RTSP client
(the native one, the default, and FFmpeg's through PyAV).

Each N runs in a fresh process: N RTSP sources (a thread each) into N hubs with
one reader each, for --seconds after a warm-up. The cameras are served by
bench/camera_farm.py in another process, so their CPU is not counted. Prints CPU as %
of one core per camera (process user+system time over wall time), RSS per camera
(growth over the process before any camera started), and the frame rate each reader got.

    python bench/ingest.py [--seconds 60] [--counts 1,8,32] [--clients native,ffmpeg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(url: str, count: int, seconds: float, warmup: float, client: str) -> dict:
    from gateway.config import IngestConfig
    from gateway.media.hub import StreamHub
    from gateway.media.source import RtspSource, SourceState

    ingest = IngestConfig(client=client)
    base_rss = rss_bytes()
    hubs = [StreamHub(f"cam{i}") for i in range(count)]

    async def get_url() -> str:
        return url

    sources = [RtspSource(f"cam{i}", hub, get_url, ingest) for i, hub in enumerate(hubs)]
    received = [0] * count

    async def read(i: int, hub: StreamHub) -> None:
        while hub.info is None:
            await asyncio.sleep(0.05)
        async for _ in hub.open_reader("bench"):
            received[i] += 1

    for s in sources:
        await s.__aenter__()
    readers = [asyncio.create_task(read(i, h)) for i, h in enumerate(hubs)]
    await asyncio.sleep(warmup)
    online = sum(s.status.state == SourceState.ONLINE for s in sources)
    start_cpu, start_wall, start_frames = cpu_seconds(), time.monotonic(), sum(received)
    await asyncio.sleep(seconds)
    cpu, wall = cpu_seconds() - start_cpu, time.monotonic() - start_wall
    frames = sum(received) - start_frames
    end_rss = rss_bytes()
    for t in readers:
        t.cancel()
    for s in sources:
        await s.stop()
    return {
        "cameras": count,
        "online": online,
        "cpu_pct_per_camera": 100 * cpu / wall / count,
        "cpu_pct_total": 100 * cpu / wall,
        "rss_mib_per_camera": (end_rss - base_rss) / count / 2**20,
        "fps_per_camera": frames / wall / count,
    }


def run_child(url: str, count: int, seconds: float, warmup: float, client: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", url, "--counts", str(count), "--seconds", str(seconds), "--warmup", str(warmup),
         "--clients", client],
        capture_output=True, text=True, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="Citygate ingest benchmark")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--counts", default="1,8,32")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--clients", default="native,ffmpeg", help="RTSP clients ([ingest] client) to measure, in order")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child, counts[0], args.seconds, args.warmup, clients[0]))))
        return

    farm = subprocess.Popen(
        [sys.executable, str(HERE / "camera_farm.py"), "--width", str(args.width), "--height", str(args.height)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = farm.stdout.readline().split()
        if not line or line[0] != "READY":
            sys.exit("camera farm did not start")
        url = line[1]
        print(f"ingest benchmark: {args.width}x{args.height} 25 fps H.264 ~2 Mbit/s passthrough, "
              f"{args.seconds:.0f} s per run, {os.cpu_count()} cores")
        print(f"{'client':>7} {'cameras':>8} {'online':>7} {'CPU %/cam':>10} {'CPU % all':>10} {'RSS MiB/cam':>12} {'fps/cam':>8}")
        for count in counts:
            for client in clients:
                r = run_child(url, count, args.seconds, args.warmup, client)
                print(f"{client:>7} {r['cameras']:>8} {r['online']:>7} {r['cpu_pct_per_camera']:>10.2f} {r['cpu_pct_total']:>10.1f} "
                      f"{r['rss_mib_per_camera']:>12.2f} {r['fps_per_camera']:>8.1f}", flush=True)
        print("target at 32 cameras: <= 1.5 % of one core and <= 15 MiB RSS per camera")
    finally:
        farm.terminate()
        farm.wait(5)


if __name__ == "__main__":
    main()
