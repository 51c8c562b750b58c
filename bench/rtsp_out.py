"""RTSP re-stream: the gateway's CPU per RTSP client (% of one core), 10 FFmpeg clients on one camera.

Three kinds of process, so that only the gateway's own work is counted:

- the camera: bench/camera_farm.py encoding 1280x720 25 fps "busy" H.264 (~2 Mbit/s);
- the gateway: ``python -m gateway serve`` with one ``generic_rtsp`` camera (recording off)
  and ``[rtsp-out]`` on; its CPU is read from /proc/<pid>/stat;
- the clients: ``ffmpeg -rtsp_transport tcp|udp -i rtsp://.../cameras/bench -c copy -f null -``
  (no decoding, so the clients leave the 2 cores to the gateway), authenticated with an API
  token of a ``central-system`` account (``?token=``).

The figure is (CPU with N clients − CPU with none) / N, for TCP-interleaved and for UDP.
Goal: at most 0.5 % of one core per client.

    python bench/rtsp_out.py [--seconds 20] [--clients 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from _client import CpuMeter, create_user, free_port, sign_in, stop_process, wait_camera_online

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CAMERA_ID = "bench"
GOAL = 0.5  #: % of one core per client


def write_config(conf: Path, farm_url: str, rtsp_port: int) -> None:
    conf.mkdir(parents=True)
    (conf / "gateway.toml").write_text(
        '[server]\ndata-dir = "data"\n'
        f"[rtsp-out]\nenabled = true\nbind = \"127.0.0.1\"\nport = {rtsp_port}\n"
    )
    (conf / "cameras.toml").write_text(
        f'[[camera]]\nid = "{CAMERA_ID}"\nvendor = "generic_rtsp"\narea = "centre"\nrecord = false\n'
        f'[camera.options]\nurl = "{farm_url}"\n'
    )
    shutil.copy(REPO / "conf" / "roles.toml", conf / "roles.toml")


def start_farm() -> tuple[subprocess.Popen, str]:
    import select

    farm = subprocess.Popen(
        [sys.executable, str(HERE / "camera_farm.py"), "--width", "1280", "--height", "720", "--fps", "25",
         "--pattern", "busy", "--preencoded-seconds", "0", "--bitrate", "2000000"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    ready, _, _ = select.select([farm.stdout], [], [], 30.0)
    line = farm.stdout.readline().split() if ready else []
    if not line or line[0] != "READY":
        stop_process(farm)
        raise RuntimeError("camera farm did not start")
    return farm, line[1]


async def wait_http(base: str, gateway: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited ({gateway.returncode}):\n{log.read_text()[-3000:]}")
            try:
                async with http.get(f"{base}/api/health") as resp:
                    await resp.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
    raise RuntimeError(f"the gateway did not answer within {timeout:.0f}s")


def start_clients(url: str, count: int, transport: str) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-rtsp_transport", transport, "-i", url,
             "-c", "copy", "-f", "null", "-"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


async def measure_cpu(pid: int, seconds: float) -> float:
    meter = CpuMeter(pid)
    meter.start()
    await asyncio.sleep(seconds)
    return meter.stop()


async def measure(args: argparse.Namespace, base: str, rtsp_url: str, gateway: subprocess.Popen, log: Path, password: str) -> None:
    await wait_http(base, gateway, log)
    token = await sign_in(base, "bench-central", password)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        await wait_camera_online(http, base, CAMERA_ID)
    url = f"{rtsp_url}?token={token}"
    await asyncio.sleep(args.warmup)
    idle = await measure_cpu(gateway.pid, args.seconds)
    print(f"gateway, no RTSP client: {idle:5.1f} % of one core (ingest)", flush=True)
    results = {}
    for transport in ("tcp", "udp"):
        clients = start_clients(url, args.clients, transport)
        try:
            await asyncio.sleep(args.warmup)
            alive = sum(1 for c in clients if c.poll() is None)
            busy = await measure_cpu(gateway.pid, args.seconds)
            alive = min(alive, sum(1 for c in clients if c.poll() is None))
        finally:
            for client in clients:
                stop_process(client, 3.0)
        per_client = (busy - idle) / max(alive, 1)
        results[transport] = per_client
        verdict = "ok" if per_client <= GOAL else "OVER GOAL"
        print(f"{args.clients} FFmpeg clients over {transport.upper():3}: gateway {busy:5.1f} % "
              f"({alive} clients playing) -> {per_client:.2f} % of one core per client (goal <= {GOAL} %: {verdict})",
              flush=True)
        await asyncio.sleep(1.0)


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="citygate-bench-rtsp-out-"))
    farm = gateway = None
    log = tmp / "gateway.log"
    try:
        farm, farm_url = start_farm()
        conf = tmp / "conf"
        rtsp_port = free_port()
        write_config(conf, farm_url, rtsp_port)
        password = create_user(conf, "bench-central", role="central-system")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with open(log, "w") as out:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(conf), "--bind", "127.0.0.1", "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )
        print(f"RTSP re-stream benchmark: camera 1280x720 25 fps H.264 ~2 Mbit/s from bench/camera_farm.py; "
              f"{args.seconds:.0f} s per run, {os.cpu_count()} cores, gateway pid {gateway.pid}", flush=True)
        asyncio.run(measure(args, base, f"rtsp://127.0.0.1:{rtsp_port}/cameras/{CAMERA_ID}", gateway, log, password))
    except Exception:
        if log.exists():
            print(f"--- gateway log (last lines) ---\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stop_process(gateway)
        stop_process(farm)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement run")
    parser.add_argument("--warmup", type=float, default=3.0, help="settling time before each run")
    parser.add_argument("--clients", type=int, default=10, help="FFmpeg clients")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s runs")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup = 5.0, 2.0
    run(args)


if __name__ == "__main__":
    main()
