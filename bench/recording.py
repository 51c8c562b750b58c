"""Recording: cameras recorded per core, the timeline over 45 days, a 24-hour VOD playlist.

cameras   Three kinds of process, so that only the gateway's work is counted: the cameras
          (bench/camera_farm.py: one pre-encoded 1280x720 25 fps "busy" H.264 stream,
          ~2 Mbit/s, served to every client as its own RTSP session), the gateway
          (``python -m gateway serve`` with N ``generic_rtsp`` cameras pulling the farm and
          recording to local storage, fsync on), and this script. For each N the gateway
          starts on a fresh data dir; once every camera is online and after a warm-up, its
          CPU (user + system, all threads, from /proc/<pid>/stat) is measured for --seconds.
          After a clean stop the SQLite catalogue is read: segments wholly inside the
          measured window per camera against the number expected, the share of the window
          covered, the recorded bitrate, gap rows and ``recording.alarm`` audit entries.
timeline  A fresh SQLite catalogue with 45 days of 60 s segments for one camera (~65,000
          rows, a few gaps, some explained by gap rows) and as many for --other-cameras more;
          ``Catalogue.timeline`` over 45 days and over one day, p50 of --repeats, with the
          query plan and a breakdown of where the 45-day query spends its time.
vod       ``timeline`` + ``vod_playlist`` for 24 hours (1,440 segments).

    python bench/recording.py [--seconds 60] [--counts 10,25,50] [--segment-seconds 10]
                              [--skip-cameras] [--skip-timeline] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import math
import os
import pstats
import re
import secrets
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _client import free_port, process_cpu_seconds, stop_process  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: Recorders store their open segment on a clean stop: give the gateway time for it.
STOP_TIMEOUT = 30.0
USERNAME = "recbench"

TARGET_CAMERAS = 50
TARGET_MACHINE_PCT = 50.0
TARGET_TIMELINE_MS = 50.0
TARGET_VOD_MS = 100.0
#: Percent of all cores busy at which a run is flagged as limited by the host.
SATURATED = 95.0


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


# -- processes and CPU -------------------------------------------------------------------




def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)



def start_farm(width: int, height: int) -> tuple[subprocess.Popen, str]:
    farm = subprocess.Popen(
        [sys.executable, str(HERE / "camera_farm.py"), "--width", str(width), "--height", str(height),
         "--pattern", "busy", "--preencoded-seconds", "4"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    ready, _, _ = select.select([farm.stdout], [], [], 60.0)
    line = farm.stdout.readline().split() if ready else []
    if len(line) != 2 or line[0] != "READY":
        stop_process(farm, STOP_TIMEOUT)
        raise RuntimeError("the camera farm did not start")
    return farm, line[1]


# -- cameras recorded per core -----------------------------------------------------------


def write_config(conf: Path, farm_url: str, count: int, segment_seconds: float) -> None:
    conf.mkdir(parents=True)
    (conf / "gateway.toml").write_text(
        '[server]\ndata-dir = "data"\n'
        f"[recording]\nsegment-seconds = {segment_seconds}\nsweep-interval = 3600\n"
    )
    (conf / "cameras.toml").write_text("".join(
        f'[[camera]]\nid = "cam{i:03d}"\nvendor = "generic_rtsp"\narea = "centre"\n[camera.options]\nurl = "{farm_url}"\n\n'
        for i in range(count)
    ))
    shutil.copy(REPO / "conf" / "roles.toml", conf / "roles.toml")


def create_user(conf: Path) -> str:
    """``citygate users add``; returns the one-time password."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "users", "add", USERNAME, "--role", "operator", "--all-areas", "--config", str(conf)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    match = re.search(r"one-time password for \S+: (\S+)", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"`citygate users add` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return match.group(1)


async def signed_in(base: str, one_time_password: str):  # -> aiohttp.ClientSession
    """A cookie session, its first password changed (the caller closes it)."""
    import aiohttp

    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        async with http.post(f"{base}/api/session", json={"username": USERNAME, "password": one_time_password}) as resp:
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"sign-in failed: {resp.status} {body}")
        http.headers["X-CSRF-Token"] = body["csrf_token"]
        if body["must_change_password"]:
            change = {"old_password": one_time_password, "new_password": "Rb-" + secrets.token_urlsafe(18)}
            async with http.post(f"{base}/api/session/password", json=change) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"password change failed: {resp.status} {await resp.text()}")
        return http
    except BaseException:
        await http.close()
        raise


async def wait_all_online(base: str, password: str, count: int, timeout: float, proc: subprocess.Popen) -> float:
    """Seconds until the gateway answers and all ``count`` cameras are online."""
    import aiohttp

    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:  # the HTTP server comes up once the cameras' context is entered
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited ({proc.returncode})")
        try:
            http = await signed_in(base, password)
            break
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not answer within {timeout:.0f}s") from None
            await asyncio.sleep(0.2)
    try:
        last = None
        while time.monotonic() < deadline:
            async with http.get(f"{base}/api/health") as resp:
                last = (await resp.json()).get("cameras", {})
            if last.get("online", 0) >= count:
                return time.monotonic() - t0
            await asyncio.sleep(0.5)
        raise RuntimeError(f"not all {count} cameras online within {timeout:.0f}s: {last}")
    finally:
        await http.close()


def catalogue_report(db_path: Path, t0: float, t1: float, segment_seconds: float, count: int) -> dict:
    """Read the catalogue after the run: per camera segments, coverage, bitrate; gaps, alarms."""
    con = sqlite3.connect(db_path)
    try:
        rows = con.execute('SELECT camera, start, "end", bytes FROM segments ORDER BY camera, start').fetchall()
        gaps = con.execute('SELECT camera, reason, "end" - start FROM recording_gaps').fetchall()
        alarms = con.execute("SELECT count(*) FROM audit WHERE action = 'recording.alarm'").fetchone()[0]
    finally:
        con.close()
    per: dict[str, list[tuple[float, float, int]]] = {f"cam{i:03d}": [] for i in range(count)}
    for camera, start, end, size in rows:
        per.setdefault(camera, []).append((start, end, size))
    window = t1 - t0
    inside, coverage, bitrate, holes = [], [], [], 0
    for segs in per.values():
        full = [(s, e, b) for s, e, b in segs if s >= t0 and e <= t1]
        inside.append(len(full))
        covered = sum(max(0.0, min(e, t1) - max(s, t0)) for s, e, _ in segs)
        coverage.append(100 * covered / window)
        seconds = sum(e - s for s, e, _ in full)
        bitrate.append(sum(b for _, _, b in full) * 8 / seconds / 1e6 if seconds else 0.0)
        holes += sum(1 for (_, e, _), (s, _, _) in zip(segs, segs[1:]) if s - e > 0.25)
    return {
        "segments_total": len(rows),
        "expected_in_window": max(0, math.floor(window / segment_seconds) - 1),
        "in_window_min": min(inside),
        "in_window_max": max(inside),
        "coverage_min": min(coverage),
        "mbit_s": statistics.fmean(bitrate),
        "holes": holes,
        "gap_rows": len(gaps),
        "gap_reasons": sorted({r for _, r, _ in gaps}),
        "alarms": alarms,
    }


async def run_cameras(farm: subprocess.Popen, farm_url: str, count: int, args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="citygate-bench-rec-"))
    gateway = None
    log = open(tmp / "gateway.log", "w")
    try:
        conf = tmp / "conf"
        write_config(conf, farm_url, count, args.segment_seconds)
        password = create_user(conf)
        port = free_port()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(conf), "--bind", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        startup = await wait_all_online(f"http://127.0.0.1:{port}", password, count, 60 + 2 * count, gateway)
        await asyncio.sleep(args.warmup)

        cpu0, farm0, mach0 = process_cpu_seconds(gateway.pid), process_cpu_seconds(farm.pid), machine_jiffies()
        w0, t0 = time.monotonic(), time.time()
        await asyncio.sleep(args.seconds)
        cpu1, farm1, mach1 = process_cpu_seconds(gateway.pid), process_cpu_seconds(farm.pid), machine_jiffies()
        wall, t1 = time.monotonic() - w0, time.time()
        rss = rss_mib(gateway.pid)
        if gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited during the run ({gateway.returncode})")

        stop_process(gateway, STOP_TIMEOUT)  # recorders store their open segment on a clean stop
        report = catalogue_report(conf / "data" / "citygate.db", t0, t1, args.segment_seconds, count)
        log.flush()
        behind = (tmp / "gateway.log").read_text(errors="replace").count("fell behind")
        cpu = 100 * (cpu1 - cpu0) / wall
        return {
            "cameras": count,
            "startup_s": startup,
            "cpu_pct": cpu,  # of one core
            "machine_pct": cpu / (os.cpu_count() or 1),
            "cpu_per_camera": cpu / count,
            "farm_pct": 100 * (farm1 - farm0) / wall,
            "machine_busy_pct": 100 * (mach1[0] - mach0[0]) / max(1, mach1[1] - mach0[1]),
            "rss_mib": rss,
            "log_fell_behind": behind,
            **report,
        }
    finally:
        stop_process(gateway, STOP_TIMEOUT)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def print_cameras(results: list[dict], args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    print(f"\ncameras recorded: 1280x720 25 fps H.264 ~2 Mbit/s passthrough, {args.segment_seconds:g} s segments, local "
          f"storage (fsync), {args.seconds:.0f} s measured after {args.warmup:.0f} s warm-up, {cores} cores "
          f"(machine = {100 * cores} % of one core)")
    print(f"{'cams':>5} {'CPU %':>7} {'% mach':>7} {'%/cam':>6} {'farm %':>7} {'busy %':>7} {'RSS MiB':>8} "
          f"{'segs/cam':>9} {'exp':>4} {'cover %':>8} {'Mbit/s':>7} {'holes':>6} {'gaps':>5} {'alarms':>7}")
    for r in results:
        flag = "  host saturated" if r["machine_busy_pct"] >= SATURATED else ""
        segs = f"{r['in_window_min']}-{r['in_window_max']}" if r["in_window_min"] != r["in_window_max"] else str(r["in_window_min"])
        print(f"{r['cameras']:>5} {r['cpu_pct']:>7.1f} {r['machine_pct']:>7.1f} {r['cpu_per_camera']:>6.2f} "
              f"{r['farm_pct']:>7.1f} {r['machine_busy_pct']:>7.1f} {r['rss_mib']:>8.0f} {segs:>9} "
              f"{r['expected_in_window']:>4} {r['coverage_min']:>8.1f} {r['mbit_s']:>7.2f} {r['holes']:>6} "
              f"{r['gap_rows']:>5} {r['alarms']:>7}{flag}", flush=True)
        if r["gap_reasons"] or r["log_fell_behind"]:
            print(f"      gap reasons: {', '.join(r['gap_reasons']) or '-'}; 'fell behind' in the log: {r['log_fell_behind']}")
    print("CPU % = gateway process, % of one core; % mach = of the whole machine; busy % = whole machine incl. the farm;")
    print("segs/cam = segments wholly inside the measured window (min-max over cameras), exp = expected at least;")
    print("cover % = least share of the window covered by any camera's segments; holes = breaks between segments")
    ok = [r for r in results if r["cameras"] >= TARGET_CAMERAS]
    if ok:
        r = ok[0]
        healthy = r["in_window_min"] >= r["expected_in_window"] and r["alarms"] == 0 and r["holes"] == 0
        print(f"target: >= {TARGET_CAMERAS} cameras recorded below {TARGET_MACHINE_PCT:.0f} % of the machine: "
              f"{r['cameras']} cameras at {r['machine_pct']:.1f} %, recordings {'complete' if healthy else 'INCOMPLETE'}: "
              f"{verdict(r['machine_pct'] < TARGET_MACHINE_PCT and healthy)}")
    else:
        print(f"target: >= {TARGET_CAMERAS} cameras below {TARGET_MACHINE_PCT:.0f} % of the machine: not run at {TARGET_CAMERAS}")


# -- timeline and VOD --------------------------------------------------------------------

DAY = 86400.0
SEGMENT = 60.0
#: (start day offset, length in seconds, recorded reason or None for an unexplained hole)
GAPS = [
    (2.25, 300, "camera offline"),
    (7.5, 3 * 3600, "gateway down"),
    (13.1, 600, None),
    (21.8, 45 * 60, "camera offline"),
    (30.4, 120, None),
    (40.6, 2 * 3600, "storage failed"),
]


def generate_rows(camera: str, t0: float, days: float) -> tuple[list[dict], list[dict]]:
    """Segments of one camera every 60 s for ``days``, minus the GAPS; and the gap rows."""
    from gateway.recording.recorder import segment_key

    holes = [(t0 + d * DAY, t0 + d * DAY + length, reason) for d, length, reason in GAPS]
    rows, t, i = [], t0, 0
    end = t0 + days * DAY
    while t < end:
        hole = next((h for h in holes if h[0] <= t < h[1]), None)
        if hole is not None:
            t = hole[1]
            continue
        size = 15_000_000 + (i * 7919) % 1_000_000
        rows.append({
            "camera": camera, "start": t, "end": t + SEGMENT, "duration": SEGMENT, "bytes": size,
            "sha256": f"{i:064x}", "storage_key": segment_key(camera, t), "backend": "local", "codec": "h264",
            "width": 1280, "height": 720, "created_at": t + SEGMENT + 0.5, "replicated_at": None, "init_bytes": 812,
        })
        t += SEGMENT
        i += 1
    gap_rows = [{"camera": camera, "start": s, "end": e, "reason": r} for s, e, r in holes if r is not None]
    return rows, gap_rows


async def fill(db, cameras: list[str], t0: float, days: float) -> int:  # db: gateway.db.Database
    from gateway.db import recording_gaps, segments

    total = 0
    for camera in cameras:
        rows, gap_rows = generate_rows(camera, t0, days)
        async with db.begin() as conn:
            for k in range(0, len(rows), 10_000):
                await conn.execute(segments.insert(), rows[k : k + 10_000])
            await conn.execute(recording_gaps.insert(), gap_rows)
        total += len(rows)
    return total


async def timed(fn, repeats: int) -> tuple[list[float], object]:
    samples, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = await fn()
        samples.append(1000 * (time.perf_counter() - t))
    return samples, result


async def measure_timeline(args: argparse.Namespace) -> dict:
    import sqlalchemy as sa

    from gateway.db import Database, segments
    from gateway.recording.index import MAX_SEGMENT_SECONDS, Catalogue, Gap
    from gateway.recording.playback import vod_playlist

    tmp = Path(tempfile.mkdtemp(prefix="citygate-bench-timeline-"))
    try:
        db_path = tmp / "citygate.db"
        days = 45.0
        t0 = math.floor(time.time() / DAY) * DAY - days * DAY
        t1 = t0 + days * DAY
        async with Database(f"sqlite+aiosqlite:///{db_path}") as db:
            cameras = ["cam1"] + [f"cam{i}" for i in range(2, 2 + args.other_cameras)]
            t = time.perf_counter()
            rows = await fill(db, cameras, t0, days)
            # the rows were bulk-inserted, not added one by one: build the runs the way the
            # catalogue keeps them
            from gateway.recording.index import _rebuild_runs

            async with db.begin() as conn:
                for camera in cameras:
                    await _rebuild_runs(conn, camera, t0 - DAY, t1 + DAY)
            fill_s = time.perf_counter() - t
            cat = Catalogue(db)

            query = (
                sa.select(segments)
                .where(segments.c.camera == "cam1", segments.c.start >= t0 - MAX_SEGMENT_SECONDS,
                       segments.c.start < t1, segments.c.end > t0)
                .order_by(segments.c.start)
            )
            sql = str(query.compile(compile_kwargs={"literal_binds": True}))
            raw = sqlite3.connect(db_path)  # a second reader beside the engine's (WAL)

            light = query.with_only_columns(segments.c.id, segments.c.start, segments.c.end)
            light_sql = str(light.compile(compile_kwargs={"literal_binds": True}))

            async def raw_rows() -> list:
                return raw.execute(sql).fetchall()

            async def raw_light() -> list:
                return raw.execute(light_sql).fetchall()

            async def core_rows() -> list:
                async with db.connect() as conn:
                    return (await conn.execute(query)).all()

            # the 45-day steps round-robin, so the host's load drifts over all of them alike
            steps = {
                "light_ms": raw_light,
                "raw_ms": raw_rows,
                "core_ms": core_rows,
                "seg_ms": lambda: cat.segments("cam1", t0, t1),
                "full_ms": lambda: cat.timeline("cam1", t0, t1),
            }
            samples: dict[str, list[float]] = {k: [] for k in steps}
            try:
                plan = [r[-1] for r in raw.execute("EXPLAIN QUERY PLAN " + sql)]
                for _ in range(args.repeats):
                    for key, step in steps.items():
                        ms, result = await timed(step, 1)
                        samples[key] += ms
                        del result
            finally:
                raw.close()
            items = await cat.timeline("cam1", t0, t1)

            day0 = t0 + 20 * DAY + 3600  # a day that crosses no gap
            day_ms, day_items = await timed(lambda: cat.timeline("cam1", day0, day0 + DAY), args.repeats * 5)

            async def vod() -> str:
                return vod_playlist(await cat.timeline("cam1", day0, day0 + DAY), "/api/cameras/cam1/recordings/segments/{id}")

            vod_ms, playlist = await timed(vod, args.repeats * 5)
            # what the API answers for ranges over a day: contiguous runs merged into spans
            spans_ms, span_items = await timed(lambda: cat.spans("cam1", t0, t1), args.repeats)

            profile_text = ""
            if args.profile or statistics.median(samples["full_ms"]) > TARGET_TIMELINE_MS:
                prof = cProfile.Profile()
                prof.enable()
                await cat.timeline("cam1", t0, t1)
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
                profile_text = out.getvalue()
        return {
            "rows": rows, "cameras": len(cameras), "fill_s": fill_s,
            **samples, "full_items": len(items), "full_gaps": sum(isinstance(i, Gap) for i in items),
            "day_ms": day_ms, "day_items": len(day_items),
            "spans_ms": spans_ms, "spans_items": len(span_items),
            "vod_ms": vod_ms, "vod_segments": playlist.count("#EXTINF"), "vod_kib": len(playlist) / 1024,
            "plan": plan, "profile": profile_text,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_timeline(r: dict, repeats: int) -> None:
    med = statistics.median
    print(f"\ntimeline: SQLite catalogue, {r['rows']} rows for {r['cameras']} cameras (45 days of 60 s segments each), "
          f"filled in {r['fill_s']:.1f} s; p50 / min / max over the repeats")
    print(f"{'':>44} {'items':>7} {'p50 ms':>8} {'min ms':>8} {'max ms':>8}")
    for label, key, items in (
        ("timeline, 45 days, as spans (API default)", "spans_ms", f"{r['spans_items']}"),
        ("timeline, 45 days, every segment", "full_ms", f"{r['full_items']}"),
        ("timeline, 1 day", "day_ms", f"{r['day_items']}"),
        ("timeline + vod_playlist, 24 h", "vod_ms", f"{r['vod_segments']}"),
    ):
        s = r[key]
        print(f"{label:>44} {items:>7} {med(s):>8.1f} {min(s):>8.1f} {max(s):>8.1f}")
    print(f"45-day timeline: {r['full_items']} items of which {r['full_gaps']} gaps; 24 h playlist {r['vod_kib']:.0f} KiB")
    print("where the 45-day query's time goes (each step includes the one above):")
    for label, key in (
        ("sqlite3 module, same SQL, fetchall", "raw_ms"),
        ("SQLAlchemy Core over aiosqlite, .all()", "core_ms"),
        ("Catalogue.segments (rows -> Segment)", "seg_ms"),
        ("Catalogue.timeline (+ gaps query, gap scan)", "full_ms"),
    ):
        s = r[key]
        print(f"{label:>44} {'':>7} {med(s):>8.1f} {min(s):>8.1f} {max(s):>8.1f}")
    s = r["light_ms"]
    print(f"{'for comparison: sqlite3, id/start/end only':>44} {'':>7} {med(s):>8.1f} {min(s):>8.1f} {max(s):>8.1f}")
    print("query plan: " + "; ".join(r["plan"]))
    print(f"target: timeline over 45 days < {TARGET_TIMELINE_MS:.0f} ms: as spans {verdict(med(r['spans_ms']) < TARGET_TIMELINE_MS)}, "
          f"every segment {verdict(med(r['full_ms']) < TARGET_TIMELINE_MS)}; "
          f"1 day: {verdict(med(r['day_ms']) < TARGET_TIMELINE_MS)}")
    print(f"target: 24 h VOD playlist (timeline + vod_playlist) < {TARGET_VOD_MS:.0f} ms: "
          f"{verdict(med(r['vod_ms']) < TARGET_VOD_MS)}")
    if r["profile"]:
        print("\ncProfile of one 45-day timeline call (by own time):")
        print("\n".join(line for line in r["profile"].splitlines() if line.strip())[:4000])


# -- driver ------------------------------------------------------------------------------


async def run_camera_counts(args: argparse.Namespace) -> list[dict]:
    farm, url = start_farm(args.width, args.height)
    results = []
    try:
        for count in (int(c) for c in args.counts.split(",")):
            r = await run_cameras(farm, url, count, args)
            results.append(r)
            print(f"  {count} cameras: online after {r['startup_s']:.1f} s, {r['cpu_pct']:.1f} % of one core", flush=True)
    finally:
        stop_process(farm, STOP_TIMEOUT)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Citygate recording benchmark")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time per camera count")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--counts", default="10,25,50")
    parser.add_argument("--segment-seconds", type=float, default=10.0, help="recording segment length (production: 60)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--other-cameras", type=int, default=4, help="cameras with 45 days of rows besides the one queried")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="always profile the 45-day timeline")
    parser.add_argument("--skip-cameras", action="store_true")
    parser.add_argument("--skip-timeline", action="store_true")
    args = parser.parse_args()

    print(f"recording benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_cameras:
        print_cameras(asyncio.run(run_camera_counts(args)), args)
    if not args.skip_timeline:
        print_timeline(asyncio.run(measure_timeline(args)), args.repeats)


if __name__ == "__main__":
    main()
