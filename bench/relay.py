"""WebRTC fan-out cost: the gateway's CPU at 0, 1, 10, 50 and 100 viewers of one camera,
frames received per viewer, and the first-frame time (issue 17).

- camera: bench/camera_farm.py, 1280x720 25 fps "busy" H.264 ~2 Mbit/s, live;
- gateway: ``python -m gateway serve`` with one ``generic_rtsp`` camera on the farm, recording
  off; its CPU while the viewers watch, from the scheduler's run time of each thread
  (/proc/<pid>/task/*/schedstat, exact; ``_client.CpuMeter``);
- viewers: aiortc peers in child processes (bench/live.py's ``--child-viewers``) that count
  complete frames without decoding them: by default from the SRTP packets' clear RTP headers
  (every packet between two marker bits arrived), sending a receiver report a second, so a
  viewer costs little and 100 of them fit beside the servers on a small machine;
  ``--viewer-counter jitter`` lets aiortc decrypt every packet and assemble every frame in its
  jitter buffer instead (about three times the viewer's CPU).

Janus (Debian's ``janus`` 1.1.x, streaming plugin, an RTSP mountpoint on the same camera,
``event_loops = 2``) is the peer the issue compares against, in the same run with the same
viewers (``--janus``). Janus gathers no loopback ICE candidates, so the bench then makes a
network namespace of its own (root, ``ip netns``) holding a veth pair whose one end has
198.18.0.1/24 (the benchmarking range; the address exists only inside that namespace) and runs
everything in it: the camera, which must serve RTP over UDP for Janus and over TCP for the
gateway (tests/gst/camera_server.py's /h264 mount at 1280x720 25 fps, one encoder shared by
both servers), the gateway, Janus, and both kinds of viewers (Janus viewers: bench/_janus.py).
The namespace and whatever still runs in it are removed at exit, also on Ctrl-C.

    python bench/relay.py [--seconds 20] [--viewers 0,1,10,50,100] [--quick] [--janus]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _janus  # noqa: E402  (Janus: config, process, streaming-plugin viewers)
import live  # noqa: E402  (bench/live.py: camera farm, gateway start, child viewers)
from _client import (  # noqa: E402
    CpuMeter,
    auth_headers,
    create_user,
    free_port,
    median,
    sign_in,
    stop_process,
    udp_receive_errors,
    viewer_counter,
    VIEWER_COUNTER_ENV,
)

FPS = live.FPS
TARGET_FIRST_FRAME_MS = 100.0
#: Per-viewer CPU target: Citygate / Janus (event_loops = 2) in the same run.
TARGET_RATIO = 1.0

#: The namespace's veth pair and the one address on it (RFC 2544's benchmarking range; it
#: exists only inside the namespace, where it is the host candidate of every ICE agent).
VETH, VETH_PEER = "cgb0", "cgb1"
NETNS_ADDRESS = "198.18.0.1"
GST_CAMERA = live.REPO / "tests" / "gst" / "camera_server.py"
GST_MOUNT = "h264"
#: tests/gst/camera_server.py's x264 bitrate (kbit/s) and keyframe interval (s).
GST_KBITS, GST_GOP = 1500, 1.0
#: aiortc receivers per viewer process (each process is one event loop, one core at most).
VIEWERS_PER_PROCESS = 25


async def idle_cpu(pids: list[int], seconds: float) -> list[float]:
    meters = [CpuMeter(pid) for pid in pids]
    for meter in meters:
        meter.start()
    await asyncio.sleep(seconds)
    return [meter.stop() for meter in meters]


# -- the same measurement for both servers --------------------------------------------------


async def cpu_with(start_child: Callable[[int], Awaitable[live.ViewerProcess]], server_pid: int, count: int,
                   seconds: float, warmup: float) -> dict:
    """bench/live.py's ``cpu_with_viewers`` for any kind of viewer process speaking its protocol
    (a JSON "ready" line, then one JSON line of frame and packet counts per ``MARK``)."""
    processes = -(-count // VIEWERS_PER_PROCESS)
    shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    children: list[live.ViewerProcess] = []
    try:
        for share in shares:
            children.append(await start_child(share))
        ready = [await c.read(120) for c in children]
        receiving = sum(r["receiving"] for r in ready)
        errors = [e for r in ready for e in r["errors"]]
        await asyncio.sleep(warmup)
        await live.wait_steady(children)
        server, machine = CpuMeter(server_pid), live.MachineMeter()
        clients = [CpuMeter(c.proc.pid) for c in children]
        before = [await c.mark() for c in children]
        drops = udp_receive_errors()
        server.start()
        machine.start()
        for meter in clients:
            meter.start()
        await asyncio.sleep(seconds)
        cpu = server.stop()
        busy = machine.stop()
        client_cpu = sum(m.stop() for m in clients)
        drops = udp_receive_errors() - drops
        after = [await c.mark() for c in children]
    finally:
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
    def rates(key: str) -> list[float]:
        return [(n1 - n0) / (a["t"] - b["t"]) for b, a in zip(before, after) for n0, n1 in zip(b[key], a[key])]

    fps = rates("frames")
    return {"viewers": count, "receiving": receiving, "errors": errors, "cpu": cpu, "fps": fps, "machine": busy,
            "drops": drops, "client_cpu": client_cpu, "processes": len(children), "pps": rates("packets")}


async def start_citygate_child(base: str, token: str | None, count: int) -> live.ViewerProcess:
    return await live.ViewerProcess.start(base, count, token)


async def start_janus_child(janus_base: str, count: int) -> live.ViewerProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child-janus-viewers", str(count), "--url", janus_base,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=live.REPO,
    )
    return live.ViewerProcess(proc)


async def child_janus_viewers(janus_base: str, count: int) -> None:
    """Child process: ``count`` Janus viewers on one session that count frames without decoding
    (the same counter as bench/live.py's Citygate viewers); driven over stdin like them."""
    counter = viewer_counter()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http, _janus.JanusSession(http, janus_base) as session:
        limit = asyncio.Semaphore(5)

        async def one():
            async with limit:
                return await _janus.open_viewer(session)

        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        viewers = [v for v in results if not isinstance(v, BaseException)]
        errors = [repr(e) for e in results if isinstance(e, BaseException)]

        def frames() -> list[int]:
            return [counter.frames(v) for v in viewers]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(frames()):
            await asyncio.sleep(0.1)
        print(json.dumps({"ready": len(viewers), "receiving": sum(1 for f in frames() if f), "errors": errors[:3]}),
              flush=True)
        try:
            while True:
                line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
                if line != "MARK":
                    break
                marked = time.monotonic()
                packets = [await counter.packets(v) for v in viewers]
                print(json.dumps({"t": marked, "frames": frames(), "packets": packets}), flush=True)
        finally:
            await asyncio.gather(*(_janus.close_viewer(session, v) for v in viewers), return_exceptions=True)


async def janus_first_frames(janus_base: str, sessions: int) -> list[float]:
    """Watch request -> first decoded picture, ms, for fresh viewers (one at a time)."""
    firsts = []
    async with aiohttp.ClientSession() as http, _janus.JanusSession(http, janus_base) as session:
        for _ in range(sessions):
            viewer = await _janus.open_viewer(session)
            try:
                await asyncio.wait_for(viewer.track.recv(), 10)
                firsts.append(1000 * (time.monotonic() - viewer.posted_at))
            finally:
                await _janus.close_viewer(session, viewer)
            # Janus waits for the camera's next keyframe: spread the starts over the GOP.
            await asyncio.sleep(0.3 + random.uniform(0, GST_GOP))
    return firsts


# -- Citygate alone (H10's run) -----------------------------------------------------------


async def measure(args: argparse.Namespace, base: str, gateway: subprocess.Popen, log: Path, password: str | None) -> None:
    await live.wait_http(base, gateway, log)
    token = await sign_in(base, "bench", password) if password else None
    async with aiohttp.ClientSession(headers=auth_headers(token)) as http:
        await live.wait_camera_online(http, base, live.CAMERA_ID)
        await asyncio.sleep(args.warmup)
        firsts = await live.first_frames(http, base, args.sessions)
    rows = []
    for count in args.viewer_counts:
        if count == 0:
            rows.append({"viewers": 0, "cpu": (await idle_cpu([gateway.pid], args.seconds))[0], "fps": []})
        else:
            rows.append(await cpu_with(lambda n: start_citygate_child(base, token, n), gateway.pid, count,
                                       args.seconds, args.warmup))
        print(f"  measured {count} viewers: {rows[-1]['cpu']:.1f} % CPU", flush=True)
        await asyncio.sleep(3)
    baseline = rows[0]["cpu"] if rows and rows[0]["viewers"] == 0 else 0.0
    print(f"\nCitygate, first frame after the offer (ms, {len(firsts['firsts'])} sessions): "
          f"median {median(firsts['firsts']):.0f}, max {max(firsts['firsts']):.0f}; "
          f"target <= {TARGET_FIRST_FRAME_MS:.0f} ms")
    print(f"{'viewers':>7} {'CPU %':>7} {'per viewer %':>13} {'fps min':>8} {'fps median':>11} {'at 25 fps':>10}")
    for r in rows:
        n = r["viewers"]
        per = (r["cpu"] - baseline) / n if n else 0.0
        fps = r["fps"]
        print(f"{n:>7} {r['cpu']:>7.1f} {per:>13.3f} {min(fps, default=0):>8.1f} {median(fps) if fps else 0:>11.1f} "
              f"{full_rate(fps):>5}/{n:<4}")
    print("per viewer = (CPU - CPU at 0 viewers) / viewers; CPU in % of one core, from /proc.")


def full_rate(fps: list[float]) -> int:
    return sum(1 for f in fps if f >= live.FULL_RATE * FPS)


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="citygate-bench-relay-"))
    farm = gateway = None
    log = tmp / "gateway.log"
    try:
        farm, farm_url = live.start_farm()
        port = free_port()
        gateway, password = start_gateway(tmp, farm_url, max(args.viewer_counts) + 5, port, log)
        print(f"relay benchmark: camera {live.WIDTH}x{live.HEIGHT} {FPS} fps H.264 ~2 Mbit/s; {args.seconds:.0f} s "
              f"per run; {os.cpu_count()} cores; gateway pid {gateway.pid}", flush=True)
        asyncio.run(measure(args, f"http://127.0.0.1:{port}", gateway, log, password))
    except Exception:
        if log.exists():
            print(f"--- gateway log (last lines) ---\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stop_process(gateway)
        stop_process(farm)
        shutil.rmtree(tmp, ignore_errors=True)


def start_gateway(tmp: Path, camera_url: str, max_viewers: int, port: int, log: Path) -> tuple[subprocess.Popen, str | None]:
    conf = tmp / "conf"
    live.write_config(conf, camera_url, camera_url, max_viewers)
    # All the viewers are one user's: lift the per-user limits (32 sessions, 120 offers a minute).
    toml = conf / "gateway.toml"
    toml.write_text(toml.read_text().replace(
        "[live]\n", f"[live]\nmax-sessions-per-user = {max_viewers}\nmax-pending-per-user = {max_viewers}\n"
                    f"max-offers-per-minute = {10 * max_viewers}\n", 1))
    password = create_user(conf, "bench")
    with open(log, "w") as out:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(conf), "--bind", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, cwd=live.REPO,
        )
    return gateway, password


# -- side by side with Janus, inside the bench's own network namespace -------------------------


def janus_unavailable_reason() -> str | None:
    """Why the side-by-side run cannot happen on this machine (None: it can)."""
    if _janus.janus_binary() is None:
        return "janus is not installed (apt-get install janus)"
    if os.geteuid() != 0:
        return "making a network namespace needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    if not Path("/usr/bin/python3").exists() or not GST_CAMERA.exists():
        return "the GStreamer camera (tests/gst/camera_server.py under /usr/bin/python3) is missing"
    return None


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {done.stderr.strip()}")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_in_namespace(argv: list[str]) -> int:
    """Make the namespace, run this script inside it (``--netns``), and remove the namespace and
    everything still running in it afterwards, also on Ctrl-C or SIGTERM."""
    name = f"citygate-relay-{os.getpid()}"
    signal.signal(signal.SIGTERM, _raise_interrupt)
    child = None
    try:
        _ip("netns", "add", name)
        _ip("-n", name, "link", "add", VETH, "type", "veth", "peer", "name", VETH_PEER)
        _ip("-n", name, "addr", "add", f"{NETNS_ADDRESS}/24", "dev", VETH)
        for link in ("lo", VETH, VETH_PEER):
            _ip("-n", name, "link", "set", link, "up")
        child = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, __file__, *argv, "--netns", name],
                                 cwd=live.REPO)
        return child.wait()
    except KeyboardInterrupt:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)  # its finally blocks stop the servers and viewers
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return 130
    finally:
        leftover = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in leftover:  # only processes this run started, inside its own namespace
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def start_gst_camera(port: int) -> tuple[subprocess.Popen, str]:
    camera = subprocess.Popen(
        ["/usr/bin/python3", str(GST_CAMERA), "--port", str(port), "--mounts", GST_MOUNT,
         "--width", str(live.WIDTH), "--height", str(live.HEIGHT)],
        stdout=subprocess.PIPE, text=True, cwd=live.REPO,
    )
    ready, _, _ = select.select([camera.stdout], [], [], 30.0)
    line = camera.stdout.readline().split() if ready else []
    if not line or line[0] != "READY":
        stop_process(camera)
        raise RuntimeError("the GStreamer camera did not start")
    return camera, f"rtsp://127.0.0.1:{port}/{GST_MOUNT}"


async def measure_side_by_side(args: argparse.Namespace, base: str, gateway: subprocess.Popen, log: Path,
                               password: str | None, janus_base: str, janus: subprocess.Popen, janus_log: Path) -> None:
    await live.wait_http(base, gateway, log)
    await _janus.wait_ready(janus_base, janus, janus_log)
    token = await sign_in(base, "bench", password) if password else None
    async with aiohttp.ClientSession(headers=auth_headers(token)) as http:
        await live.wait_camera_online(http, base, live.CAMERA_ID)
        await asyncio.sleep(args.warmup)
        firsts = {"Citygate": (await live.first_frames(http, base, args.sessions))["firsts"]}
    firsts["Janus"] = await janus_first_frames(janus_base, args.sessions)
    starters = {
        "Citygate": (gateway.pid, lambda n: start_citygate_child(base, token, n)),
        "Janus": (janus.pid, lambda n: start_janus_child(janus_base, n)),
    }
    runs: dict[str, dict[int, list[dict]]] = {"Citygate": {}, "Janus": {}}
    for run_number in range(1, args.runs + 1):
        for count in args.viewer_counts:
            if count == 0:  # both idle in the same window
                cpus = await idle_cpu([gateway.pid, janus.pid], args.seconds)
                for server, cpu in zip(runs, cpus):
                    runs[server].setdefault(0, []).append({"viewers": 0, "cpu": cpu, "fps": [], "machine": 0.0})
            else:
                for server, (pid, start_child) in starters.items():
                    result = await cpu_with(start_child, pid, count, args.seconds, args.warmup)
                    runs[server].setdefault(count, []).append(result)
                    await asyncio.sleep(3)
            print(f"  run {run_number}, {count} viewers: "
                  + ", ".join(f"{s} {r[count][-1]['cpu']:.2f} %" for s, r in runs.items()), flush=True)
    for by_count in runs.values():  # each run's cost per viewer, against that run's own idle CPU
        for count, results in by_count.items():
            for i, result in enumerate(results):
                if count and 0 in by_count:
                    result["per_viewer"] = (result["cpu"] - by_count[0][i]["cpu"]) / count
    rows = {server: [median_run(by_count[count]) for count in args.viewer_counts] for server, by_count in runs.items()}
    print_side_by_side(args, rows, firsts)


def median_run(results: list[dict]) -> dict:
    """Several runs of one server at one viewer count: the median CPU; every viewer's frame rate
    from every run; the other figures from the run whose CPU is the median (the lower middle one)."""
    ordered = sorted(results, key=lambda r: r["cpu"])
    middle = ordered[(len(ordered) - 1) // 2]
    per_viewer = [r["per_viewer"] for r in results if "per_viewer" in r]
    return {**middle, "cpu": median([r["cpu"] for r in results]), "fps": [f for r in results for f in r["fps"]],
            "pps": [p for r in results for p in r.get("pps", [])], "runs": len(results),
            "per_viewer": median(per_viewer) if per_viewer else None, "per_viewer_runs": per_viewer}


def print_side_by_side(args: argparse.Namespace, rows: dict[str, list[dict]], firsts: dict[str, list[float]]) -> None:
    print(f"\nfirst frame (ms; Citygate: from the WHEP offer, Janus: from the watch request; decoded picture; "
          f"{args.sessions} fresh viewers each; target <= {TARGET_FIRST_FRAME_MS:.0f} ms)")
    for server, values in firsts.items():
        print(f"  {server:<9} median {median(values):>6.0f}   max {max(values, default=float('nan')):>6.0f}")
    base = {s: (r[0]["cpu"] if r and r[0]["viewers"] == 0 else 0.0) for s, r in rows.items()}
    print(f"\nCPU in % of one core (each thread's run time from /proc), median of {args.runs} run(s); per viewer = the median "
          "over runs of (CPU - that run's CPU at 0 viewers) / viewers; "
          "fps = frames per second per viewer (min / median), 'at 25' = viewers (of all runs) at >= 95 % of 25 fps")
    print(f"{'viewers':>7} | {'Citygate CPU':>12} {'per viewer':>10} {'fps':>11} {'at 25':>7} | "
          f"{'Janus CPU':>9} {'per viewer':>10} {'fps':>11} {'at 25':>7} | {'ratio C/J':>9} {'machine %':>9}")
    for cg, jn in zip(rows["Citygate"], rows["Janus"]):
        n = cg["viewers"]
        per = {s: (r["per_viewer"] if r.get("per_viewer") is not None else (r["cpu"] - base[s]) / n) if n else float("nan")
               for s, r in (("Citygate", cg), ("Janus", jn))}
        ratio = per["Citygate"] / per["Janus"] if n and per["Janus"] > 0 else float("nan")
        run_ratios = [c / j for c, j in zip(cg.get("per_viewer_runs", []), jn.get("per_viewer_runs", [])) if j > 0]

        def fps(r: dict) -> str:
            return f"{min(r['fps'], default=0):>5.1f}/{median(r['fps']) if r['fps'] else 0:<5.1f}"

        busy = max(cg["machine"], jn["machine"])
        flag = " host saturated" if busy >= live.SATURATED else ""
        if n == 0:
            print(f"{0:>7} | {cg['cpu']:>12.1f} {'-':>10} {'-':>11} {'-':>7} | {jn['cpu']:>9.1f} {'-':>10} {'-':>11} "
                  f"{'-':>7} | {'-':>9} {'-':>9}")
            continue
        print(f"{n:>7} | {cg['cpu']:>12.1f} {per['Citygate']:>10.3f} {fps(cg):>11} {full_rate(cg['fps']):>3}/{len(cg['fps']):<3} | "
              f"{jn['cpu']:>9.1f} {per['Janus']:>10.3f} {fps(jn):>11} {full_rate(jn['fps']):>3}/{len(jn['fps']):<3} | "
              f"{ratio:>9.2f} {busy:>9.0f}{flag}")
        if len(run_ratios) > 1:
            print(f"        ratio C/J run by run: {' '.join(f'{r:.2f}' for r in run_ratios)}")
        for server, r in (("Citygate", cg), ("Janus", jn)):
            print(f"        {server}: {r['receiving']}/{n} viewers received; viewer processes {r['processes']} using "
                  f"{r['client_cpu']:.0f} % CPU; RTP packets/s per viewer min {min(r['pps'], default=0):.0f}, median "
                  f"{median(r['pps']):.0f}; {r['drops']} datagrams dropped by full receive buffers"
                  + (f"; errors {r['errors'][:2]}" if r["errors"] else ""))
    print(f"target: per-viewer ratio Citygate / Janus (event_loops = 2) <= {TARGET_RATIO:.1f}; 25 fps at every "
          f"viewer; 'machine %' = all cores busy during the busier of the two windows.")


def run_side_by_side(args: argparse.Namespace) -> None:
    """Inside the namespace: camera, gateway, Janus; then both measured with the same viewers."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="citygate-bench-relay-"))
    camera = gateway = janus = None
    log, janus_log = tmp / "gateway.log", tmp / "janus.log"
    try:
        camera, camera_url = start_gst_camera(free_port())
        port, janus_port = free_port(), free_port()
        gateway, password = start_gateway(tmp, camera_url, max(args.viewer_counts) + 5, port, log)
        config = _janus.write_config(tmp / "janus", camera_url, janus_port, VETH, NETNS_ADDRESS, event_loops=2)
        janus = _janus.start(config, janus_log)
        print(f"relay benchmark, side by side in network namespace {args.netns} ({NETNS_ADDRESS} on {VETH}): "
              f"GStreamer camera {live.WIDTH}x{live.HEIGHT} {FPS} fps H.264 {GST_KBITS} kbit/s, keyframe every "
              f"{GST_GOP:.0f} s, shared by both servers; {args.seconds:.0f} s per run; {os.cpu_count()} cores; "
              f"gateway pid {gateway.pid}, Janus pid {janus.pid} (event_loops = 2)", flush=True)
        asyncio.run(measure_side_by_side(args, f"http://127.0.0.1:{port}", gateway, log, password,
                                         f"http://127.0.0.1:{janus_port}", janus, janus_log))
    except Exception:
        if camera is not None and camera.poll() is not None:
            print(f"--- the GStreamer camera exited ({camera.returncode}) ---", file=sys.stderr)
        for name, path in (("gateway", log), ("janus", janus_log)):
            if path.exists():
                print(f"--- {name} log (last lines) ---\n{path.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stop_process(gateway)
        stop_process(janus)
        stop_process(camera)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each CPU run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--viewers", default="0,1,10,50,100")
    parser.add_argument("--sessions", type=int, default=10, help="fresh sessions for the first-frame time")
    parser.add_argument("--janus", action="store_true", help="also measure Janus side by side (root; network namespace)")
    parser.add_argument("--runs", type=int, default=1, help="with --janus: runs of every count, the median CPU is shown")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s runs")
    parser.add_argument("--viewer-counter", choices=("header", "jitter"), default=os.environ.get(VIEWER_COUNTER_ENV, "header"),
                        help="viewers count frames from the clear RTP headers (light, default) or from aiortc's jitter buffer")
    parser.add_argument("--netns", help=argparse.SUPPRESS)  # set by run_in_namespace for the run inside
    parser.add_argument("--child-janus-viewers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ[VIEWER_COUNTER_ENV] = args.viewer_counter  # the viewer processes read it
    if args.child_janus_viewers:
        asyncio.run(child_janus_viewers(args.url, args.child_janus_viewers))
        return
    if args.quick:
        args.seconds, args.warmup = 5.0, 2.0
    args.viewer_counts = sorted({int(c) for c in args.viewers.split(",") if c.strip()})
    if args.netns:
        run_side_by_side(args)
    elif args.janus:
        reason = janus_unavailable_reason()
        if reason is None:
            sys.exit(run_in_namespace(sys.argv[1:]))
        print(f"Janus side by side not possible: {reason}; measuring Citygate alone", flush=True)
        run(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
