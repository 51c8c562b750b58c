"""Authorization and audit: what the guard adds to a request, and audited events per second.

Each part runs in a fresh process, everything on 127.0.0.1:

guard   A real gateway (``build_app`` served by aiohttp on loopback: error and access
        middleware, the local auth provider, the identity cache, the policy) with one demo
        camera at 320x240 (pre-encoded, recording off) and a browser session (cookie) of an
        operator signed in through the API. The access middleware is wrapped so that the
        time from entering it to entering the route handler is recorded: route declaration,
        ``plugins.authenticate`` (cookie → identity cache, re-read from the database every
        ``CACHE_TTL`` seconds), ``control.decide``. Then the end-to-end latency of HLS init
        and part requests with the guard in place, alternating request by request with the
        guard bypassed (the same principal handed straight to the handler): the difference
        is what authorization costs a request over HTTP. The client runs in the same
        process and event loop, so end-to-end figures include the client's own work.
audit   ``AuditLog`` on a fresh SQLite file (WAL): one producer awaiting each ``record()``
        (a commit per entry), then many concurrent producers (the writer batches whatever
        is queued into one transaction), then ``verify()`` over everything written.
        ``--postgres URL`` runs the same against PostgreSQL (appending to that database's
        chain; ``verify`` walks all of it).

    python bench/auth.py [--seconds 10] [--producers 100] [--entries 10000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CAMERA_ID = "cam1"
USERNAME = "bench"
PASSWORD = "Tr0ub4dor-and-3-horses"

TARGET_GUARD_US = 1000.0
TARGET_AUDIT_RATE = 2000.0

PART_URI = re.compile(r'#EXT-X-PART:[^\n]*URI="([^"]+)"')


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary_us(samples: list[float]) -> dict:
    """Percentiles in microseconds of samples given in seconds."""
    us = [s * 1e6 for s in samples]
    return {
        "n": len(us),
        "p50": pct(us, 50),
        "p99": pct(us, 99),
        "p999": pct(us, 99.9),
        "max": max(us) if us else float("nan"),
        "mean": statistics.fmean(us) if us else float("nan"),
        "over_1ms": sum(u > 1000 for u in us),
    }


# -- guard -------------------------------------------------------------------------------


def write_config(conf: Path) -> None:
    conf.mkdir(parents=True)
    (conf / "gateway.toml").write_text('[server]\ndata-dir = "data"\n')
    (conf / "cameras.toml").write_text(
        f'[[camera]]\nid = "{CAMERA_ID}"\nvendor = "demo"\narea = "centre"\nrecord = false\n'
        "[camera.options]\nwidth = 320\nheight = 240\npreencoded-seconds = 4\n"
    )
    shutil.copy(REPO / "conf" / "roles.toml", conf / "roles.toml")


class GuardProbe:
    """Stands in for ``access_middleware`` in the app's middleware list.

    mode "timed": the real middleware, recording the time until the handler is entered;
    "guard": the real middleware untouched; "bypass": the principal of an earlier guarded
    request handed straight to the handler (no authentication, no decision).
    """

    def __init__(self) -> None:
        from aiohttp import web

        from gateway.access.guard import PRINCIPAL
        from gateway.access.middleware import access_middleware

        self.mode = "guard"
        self.samples: list[float] = []
        self.principal = None
        self._real = access_middleware
        self._key = PRINCIPAL

        @web.middleware
        async def probe(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
            if self.mode == "bypass" and self.principal is not None:
                request[self._key] = self.principal
                return await handler(request)
            if self.mode == "guard":
                return await self._real(request, handler)
            entered = time.perf_counter()

            async def timed(req: web.Request) -> web.StreamResponse:
                self.samples.append(time.perf_counter() - entered)
                self.principal = req.get(self._key)
                return await handler(req)

            return await self._real(request, timed)

        self.middleware = probe


async def sign_in(http, base: str) -> None:  # http: aiohttp.ClientSession
    async with http.post(f"{base}/api/session", json={"username": USERNAME, "password": PASSWORD}) as resp:
        body = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"sign-in failed: {resp.status} {body}")
    csrf = {"X-CSRF-Token": body["csrf_token"]}
    if body["must_change_password"]:
        new = PASSWORD + "!"
        for old, password in ((PASSWORD, new), (new, PASSWORD)):
            async with http.post(
                f"{base}/api/session/password", json={"old_password": old, "new_password": password}, headers=csrf
            ) as resp:
                if resp.status not in (200, 400):
                    raise RuntimeError(f"password change failed: {resp.status} {await resp.text()}")


async def wait_online(http, base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(f"{base}/api/cameras/{CAMERA_ID}") as resp:
            state = await resp.json()
        if resp.status == 200 and state.get("state") == "online" and state.get("codec"):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"camera {CAMERA_ID} not online within {timeout:.0f}s: {state}")


async def newest_part(http, base: str) -> str:
    """URL of the newest complete LL-HLS part in the camera's live playlist."""
    async with http.get(f"{base}/api/cameras/{CAMERA_ID}/hls/stream.m3u8") as resp:
        text = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"playlist: {resp.status} {text}")
    uris = PART_URI.findall(text)
    if not uris:
        raise RuntimeError("the live playlist lists no parts")
    return f"{base}/api/cameras/{CAMERA_ID}/hls/{uris[-1]}"


async def measure_guard(seconds: float) -> dict:
    import aiohttp
    from aiohttp import web

    from gateway import config as config_mod
    from gateway.access.identity import CACHE_TTL
    from gateway.access.middleware import access_middleware
    from gateway.access.policy import load_roles
    from gateway.app import build_app
    from gateway.appkeys import IDENTITY
    from gateway.plugins import load_plugins

    tmp = Path(tempfile.mkdtemp(prefix="citygate-bench-auth-"))
    runner = None
    try:
        conf = tmp / "conf"
        write_config(conf)
        plugins = load_plugins()
        config = config_mod.load(conf, vendors=plugins.camera_vendors(), storage_backends=plugins.storage_backends() or None)
        app = build_app(config, plugins, load_roles(conf), on_first_admin=lambda *_: None)
        probe = GuardProbe()
        app.middlewares[app.middlewares.index(access_middleware)] = probe.middleware
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = "http://127.0.0.1:%d" % runner.addresses[0][1]
        await app[IDENTITY].create_user(USERNAME, role="operator", all_areas=True, password=PASSWORD)

        connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, like one player
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), connector=connector) as http:
            await sign_in(http, base)
            await wait_online(http, base)
            init_url = f"{base}/api/cameras/{CAMERA_ID}/hls/init.mp4"
            async with http.get(init_url, timeout=aiohttp.ClientTimeout(total=30)) as resp:  # starts the muxer
                if resp.status != 200:
                    raise RuntimeError(f"init.mp4: {resp.status} {await resp.text()}")
                await resp.read()
            await asyncio.sleep(1.5)  # a few parts in the playlist

            async def get(url: str) -> tuple[int, float]:
                t0 = time.perf_counter()
                async with http.get(url) as resp:
                    await resp.read()
                    return resp.status, time.perf_counter() - t0

            # (a) the guard's own work, per request, through the real HTTP path
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline:
                if n % 200 == 0:  # parts leave the live window after a few seconds
                    probe.mode = "guard"
                    part_url = await newest_part(http, base)
                    probe.mode = "timed"
                await get(init_url if n % 2 else part_url)
                n += 1
            guard = summary_us(probe.samples)

            # (b) end to end, guard in place vs bypassed, alternating request by request
            e2e: dict[str, dict[str, list[float]]] = {k: {"guard": [], "bypass": []} for k in ("init", "part")}
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline:
                if n % 200 == 0:
                    probe.mode = "guard"
                    part_url = await newest_part(http, base)
                kind = "init" if n % 4 < 2 else "part"
                mode = "guard" if n % 2 else "bypass"
                probe.mode = mode
                status, dt = await get(init_url if kind == "init" else part_url)
                if status == 200:
                    e2e[kind][mode].append(dt)
                elif status == 404 and kind == "part":  # the part left the playlist window
                    probe.mode = "guard"
                    part_url = await newest_part(http, base)
                else:
                    raise RuntimeError(f"GET {kind}: {status}")
                n += 1
        return {
            "guard": guard, "seconds": seconds, "cache_ttl": CACHE_TTL,
            "e2e": {k: {m: summary_us(v) for m, v in d.items()} for k, d in e2e.items()},
        }
    finally:
        if runner is not None:
            await runner.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# -- audit -------------------------------------------------------------------------------


async def measure_audit(url: str, seconds: float, producers: int, entries: int) -> dict:
    from gateway.access.audit import AuditLog
    from gateway.db import Database

    def fields(i: int) -> dict:
        return {
            "user": f"operator{i % 40}", "client": "127.0.0.1", "camera": f"cam{i % 50}",
            "detail": {"kind": "hls", "session": i, "path": f"/api/cameras/cam{i % 50}/hls/stream.m3u8"},
        }

    async with Database(url) as db, AuditLog(db) as audit:
        # sequential: one producer, each record() awaited until committed
        seq, t0 = 0, time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            await audit.record("live.start", **fields(seq))
            seq += 1
        seq_rate = seq / (time.perf_counter() - t0)

        # concurrent: many producers, batched by the writer
        per = entries // producers

        async def producer(p: int) -> None:
            for k in range(per):
                await audit.record("live.start", **fields(p * per + k))

        t0 = time.perf_counter()
        await asyncio.gather(*(producer(p) for p in range(producers)))
        conc_elapsed = time.perf_counter() - t0

        t0 = time.perf_counter()
        result = await audit.verify()
        verify_elapsed = time.perf_counter() - t0
    return {
        "sequential_entries": seq,
        "sequential_rate": seq_rate,
        "concurrent_entries": per * producers,
        "producers": producers,
        "concurrent_rate": per * producers / conc_elapsed,
        "verify_ok": result.ok,
        "verify_checked": result.checked,
        "verify_rate": result.checked / verify_elapsed,
    }


async def measure_audit_sqlite(seconds: float, producers: int, entries: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="citygate-bench-audit-"))
    try:
        return await measure_audit(f"sqlite+aiosqlite:///{tmp / 'citygate.db'}", seconds, producers, entries)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- driver ------------------------------------------------------------------------------


def run_child(*args: str, timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_guard(r: dict) -> None:
    g = r["guard"]
    print(f"\nguard: access middleware up to the handler (auth provider, identity cache, policy), {g['n']} requests")
    print(f"{'':>22} {'p50 µs':>9} {'p99 µs':>9} {'p99.9 µs':>9} {'max µs':>9} {'mean µs':>9}")
    print(f"{'guard work':>22} {g['p50']:>9.1f} {g['p99']:>9.1f} {g['p999']:>9.1f} {g['max']:>9.0f} {g['mean']:>9.1f}")
    print(f"{g['over_1ms']} requests ({100 * g['over_1ms'] / max(1, g['n']):.2f} %) took over 1 ms; about "
          f"{r['seconds'] / r['cache_ttl']:.0f} of them re-read the session and user from the database (every "
          f"{r['cache_ttl']:g} s), the rest waited for the host (load average {os.getloadavg()[0]:.1f})")
    print(f"target: authorization adds < {TARGET_GUARD_US:.0f} µs to an HLS part request: p99 {verdict(g['p99'] < TARGET_GUARD_US)}")

    print("\nend to end over HTTP (keep-alive, cookie session), guard in place vs bypassed, alternating")
    print(f"{'request':>22} {'n':>6} {'p50 µs':>9} {'p99 µs':>9} {'mean µs':>9}")
    for kind, label in (("init", "init.mp4"), ("part", "LL-HLS part")):
        for mode in ("guard", "bypass"):
            s = r["e2e"][kind][mode]
            print(f"{label + ' ' + mode:>22} {s['n']:>6} {s['p50']:>9.1f} {s['p99']:>9.1f} {s['mean']:>9.1f}")
        added_p50 = r["e2e"][kind]["guard"]["p50"] - r["e2e"][kind]["bypass"]["p50"]
        added_mean = r["e2e"][kind]["guard"]["mean"] - r["e2e"][kind]["bypass"]["mean"]
        print(f"{label + ' added':>22} {'':>6} {added_p50:>9.1f} {'':>9} {added_mean:>9.1f}")
    added = r["e2e"]["part"]["guard"]["p50"] - r["e2e"]["part"]["bypass"]["p50"]
    print("(means and p99 carry the host's noise; the p50 difference is the guard's cost)")
    print(f"target: < {TARGET_GUARD_US:.0f} µs added to a part request end to end (p50): {verdict(added < TARGET_GUARD_US)}")


def print_audit(label: str, r: dict) -> None:
    print(f"\naudit log on {label}")
    print(f"{'':>34} {'entries':>8} {'entries/s':>10}")
    print(f"{'sequential (commit per entry)':>34} {r['sequential_entries']:>8} {r['sequential_rate']:>10.0f}")
    print(f"{str(r['producers']) + ' concurrent producers (batched)':>34} {r['concurrent_entries']:>8} {r['concurrent_rate']:>10.0f}"
          f"   {verdict(r['concurrent_rate'] >= TARGET_AUDIT_RATE)}")
    print(f"{'verify() whole chain':>34} {r['verify_checked']:>8} {r['verify_rate']:>10.0f}   chain {'intact' if r['verify_ok'] else 'BROKEN'}")
    print(f"target: >= {TARGET_AUDIT_RATE:.0f} audited events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description="Citygate authorization and audit benchmark")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    parser.add_argument("--producers", type=int, default=100)
    parser.add_argument("--entries", type=int, default=10_000, help="entries written by the concurrent producers")
    parser.add_argument("--postgres", help="also run the audit part against this SQLAlchemy URL (postgresql+asyncpg://...)")
    parser.add_argument("--skip-guard", action="store_true")
    parser.add_argument("--child", choices=("guard", "audit"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "guard":
        print(json.dumps(asyncio.run(measure_guard(args.seconds))))
        return
    if args.child == "audit":
        coro = (
            measure_audit(args.url, args.seconds, args.producers, args.entries) if args.url
            else measure_audit_sqlite(args.seconds, args.producers, args.entries)
        )
        print(json.dumps(asyncio.run(coro)))
        return

    print(f"authorization and audit benchmark: {args.seconds:.0f} s per phase, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    common = ["--seconds", str(args.seconds), "--producers", str(args.producers), "--entries", str(args.entries)]
    bound = 4 * args.seconds + 120  # every child is bounded in time
    if not args.skip_guard:
        print_guard(run_child("--child", "guard", *common, timeout=bound))
    print_audit("SQLite (WAL, synchronous=NORMAL)", run_child("--child", "audit", *common, timeout=bound))
    if args.postgres:
        print_audit("PostgreSQL", run_child("--child", "audit", "--url", args.postgres, *common, timeout=bound))


if __name__ == "__main__":
    main()
