"""Soak: a gateway under a city's everyday churn for an hour; are memory and descriptors flat?

Three kinds of process, as in the other benches: the cameras (``bench/camera_farm.py``: one
farm serving seven cameras, and a second farm for the eighth camera that is killed for 10 s
and started again every minute: a camera flapping), the gateway (``python -m gateway serve``,
eight ``generic_rtsp`` cameras recording 10 s segments to local storage, SQLite) and this
script, which plays the users over HTTP as any outside client would:

- WebRTC viewers (aiortc, WHEP) joining and leaving every few seconds, each watching 3-10 s;
- LL-HLS viewers following the live edge (blocking playlist reloads and preload-hinted parts)
  for 5-15 s each;
- an emergency push every 45 s to a rescue station, 0.5 min long: it expires by itself, and the
  station watches the pushed camera over LL-HLS while it lasts;
- an evidence export every 2 minutes (request, approval by a second user, production, download).

Every minute it prints the gateway's RSS, open file descriptors (``/proc``), threads and
asyncio tasks (``/metrics``), with the churn counters of that minute. At the end: the figures
after the warm-up (first 5 minutes, or a third of a short run) against the first sample after
it, the catalogue read back (segments per steady camera against the time recorded, holes
between consecutive segments, gap rows and their reasons), and the log's ERROR lines and
tracebacks.

    nice python bench/soak.py [--minutes 60] [--cameras 8] [--width 640 --height 360]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import secrets
import select
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _client import close_viewer, create_user, free_port, open_viewer, stop_process  # noqa: E402
from _llhls import parse_media_playlist, variant_uri  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEGMENT_SECONDS = 10.0
FLAP_EVERY = 60.0
FLAP_DOWN = 10.0
STOP_TIMEOUT = 30.0
#: Holes between consecutive segments shorter than this are timestamp rounding, not losses.
HOLE = 0.25


# -- processes ---------------------------------------------------------------------------


def start_farm(args: argparse.Namespace, port: int = 0) -> tuple[subprocess.Popen, str]:
    farm = subprocess.Popen(
        [sys.executable, str(HERE / "camera_farm.py"), "--width", str(args.width), "--height", str(args.height),
         "--bitrate", str(args.bitrate), "--pattern", "busy", "--preencoded-seconds", "4", "--port", str(port)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    ready, _, _ = select.select([farm.stdout], [], [], 90.0)
    line = farm.stdout.readline().split() if ready else []
    if len(line) != 2 or line[0] != "READY":
        stop_process(farm, STOP_TIMEOUT)
        raise RuntimeError("a camera farm did not start")
    return farm, line[1]


def write_config(conf: Path, urls: list[str]) -> None:
    conf.mkdir(parents=True)
    (conf / "gateway.toml").write_text(
        '[server]\ndata-dir = "data"\n'
        f"[recording]\nsegment-seconds = {SEGMENT_SECONDS}\nsweep-interval = 600\n"
        "[push]\ndefault-minutes = 0.5\nmax-minutes = 5\n"
    )
    (conf / "cameras.toml").write_text("".join(
        f'[[camera]]\nid = "cam{i}"\nvendor = "generic_rtsp"\narea = "centre"\n[camera.options]\nurl = "{url}"\n\n'
        for i, url in enumerate(urls)
    ))
    shutil.copy(REPO / "conf" / "roles.toml", conf / "roles.toml")


def proc_figures(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, open fds, threads) of a process, from /proc."""
    rss, threads = 0.0, 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return rss, fds, threads


# -- users -------------------------------------------------------------------------------


async def session(base: str, username: str, one_time_password: str) -> aiohttp.ClientSession:
    """A cookie session signed in as ``username``, its first password changed."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        async with http.post(f"{base}/api/session", json={"username": username, "password": one_time_password}) as resp:
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"sign-in of {username} failed: {resp.status} {body}")
        http.headers["X-CSRF-Token"] = body["csrf_token"]
        if body["must_change_password"]:
            change = {"old_password": one_time_password, "new_password": "Sk-" + secrets.token_urlsafe(18)}
            async with http.post(f"{base}/api/session/password", json=change) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"password change failed: {resp.status} {await resp.text()}")
        return http
    except BaseException:
        await http.close()
        raise


@dataclass
class Churn:
    webrtc: int = 0
    hls: int = 0
    pushes: int = 0
    exports: int = 0
    failures: Counter = field(default_factory=Counter)

    def failed(self, what: str, exc: BaseException) -> None:
        self.failures[f"{what}: {type(exc).__name__} {str(exc)[:120]}"] += 1


async def wait_online(http: aiohttp.ClientSession, base: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        async with http.get(f"{base}/api/health") as resp:
            last = (await resp.json()).get("cameras", {})
        if last.get("online", 0) >= count:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"not all {count} cameras online within {timeout:.0f}s: {last}")


# -- the churn ---------------------------------------------------------------------------


async def webrtc_viewers(http: aiohttp.ClientSession, base: str, cameras: list[str], churn: Churn, stop: asyncio.Event) -> None:
    async def one() -> None:
        camera = random.choice(cameras)
        try:
            viewer = await open_viewer(http, base, camera)
        except Exception as exc:
            churn.failed("webrtc open", exc)
            return
        try:
            await asyncio.sleep(random.uniform(3, 10))
        finally:
            await close_viewer(http, base, viewer)
        churn.webrtc += 1

    tasks: set[asyncio.Task] = set()
    while not stop.is_set():
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(random.uniform(1, 4))
    await asyncio.gather(*tasks, return_exceptions=True)


async def follow_hls(http: aiohttp.ClientSession, base: str, camera: str, seconds: float) -> int:
    """Follow a camera's LL-HLS live edge for ``seconds``; returns the parts fetched."""
    timeout = aiohttp.ClientTimeout(total=15)

    async def get(url: str) -> bytes:
        async with http.get(url, timeout=timeout) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {url}: {resp.status} {(await resp.text())[:200]}")
            return await resp.read()

    index = f"{base}/api/cameras/{camera}/hls/index.m3u8"
    top = (await get(index)).decode()
    media_url = urljoin(index, variant_uri(top) or "")
    playlist = parse_media_playlist((await get(media_url)).decode())
    if playlist.segments and playlist.segments[-1].map_uri:
        await get(urljoin(media_url, playlist.segments[-1].map_uri))
    parts = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if playlist.preload_hint is None:
            raise RuntimeError("the live playlist has no preload hint")
        msn, part = playlist.next_part
        _, text = await asyncio.gather(get(urljoin(media_url, playlist.preload_hint)), get(f"{media_url}?_HLS_msn={msn}&_HLS_part={part}"))
        parts += 1
        playlist = parse_media_playlist(text.decode())
    return parts


async def hls_viewers(http: aiohttp.ClientSession, base: str, cameras: list[str], churn: Churn, stop: asyncio.Event) -> None:
    async def one() -> None:
        try:
            await follow_hls(http, base, random.choice(cameras), random.uniform(5, 15))
            churn.hls += 1
        except Exception as exc:
            churn.failed("hls", exc)

    tasks: set[asyncio.Task] = set()
    while not stop.is_set():
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(random.uniform(2, 5))
    await asyncio.gather(*tasks, return_exceptions=True)


async def pushes(operator: aiohttp.ClientSession, station: aiohttp.ClientSession, base: str, cameras: list[str],
                 churn: Churn, stop: asyncio.Event) -> None:
    while not stop.is_set():
        camera = random.choice(cameras)
        try:
            body = {"cameras": [camera], "stations": ["soakstation"], "reason": "soak: a fire in the old town", "minutes": 0.5}
            async with operator.post(f"{base}/api/pushes", json=body) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"push refused: {resp.status} {await resp.text()}")
            churn.pushes += 1
            await follow_hls(station, base, camera, 10)  # the station watches; the push expires by itself
        except Exception as exc:
            churn.failed("push", exc)
        with_stop = asyncio.ensure_future(stop.wait())
        await asyncio.wait([with_stop], timeout=45)
        with_stop.cancel()


async def exports(operator: aiohttp.ClientSession, supervisor: aiohttp.ClientSession, base: str, cameras: list[str],
                  churn: Churn, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with_stop = asyncio.ensure_future(stop.wait())
        await asyncio.wait([with_stop], timeout=120)
        with_stop.cancel()
        if stop.is_set():
            return
        try:
            now = time.time()
            body = {"cameras": [random.choice(cameras)], "from": now - 50, "to": now - 20, "case_number": f"SOAK-{int(now)}",
                    "authority": "Soak police", "legal_basis": "bench", "purpose": "soak test of the export path"}
            async with operator.post(f"{base}/api/exports", json=body) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"export request refused: {resp.status} {await resp.text()}")
                request_id = (await resp.json())["id"]
            async with supervisor.post(f"{base}/api/exports/{request_id}/approve", json={"reason": "soak"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"approval refused: {resp.status} {await resp.text()}")
            async with supervisor.post(f"{base}/api/exports/{request_id}/produce") as resp:
                if resp.status not in (200, 202):
                    raise RuntimeError(f"production refused: {resp.status} {await resp.text()}")
            deadline = time.monotonic() + 120
            status = None
            while time.monotonic() < deadline:
                async with operator.get(f"{base}/api/exports/{request_id}") as resp:
                    status = (await resp.json()).get("status")
                if status not in ("approved", "producing"):
                    break
                await asyncio.sleep(1)
            if status != "produced":
                raise RuntimeError(f"export {request_id} ended as {status}")
            async with operator.get(f"{base}/api/exports/{request_id}/download") as resp:
                if resp.status != 200:
                    raise RuntimeError(f"download refused: {resp.status}")
                await resp.read()
            churn.exports += 1
        except Exception as exc:
            churn.failed("export", exc)


async def flapper(args: argparse.Namespace, port: int, holder: list, stop: asyncio.Event, flaps: list[float]) -> None:
    while not stop.is_set():
        with_stop = asyncio.ensure_future(stop.wait())
        await asyncio.wait([with_stop], timeout=FLAP_EVERY - FLAP_DOWN)
        with_stop.cancel()
        if stop.is_set():
            return
        stop_process(holder[0], STOP_TIMEOUT)
        flaps.append(time.time())
        await asyncio.sleep(FLAP_DOWN)
        holder[0], _ = await asyncio.to_thread(start_farm, args, port)


async def scrape(http: aiohttp.ClientSession, base: str) -> int | None:
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    match = re.search(r"^citygate_asyncio_tasks (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else None


# -- the run -----------------------------------------------------------------------------


def catalogue_report(db_path: Path, t0: float, t1: float, steady: list[str]) -> dict:
    con = sqlite3.connect(db_path)
    try:
        rows = con.execute('SELECT camera, start, "end" FROM segments ORDER BY camera, start').fetchall()
        gaps = con.execute('SELECT camera, reason, start, "end" FROM recording_gaps').fetchall()
        alarms = con.execute("SELECT count(*) FROM audit WHERE action = 'recording.alarm'").fetchone()[0]
    finally:
        con.close()
    per: dict[str, list[tuple[float, float]]] = {}
    for camera, start, end in rows:
        per.setdefault(camera, []).append((start, end))
    out = {"segments": len(rows), "alarms": alarms, "cameras": {}}
    for camera, segs in sorted(per.items()):
        inside = [(s, e) for s, e in segs if s >= t0 and e <= t1]
        covered = sum(max(0.0, min(e, t1) - max(s, t0)) for s, e in segs)
        holes = [(e, s) for (_, e), (s, _) in zip(inside, inside[1:]) if s - e > HOLE]
        reasons = Counter(r for c, r, s, e in gaps if c == camera and e > t0 and s < t1)
        out["cameras"][camera] = {
            "segments": len(inside), "covered_pct": 100 * covered / (t1 - t0), "holes": len(holes),
            "hole_seconds": round(sum(s - e for e, s in holes), 1), "gaps": dict(reasons), "steady": camera in steady,
        }
    return out


def log_report(log: Path) -> tuple[int, int, Counter]:
    text = log.read_text(errors="replace")
    errors = [line for line in text.splitlines() if " ERROR " in line or line.startswith("ERROR")]
    kinds = Counter(re.sub(r"\d+", "N", line.split(":", 3)[-1].strip())[:140] for line in errors)
    return len(errors), text.count("Traceback (most recent call last)"), kinds


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="citygate-soak-"))
    print(f"soak: {args.minutes:.0f} min, {args.cameras} cameras ({args.width}x{args.height}), work dir {tmp}", flush=True)
    farm, url = start_farm(args)
    flap_port = free_port()
    flap_holder = [start_farm(args, flap_port)[0]]
    flap_url = url.replace(url.split("/")[2], f"127.0.0.1:{flap_port}")
    gateway = None
    log_path = tmp / "gateway.log"
    log = open(log_path, "w")
    sessions: list[aiohttp.ClientSession] = []
    try:
        conf = tmp / "conf"
        cameras = [f"cam{i}" for i in range(args.cameras)]
        write_config(conf, [url] * (args.cameras - 1) + [flap_url])
        passwords = {
            name: create_user(conf, name, role)
            for name, role in [("soakop", "operator"), ("soaksup", "supervisor"), ("soakstation", "rescue-station"), ("soakmon", "monitoring")]
        }
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(conf), "--bind", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        deadline = time.monotonic() + 90
        while True:
            if gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited ({gateway.returncode}); see {log_path}")
            try:
                operator = await session(base, "soakop", passwords["soakop"])
                break
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        sessions.append(operator)
        for name in ("soaksup", "soakstation", "soakmon"):
            sessions.append(await session(base, name, passwords[name]))
        supervisor, station, monitor = sessions[1:]
        await wait_online(operator, base, args.cameras, 60 + 5 * args.cameras)
        print("soak: all cameras online; churn starts", flush=True)

        churn = Churn()
        stop = asyncio.Event()
        flaps: list[float] = []
        steady = cameras[:-1]
        t0 = time.time()
        workers = [
            asyncio.create_task(webrtc_viewers(operator, base, steady, churn, stop)),
            asyncio.create_task(hls_viewers(operator, base, steady, churn, stop)),
            asyncio.create_task(pushes(operator, station, base, steady, churn, stop)),
            asyncio.create_task(exports(operator, supervisor, base, steady, churn, stop)),
            asyncio.create_task(flapper(args, flap_port, flap_holder, stop, flaps)),
        ]
        samples: list[tuple[float, float, int, int, int | None]] = []
        print(f"{'min':>4} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'tasks':>6}  {'webrtc':>6} {'hls':>5} {'push':>5} {'export':>6} {'flaps':>5} fail",
              flush=True)
        for minute in range(1, int(args.minutes) + 1):
            await asyncio.sleep(max(0.0, t0 + minute * 60 - time.time()))
            if gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited during the soak ({gateway.returncode})")
            rss, fds, threads = proc_figures(gateway.pid)
            tasks = await scrape(monitor, base)
            samples.append((minute, rss, fds, threads, tasks))
            print(f"{minute:>4} {rss:>8.1f} {fds:>5} {threads:>7} {tasks if tasks is not None else '?':>6}  {churn.webrtc:>6} {churn.hls:>5} "
                  f"{churn.pushes:>5} {churn.exports:>6} {len(flaps):>5} {sum(churn.failures.values())}", flush=True)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 120)
        t1 = time.time()
        for http in sessions:
            await http.close()
        sessions.clear()
        stop_process(gateway, STOP_TIMEOUT)
        log.flush()

        warm = max(1, min(5, len(samples) // 3))
        after = samples[warm:] or samples
        first = after[0]
        print("\nafter warm-up (from minute %d)" % first[0])
        for i, name in [(1, "RSS MiB"), (2, "open fds"), (3, "threads"), (4, "tasks")]:
            values = [s[i] for s in after if s[i] is not None]
            if not values:
                continue
            ref = first[i] or 1
            print(f"  {name:9} first {first[i]:>8.1f}  min {min(values):>8.1f}  max {max(values):>8.1f}  last {values[-1]:>8.1f}"
                  f"  drift {100 * (values[-1] - ref) / ref:+.1f} %  spread {100 * (max(values) - min(values)) / ref:.1f} %")
        print(f"churn: {churn.webrtc} WebRTC views, {churn.hls} LL-HLS views, {churn.pushes} pushes, {churn.exports} exports, {len(flaps)} flaps")
        for what, n in churn.failures.most_common(10):
            print(f"  failed x{n}: {what}")
        report = catalogue_report(conf / "data" / "citygate.db", t0 + SEGMENT_SECONDS * 2, t1 - SEGMENT_SECONDS * 2, steady)
        print(f"catalogue: {report['segments']} segments, {report['alarms']} recording alarms")
        for camera, r in report["cameras"].items():
            print(f"  {camera}{'' if r['steady'] else ' (flapping)'}: {r['segments']} segments, {r['covered_pct']:.2f} % covered, "
                  f"{r['holes']} holes ({r['hole_seconds']} s), gaps {r['gaps']}")
        errors, tracebacks, kinds = log_report(log_path)
        print(f"log: {errors} ERROR lines, {tracebacks} tracebacks ({log_path})")
        for line, n in kinds.most_common(10):
            print(f"  x{n}: {line}")
        return 0
    finally:
        for http in sessions:
            await http.close()
        stop_process(gateway, STOP_TIMEOUT)
        stop_process(flap_holder[0], STOP_TIMEOUT)
        stop_process(farm, STOP_TIMEOUT)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--bitrate", type=int, default=800_000)
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
