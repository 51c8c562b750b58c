"""A stand-in for many cameras, in its own process so its CPU is not counted.

One demo camera in pre-encoded mode (encodes a few seconds once, then loops them) served
by Citygate's RTSP server; every client that connects gets its own RTSP session, exactly
as from separate cameras. Prints ``READY <url>`` and serves until killed.

    python bench/camera_farm.py --width 1280 --height 720 --fps 25 --bitrate 2000000
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from types import SimpleNamespace

from citygate_plugins.cameras.demo import DemoCamera, DemoOptions


async def serve(args: argparse.Namespace) -> None:
    options = DemoOptions(
        width=args.width, height=args.height, fps=args.fps, bitrate=args.bitrate,
        keyframe_interval=args.keyframe_interval, preencoded_seconds=args.preencoded_seconds, port=args.port,
        pattern=args.pattern,
    )
    camera = DemoCamera(SimpleNamespace(id="farm", name="Camera farm"), options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with camera:
        print("READY", await camera.stream_url(), flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--bitrate", type=int, default=2_000_000)
    parser.add_argument("--keyframe-interval", type=float, default=2.0)
    parser.add_argument("--preencoded-seconds", type=float, default=4.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pattern", default="busy", help="bars, gradient, or busy (a realistic bitrate)")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
