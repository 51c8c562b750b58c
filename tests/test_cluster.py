"""Three Citygate nodes as separate processes on one machine (own ports; one database and one
recording store, as a city's PostgreSQL and S3 would be): cameras spread over the nodes; a
WHEP viewer signed in on node A watches a camera node B runs and gets frames; ending the
session on node C ends that view; a forged node-to-node request is refused and audited;
kill -9 of a node moves its cameras to the survivors, whose recordings resume with the gap
catalogued once, as a failover, and no two segments of a camera overlapping (fencing)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from tests.fixtures_app import ROOT, camera_toml
from tests.fixtures_cameras import free_port
from tests.test_webrtc import client_offer_pc

PASSWORD = "Three-nodes-pass-1"
LEASE = 2.0
NODES = ("node-a", "node-b", "node-c")
CAMERAS = ("cam0", "cam1", "cam2", "cam3", "cam4", "cam5")


class Node:
    def __init__(self, name: str, root: Path, data: Path, secret: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = root / f"{name}-conf"
        self.conf.mkdir()
        self.conf.joinpath("cameras.toml").write_text("".join(
            camera_toml(cid, "demo", area="d1", width=160, height=120, fps=10, keyframe_interval=1.0) for cid in CAMERAS
        ))
        self.conf.joinpath("roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
        self.conf.joinpath("gateway.toml").write_text(textwrap.dedent(f"""
            [server]
            port = {self.port}
            data-dir = "{data}"
            [recording]
            segment-seconds = 1
            [cluster]
            node-id = "{name}"
            advertise-url = "{self.url}"
            lease-seconds = {LEASE}
            secret-file = "{secret}"
        """))
        self.proc: asyncio.subprocess.Process | None = None
        self.output: asyncio.Task | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--config", str(self.conf),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    async def first_password(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode()
            assert line, f"{self.name} exited"
            if found := re.search(r"^\s+password: (\S+)\s*$", line):
                return found.group(1)
        raise AssertionError(f"{self.name} never printed the first administrator's password")

    def drain_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        self.output = asyncio.create_task(self.proc.stdout.read())

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.output is not None:
            await self.output


async def poll(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.2)


async def signed_in(url: str, password: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def listening():
        try:
            async with http.get(url + "/api/health") as resp:
                return resp.status < 500
        except aiohttp.ClientError:
            return False
    await poll(listening, 60, f"{url} listening")
    async with http.post(url + "/api/session", json={"username": "admin", "password": password}) as resp:
        assert resp.status == 201, await resp.text()
        http.headers["X-CSRF-Token"] = (await resp.json())["csrf_token"]
    return http


def segments(db: Path, camera: str) -> list[tuple[float, float]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT start, \"end\" FROM segments WHERE camera = ? ORDER BY start", (camera,)).fetchall()


def failover_gaps(db: Path, camera: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT reason FROM recording_gaps WHERE camera = ?", (camera,)).fetchall()
    return [r[0] for r in rows if r[0].startswith("node failover")]


def audited(db: Path, action: str) -> list[dict]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT outcome, detail FROM audit WHERE action = ?", (action,)).fetchall()
    return [{"outcome": o, **json.loads(d)} for o, d in rows]


async def test_three_nodes_share_cameras_forward_views_and_fail_over(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    secret = tmp_path / "cluster.key"
    secret.write_text("x" * 64)
    secret.chmod(0o600)
    nodes = {name: Node(name, tmp_path, data, secret) for name in NODES}
    db = data / "citygate.db"
    a, b, c = nodes.values()
    sessions: list[aiohttp.ClientSession] = []
    pc = None
    try:
        await a.start()
        one_time = await a.first_password()
        a.drain_output()
        await b.start(), await c.start()
        b.drain_output(), c.drain_output()

        first = await signed_in(a.url, one_time)
        sessions.append(first)
        async with first.post(a.url + "/api/session/password", json={"old_password": one_time, "new_password": PASSWORD}) as resp:
            assert resp.status == 200, await resp.text()
        on_a = await signed_in(a.url, PASSWORD)
        sessions.append(on_a)

        async def spread():
            async with on_a.get(a.url + "/api/cluster") as resp:
                if resp.status != 200:
                    return None
                report = await resp.json()
            alive = {n["node"] for n in report["nodes"] if n["alive"]}
            owners = report["cameras"]
            per_node = {n: sum(1 for o in owners.values() if o == n) for n in NODES}
            return report if alive == set(NODES) and all(v == 2 for v in per_node.values()) else None

        report = await poll(spread, 60, "six cameras spread two per node over three nodes")
        owned_by_b = [cid for cid, node in report["cameras"].items() if node == "node-b"]

        # -- a viewer signed in on A watches a camera B runs: frames arrive ----------------
        camera = owned_by_b[0]
        pc = client_offer_pc()
        await pc.setLocalDescription(await pc.createOffer())
        async def answered():
            async with on_a.post(a.url + f"/api/cameras/{camera}/whep", data=pc.localDescription.sdp.encode(),
                                 headers={"Content-Type": "application/sdp"}) as resp:
                return (resp.status, resp.headers.copy(), await resp.text()) if resp.status != 503 else None
        status, headers, answer = await poll(answered, 20, f"a WHEP answer for {camera} through node A")
        assert status == 201, answer
        assert headers["Location"].startswith("/api/whep/sessions/node-b~")  # the session names its node
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        track = pc.getTransceivers()[0].receiver.track
        frame = await asyncio.wait_for(track.recv(), 20)
        assert frame.width == 160 and frame.height == 120
        # the owner audited the view once (node A only forwarded it)
        assert len([e for e in audited(db, "live.start") if e["outcome"] == "ok"]) == 1

        # -- the session ends on node C: the view on B ends within a few seconds ----------
        on_c = aiohttp.ClientSession(cookie_jar=on_a.cookie_jar, headers=dict(on_a.headers))
        sessions.append(on_c)
        ended_at = time.monotonic()
        async with on_c.delete(c.url + "/api/session") as resp:
            assert resp.status in (200, 204), await resp.text()

        async def view_closed():
            return pc.connectionState in ("closed", "failed") or track.readyState == "ended"
        await poll(view_closed, 6, "the view ending after the session ended on another node")
        assert time.monotonic() - ended_at < 6

        # -- a forged node-to-node request is refused and audited --------------------------
        async with aiohttp.ClientSession() as outsider:
            forged = {"X-Citygate-Node": "node-a", "X-Citygate-Time": f"{time.time():.3f}",
                      "X-Citygate-Client": "10.0.0.1", "X-Citygate-Signature": "0" * 64}
            async with outsider.get(b.url + f"/api/cameras/{camera}/snapshot.jpg", headers=forged) as resp:
                assert resp.status == 403
        assert any(e["outcome"] == "refused" and e["reason"] == "bad signature" for e in audited(db, "cluster.forged"))

        # -- kill -9 of node B: its cameras record again on A and C -------------------------
        on_a2 = await signed_in(a.url, PASSWORD)
        sessions.append(on_a2)
        assert b.proc is not None
        killed_at = time.time()
        b.proc.kill()
        await b.proc.wait()

        async def moved():
            async with on_a2.get(a.url + "/api/cluster") as resp:
                report = await resp.json()
            owners = report["cameras"]
            return report if all(owners[cid] in ("node-a", "node-c") for cid in owned_by_b) else None
        await poll(moved, LEASE + 10, "node B's cameras taken over by A and C")

        def resumed() -> bool:
            return all(any(start > killed_at for start, _ in segments(db, cid)) for cid in owned_by_b)

        async def recording_again():
            return await asyncio.to_thread(resumed)
        await poll(recording_again, LEASE + 15, "recording resumed on the survivors")
        for cid in owned_by_b:
            assert len(failover_gaps(db, cid)) == 1, f"{cid}: the failover gap is catalogued once"
            spans = segments(db, cid)
            for (s1, e1), (s2, _) in zip(spans, spans[1:]):
                assert s2 >= e1 - 0.05, f"{cid}: segments overlap ({s1}-{e1} and {s2}): two writers"
    finally:
        if pc is not None:
            await pc.close()
        for http in sessions:
            await http.close()
        await asyncio.gather(*(n.stop() for n in nodes.values()))
