"""The cluster: control plane at city scale, failover time, recording capacity per worker.

control   700 lightweight simulated cameras (no media) owned by 3 nodes in this process,
          each a real ``ClusterNode`` on one database (SQLite file, or ``--database-url``
          PostgreSQL): the time a tick takes, SQL statements per second across the
          cluster, lease renewals per second, and the time to rebalance after a fourth
          node joins and after one node dies (stops renewing without releasing).
failover  Two ``citygate serve`` node processes sharing a SQLite database, --cameras demo
          cameras recorded in 1 s segments; kill -9 of the node holding the most cameras,
          --kills times (the killed node is started again between kills): time from the
          kill to the first segment the survivor catalogues for each moved camera, p50/max.
capacity  One pre-encoded 1280x720 25 fps ~2 Mbit/s H.264 camera farm (bench/camera_farm.py)
          and ``citygate serve --workers W`` recording --cameras ``generic_rtsp`` cameras
          from it, for W = 1 and 2 in the same run: CPU of every worker process, the share
          of the window recorded, and the cameras a machine of this size would record at
          under 80 % of all its cores (one worker is one event loop: at most one core).

    python bench/cluster.py control [--cameras 700] [--nodes 3] [--database-url URL]
    python bench/cluster.py failover [--cameras 6] [--kills 5] [--lease 4]
viewers   The same farm, ``citygate serve --workers W`` for W = 1 and 2 in the same run with
          --cameras cameras, and WebRTC viewers (aiortc, counting complete frames from the
          clear RTP headers: bench/_client.py) spread evenly over the cameras, at each of
          --viewers counts: how many hold the full 25 fps, and the CPU of every worker. All
          offers go to the one port; a worker that does not run the camera forwards the offer
          to the one that does, which then sends the media. The viewers run on the same
          machine: on a small one they, not the gateway, may be what runs out first.

    python bench/cluster.py control [--cameras 700] [--nodes 3] [--database-url URL]
    python bench/cluster.py failover [--cameras 6] [--kills 5] [--lease 4]
    python bench/cluster.py capacity [--cameras 30] [--seconds 20]
    python bench/cluster.py viewers [--cameras 4] [--viewers 40,100,160] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import live  # noqa: E402  (bench/live.py: viewer processes)
from _client import auth_headers, create_user, free_port, process_cpu_seconds, sign_in, stop_process  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from gateway.cluster.node import ClusterNode  # noqa: E402
from gateway.config import ClusterConfig  # noqa: E402
from gateway.db import Database  # noqa: E402
from gateway.events import EventBus  # noqa: E402


# -- control plane ---------------------------------------------------------------------------


class SimulatedCameras:
    """What a node's ownership loop needs of its camera manager, without any media."""

    def __init__(self, ids: list[str]) -> None:
        self._ids = ids
        self._running: set[str] = set()
        self.on_removed: list = []  # cameras never leave the configuration here

    def ids(self) -> list[str]:
        return self._ids

    def running(self) -> list:
        return []

    def is_running(self, camera_id: str) -> bool:
        return camera_id in self._running

    async def start_camera(self, camera_id: str) -> None:
        self._running.add(camera_id)

    async def stop_camera(self, camera_id: str) -> None:
        self._running.discard(camera_id)


class Statements:
    def __init__(self, db: Database) -> None:
        self.count = 0
        sa.event.listen(db.engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, *args: object) -> None:
        self.count += 1


def make_node(db: Database, name: str, lease: float, cameras: list[str]) -> tuple[ClusterNode, SimulatedCameras]:
    config = ClusterConfig(node_id=name, advertise_url=f"http://127.0.0.1:1/{name}", capacity=10000,
                           lease_seconds=lease, secret_file="unused")
    node = ClusterNode(db, config, EventBus())
    sim = SimulatedCameras(cameras)
    node.bind(sim)  # type: ignore[arg-type]
    return node, sim


def timed(node: ClusterNode, durations: list[float]) -> None:
    """Record how long each of the node's ticks takes."""
    tick = node.tick

    async def timed_tick() -> None:
        t = time.monotonic()
        await tick()
        durations.append(time.monotonic() - t)

    node.tick = timed_tick  # type: ignore[method-assign]


async def settled(sims: list[SimulatedCameras], expected: list[int], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        counts = sorted(len(s._running) for s in sims)
        if counts == sorted(expected) and sum(counts) == sum(expected):
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise RuntimeError(f"did not settle on {expected}: {[len(s._running) for s in sims]}")


async def control(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="citygate-cluster-"))
    url = args.database_url or f"sqlite+aiosqlite:///{tmp / 'cluster.db'}"
    cameras = [f"cam{i:04d}" for i in range(args.cameras)]
    async with Database(url) as db:
        stmts = Statements(db)
        nodes = [make_node(db, f"node-{i}", args.lease, cameras) for i in range(args.nodes)]
        durations: list[float] = []
        for node, _ in nodes:
            timed(node, durations)
        started = time.monotonic()
        for node, _ in nodes:
            await node.__aenter__()
        share = -(-args.cameras // args.nodes)
        expected = [share] * (args.cameras // share) + ([args.cameras % share] if args.cameras % share else [])
        expected += [0] * (args.nodes - len(expected))
        took = await settled([s for _, s in nodes], expected, 120)
        print(f"control plane: {args.cameras} cameras over {args.nodes} nodes on {db.engine.dialect.name}, lease {args.lease:.0f} s")
        print(f"  first spread:             {took:6.2f} s after the nodes started ({time.monotonic() - started:.2f} s in all)")

        # steady state: statements per second and tick durations
        await asyncio.sleep(args.lease)
        before, t0 = stmts.count, time.monotonic()
        durations.clear()
        await asyncio.sleep(2 * args.lease)
        rate = (stmts.count - before) / (time.monotonic() - t0)
        print(f"  steady state:             {rate:6.0f} SQL statements/s across the cluster "
              f"({args.cameras * 3 / args.lease:.0f} lease renewals/s, batched into one UPDATE per node and tick)")
        print(f"  a tick (renew {share} leases, read nodes/leases/views, beat): p50 {statistics.median(durations) * 1000:.1f} ms, "
              f"max {max(durations) * 1000:.1f} ms")

        # a node joins
        joiner, joiner_sim = make_node(db, f"node-{args.nodes}", args.lease, cameras)
        t = time.monotonic()
        await joiner.__aenter__()
        n = args.nodes + 1
        share = -(-args.cameras // n)
        expected = [share] * (args.cameras // share) + ([args.cameras % share] if args.cameras % share else [])
        expected += [0] * (n - len(expected))
        sims = [s for _, s in nodes] + [joiner_sim]
        joined = await settled(sims, expected, 300)
        print(f"  a node joins:             rebalanced in {joined:6.2f} s (about {args.cameras // n} cameras moved, "
              f"a few per tick so viewers are not all moved at once)")

        # a node dies: it stops renewing and never releases
        victim, victim_sim = nodes[0]
        assert victim._task is not None
        victim._task.cancel()
        killed = time.monotonic()
        lost = len(victim_sim._running)
        survivors = [s for _, s in nodes[1:]] + [joiner_sim]
        share = -(-args.cameras // args.nodes)
        while time.monotonic() - killed < 300:
            if sum(len(s._running) for s in survivors) == args.cameras:
                break
            await asyncio.sleep(0.05)
        print(f"  a node dies:              its {lost} cameras owned again after {time.monotonic() - killed:6.2f} s "
              f"(lease {args.lease:.0f} s + up to one tick)")
        victim._owned.clear()
        for node, _ in [*nodes[1:], (joiner, joiner_sim)]:
            await node.__aexit__(None, None, None)
    shutil.rmtree(tmp, ignore_errors=True)


# -- failover ----------------------------------------------------------------------------------


def node_conf(root: Path, name: str, port: int, cameras: int, lease: float, db: Path, secret: Path, key: Path) -> Path:
    conf = root / f"{name}-conf"
    conf.mkdir()
    cams = "".join(textwrap.dedent(f"""
        [[camera]]
        id = "cam{i}"
        vendor = "demo"
        area = "d1"
        [camera.options]
        width = 320
        height = 240
        fps = 10
        keyframe-interval = 1.0
    """) for i in range(cameras))
    conf.joinpath("cameras.toml").write_text(cams)
    shutil.copy(REPO / "conf" / "roles.toml", conf / "roles.toml")
    conf.joinpath("gateway.toml").write_text(textwrap.dedent(f"""
        [server]
        port = {port}
        data-dir = "{root / (name + '-data')}"
        [database]
        url = "sqlite+aiosqlite:///{db}"
        [recording]
        segment-seconds = 1
        [evidence]
        key-path = "{key}"
        [cluster]
        node-id = "{name}"
        advertise-url = "http://127.0.0.1:{port}"
        lease-seconds = {lease}
        secret-file = "{secret}"
    """))
    return conf


def start_node(conf: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(conf)], cwd=REPO,
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def owners(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            rows = conn.execute("SELECT name, holder FROM leases WHERE holder IS NOT NULL AND expires_at >= ?",
                                (time.time(),)).fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return {}
    return {name.split(":", 1)[1]: holder for name, holder in rows if name.startswith("camera:")}


def first_segment_after(db: Path, camera: str, after: float) -> float | None:
    with sqlite3.connect(db, timeout=10) as conn:
        row = conn.execute("SELECT MIN(created_at) FROM segments WHERE camera = ? AND start > ?", (camera, after)).fetchone()
    return row[0]


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"{what} not within {timeout:.0f} s")


def failover(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="citygate-failover-"))
    db, secret, key = root / "cluster.db", root / "cluster.key", root / "signing-key.pem"
    secret.write_text(os.urandom(32).hex())
    secret.chmod(0o600)
    names = ("node-a", "node-b")
    confs = {n: node_conf(root, n, free_port(), args.cameras, args.lease, db, secret, key) for n in names}
    procs: dict[str, subprocess.Popen] = {}
    times: list[float] = []
    try:
        procs["node-a"] = start_node(confs["node-a"], root / "node-a.log")
        wait(lambda: len(owners(db)) == args.cameras, 60, "node A owning every camera")
        procs["node-b"] = start_node(confs["node-b"], root / "node-b.log")
        for k in range(args.kills):
            wait(lambda: sorted(list(owners(db).values()).count(n) for n in names) == [args.cameras // 2, args.cameras - args.cameras // 2],
                 90, "cameras spread over both nodes")
            time.sleep(3)  # both record
            current = owners(db)
            victim = max(names, key=lambda n: list(current.values()).count(n))
            moved = [c for c, n in current.items() if n == victim]
            killed = time.time()
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            for camera in moved:
                at = wait(lambda: first_segment_after(db, camera, killed), args.lease + 30, f"{camera} recording again")
                times.append(at - killed)
            print(f"  kill {k + 1}: {victim}'s {len(moved)} cameras recording again after "
                  f"{', '.join(f'{t:.1f}' for t in times[-len(moved):])} s")
            procs[victim] = start_node(confs[victim], root / f"{victim}.log")
        print(f"failover ({args.cameras} cameras, lease {args.lease:.0f} s, 1 s segments): time from kill -9 to the "
              f"first segment catalogued by the survivor")
        print(f"  p50 {statistics.median(times):.1f} s, max {max(times):.1f} s over {len(times)} camera moves in {args.kills} kills")
        print("  (a segment is catalogued when it closes: the lease time, up to one tick, the camera's start and one segment)")
    finally:
        for proc in procs.values():
            stop_process(proc, 20)
        shutil.rmtree(root, ignore_errors=True)


# -- capacity ------------------------------------------------------------------------------------


def start_farm(port: int) -> tuple[subprocess.Popen, str]:
    farm = subprocess.Popen(
        [sys.executable, str(HERE / "camera_farm.py"), "--port", str(port), "--width", "1280", "--height", "720",
         "--fps", "25", "--bitrate", "2000000"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    ready, _, _ = select.select([farm.stdout], [], [], 120.0)
    line = farm.stdout.readline().split() if ready else []
    if not line or line[0] != "READY":
        stop_process(farm)
        raise RuntimeError("the camera farm did not start")
    return farm, line[1]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def write_farm_cameras(conf: Path, cameras: int, url: str) -> None:
    """cameras.toml with ``cameras`` generic RTSP cameras cam0.. on the farm's ``url``, and the roles."""
    conf.joinpath("cameras.toml").write_text("".join(textwrap.dedent(f"""
        [[camera]]
        id = "cam{i}"
        vendor = "generic_rtsp"
        area = "d1"
        [camera.options]
        url = "{url}"
    """) for i in range(cameras)))
    shutil.copy(REPO / "conf" / "roles.toml", conf / "roles.toml")


def capacity_run(workers: int, cameras: int, seconds: float, url: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"citygate-w{workers}-"))
    conf = root / "conf"
    conf.mkdir()
    write_farm_cameras(conf, cameras, url)
    port = free_port()
    conf.joinpath("gateway.toml").write_text(f'[server]\nport = {port}\ndata-dir = "{root / "data"}"\n[recording]\nsegment-seconds = 2\n')
    log = root / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(conf), "--workers", str(workers)], cwd=REPO,
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    db = root / "data" / "citygate.db"
    try:
        def all_recording() -> bool:
            if not db.exists():
                return False
            try:
                with sqlite3.connect(db, timeout=10) as c:
                    return c.execute("SELECT COUNT(DISTINCT camera) FROM segments").fetchone()[0] == cameras
            except sqlite3.OperationalError:
                return False
        wait(all_recording, 120, "every camera recording")
        if workers > 1:  # the first worker takes every camera, then hands the others their share
            share = -(-cameras // workers)
            wait(lambda: sorted(list(owners(db).values()).count(h) for h in set(owners(db).values())) ==
                 [cameras // workers] * (workers - cameras % workers) + [share] * (cameras % workers)
                 and len(set(owners(db).values())) == workers, 120, "the cameras spread over the workers")
        time.sleep(5)  # warm-up
        pids = [proc.pid] + children(proc.pid) if workers > 1 else [proc.pid]
        before = {p: process_cpu_seconds(p) for p in pids}
        t0, start = time.monotonic(), time.time()
        time.sleep(seconds)
        cpu = {p: 100 * (process_cpu_seconds(p) - before[p]) / (time.monotonic() - t0) for p in pids}
        end = time.time()
    finally:
        stop_process(proc, 30)
    with sqlite3.connect(db) as c:
        recorded = c.execute('SELECT SUM(MIN("end", ?) - MAX(start, ?)) FROM segments WHERE "end" > ? AND start < ?',
                             (end, start, start, end)).fetchone()[0] or 0.0
    shutil.rmtree(root, ignore_errors=True)
    worker_cpu = [v for p, v in cpu.items() if p != proc.pid or workers == 1]
    return {"workers": workers, "cpu": worker_cpu, "recorded": recorded / (cameras * (end - start))}


def capacity(args: argparse.Namespace) -> None:
    farm, url = start_farm(free_port())
    cores = os.cpu_count() or 1
    try:
        rows = [capacity_run(w, args.cameras, args.seconds, url) for w in (1, 2)]
    finally:
        stop_process(farm)
    print(f"capacity: {args.cameras} cameras 1280x720 25 fps ~2 Mbit/s passthrough, recorded, {cores} cores")
    caps = []
    for row in rows:
        total = sum(row["cpu"])
        per_camera = total / args.cameras
        # one worker is one event loop: it cannot use more than one core
        budget = min(0.8 * cores * 100, 100.0 * row["workers"])
        caps.append(budget / per_camera)
        print(f"  --workers {row['workers']}: CPU {' + '.join(f'{c:.0f}' for c in row['cpu'])} % of a core "
              f"({per_camera:.2f} % per camera), {100 * row['recorded']:.1f} % of the window recorded, "
              f"~{budget / per_camera:.0f} cameras at < 80 % of the machine")
    print(f"  ratio --workers 2 / --workers 1: {caps[1] / caps[0]:.2f}x the cameras")


# -- viewers per worker count ------------------------------------------------------------------

#: aiortc viewers per viewer process (each process is one event loop).
VIEWERS_PER_PROCESS = 25
FULL_RATE = 0.95 * 25


def viewers_conf(root: Path, cameras: int, url: str, port: int, limit: int) -> Path:
    conf = root / "conf"
    conf.mkdir(parents=True)
    write_farm_cameras(conf, cameras, url)
    # all the viewers are one user's: lift the per-user limits along with the viewer limits
    conf.joinpath("gateway.toml").write_text(
        f'[server]\nport = {port}\ndata-dir = "{root / "data"}"\n[recording]\nsegment-seconds = 2\n'
        f"[live]\nmax-viewers-per-camera = {limit}\nmax-viewers = {limit}\nmax-sessions-per-user = {limit}\n"
        f"max-pending-per-user = {limit}\nmax-offers-per-minute = {10 * limit}\n"
    )
    return conf


async def viewers_window(base: str, token: str | None, cameras: int, count: int, seconds: float, pids: list[int]) -> dict:
    per_camera = [count // cameras + (1 if i < count % cameras else 0) for i in range(cameras)]
    groups = [(f"cam{i}", min(VIEWERS_PER_PROCESS, n - j)) for i, n in enumerate(per_camera) for j in range(0, n, VIEWERS_PER_PROCESS)]
    children: list[live.ViewerProcess] = []
    try:
        for camera, n in groups:
            children.append(await live.ViewerProcess.start(base, n, token, camera))
        ready = [await c.read(180) for c in children]
        await live.wait_steady(children)
        before_cpu = {p: process_cpu_seconds(p) for p in pids}
        before = [await c.mark() for c in children]
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        after = [await c.mark() for c in children]
        cpu = [100 * (process_cpu_seconds(p) - before_cpu[p]) / (time.monotonic() - t0) for p in pids]
    finally:
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
    fps = [(f1 - f0) / (a["t"] - b["t"]) for b, a in zip(before, after) for f0, f1 in zip(b["frames"], a["frames"])]
    return {"viewers": count, "receiving": sum(r["receiving"] for r in ready), "full": sum(f >= FULL_RATE for f in fps),
            "fps_min": min(fps, default=0.0), "cpu": cpu}


def viewers_run(workers: int, cameras: int, counts: list[int], seconds: float, url: str, keep: bool = False) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix=f"citygate-view-w{workers}-"))
    port = free_port()
    conf = viewers_conf(root, cameras, url, port, max(counts) + 10)
    password = create_user(conf, "bench")
    log = root / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(conf), "--workers", str(workers)], cwd=REPO,
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    db = root / "data" / "citygate.db"
    base = f"http://127.0.0.1:{port}"
    try:
        if workers > 1:
            wait(lambda: db.exists() and len(set(owners(db).values())) == workers, 120, "the cameras spread over the workers")

        async def measure_all() -> list[dict]:
            await live.wait_http(base, proc, log, timeout=60)
            token = await sign_in(base, "bench", password) if password else None
            async with aiohttp.ClientSession(headers=auth_headers(token)) as http:
                for i in range(cameras):
                    await live.wait_camera_online(http, base, f"cam{i}")
            pids = [p for p in ([proc.pid] + children(proc.pid)) if workers == 1 or p != proc.pid]
            return [await viewers_window(base, token, cameras, n, seconds, pids) for n in counts]

        return asyncio.run(measure_all())
    finally:
        stop_process(proc, 30)
        if keep:
            print(f"kept: {root} (the gateway's log is serve.log)", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def viewers(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.viewers.split(",") if c.strip()]
    farm, url = start_farm(free_port())
    try:
        runs = {w: viewers_run(w, args.cameras, counts, args.seconds, url, args.keep) for w in args.workers}
    finally:
        stop_process(farm)
    print(f"viewers: {args.cameras} cameras 1280x720 25 fps ~2 Mbit/s, WebRTC viewers spread over them, "
          f"{args.seconds:.0f} s windows, {os.cpu_count()} cores (viewers on the same machine)")
    print(f"{'workers':>7} {'viewers':>7} {'receiving':>9} {'at 25 fps':>9} {'fps min':>7}  worker CPU % of a core")
    for w, rows in runs.items():
        for r in rows:
            print(f"{w:>7} {r['viewers']:>7} {r['receiving']:>9} {r['full']:>9} {r['fps_min']:>7.1f}  "
                  f"{' + '.join(f'{c:.0f}' for c in r['cpu'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("control")
    c.add_argument("--cameras", type=int, default=700)
    c.add_argument("--nodes", type=int, default=3)
    c.add_argument("--lease", type=float, default=10.0)
    c.add_argument("--database-url", default=os.environ.get("CITYGATE_TEST_DATABASE_URL"))
    f = sub.add_parser("failover")
    f.add_argument("--cameras", type=int, default=6)
    f.add_argument("--kills", type=int, default=5)
    f.add_argument("--lease", type=float, default=4.0)
    k = sub.add_parser("capacity")
    k.add_argument("--cameras", type=int, default=30)
    k.add_argument("--seconds", type=float, default=20.0)
    v = sub.add_parser("viewers")
    v.add_argument("--cameras", type=int, default=4)
    v.add_argument("--viewers", default="40,100,160")
    v.add_argument("--seconds", type=float, default=15.0)
    v.add_argument("--workers", type=lambda text: [int(w) for w in text.split(",")], default=[1, 2], help="e.g. 1,2 (the default)")
    v.add_argument("--keep", action="store_true", help="keep each run's data dir and log")
    args = parser.parse_args()
    if args.what == "control":
        asyncio.run(control(args))
    elif args.what == "failover":
        failover(args)
    elif args.what == "viewers":
        viewers(args)
    else:
        capacity(args)


if __name__ == "__main__":
    main()
