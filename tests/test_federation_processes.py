"""Federation across processes: a district Citygate runs as its own process (``citygate
serve``), a central Citygate adds its camera with the ``citygate`` vendor; an operator plays
the remote camera live in Chromium on the central gateway and plays the district's own
recordings through the central archive route; the district's audit log names the central
user for the archive reads."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import av
import pytest

from gateway.appkeys import AUDIT
from tests.fixtures_app import ROOT, RunningGateway, camera_toml
from tests.fixtures_browser import CHROMIUM
from tests.fixtures_cameras import free_port
from tests.test_webclient import assert_playing, open_viewer, page, show_camera, wait_phase  # noqa: F401 - the page fixture

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")
PASSWORD = "Federated-district-pass-1"


async def _district(tmp_path: Path) -> tuple[asyncio.subprocess.Process, str, Path]:
    conf = tmp_path / "district-conf"
    conf.mkdir()
    port, rtsp = free_port(), free_port()
    (conf / "cameras.toml").write_text(
        camera_toml("market", "demo", area="d1", width=320, height=240, fps=10, keyframe_interval=1.0)
    )
    (conf / "gateway.toml").write_text(textwrap.dedent(f"""
        [server]
        port = {port}
        data-dir = "data"
        [recording]
        segment-seconds = 1
        [rtsp-out]
        enabled = true
        port = {rtsp}
    """))
    (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(conf),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=str(tmp_path),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # the one-time password is printed, not logged
    )
    return proc, f"http://127.0.0.1:{port}", conf


async def _first_admin_password(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line, "the district gateway exited"
        found = re.search(r"^\s+password: (\S+)\s*$", line)
        if found:
            return found.group(1)
    raise AssertionError("the district never printed its first administrator's password")


async def _session(http: aiohttp.ClientSession, url: str, username: str, password: str, new: str) -> dict:
    """Sign in, change the first password, sign in again: the session body (csrf)."""
    async with http.post(url + "/api/session", json={"username": username, "password": password}) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    http.headers["X-CSRF-Token"] = body["csrf_token"]
    if body["must_change_password"]:
        async with http.post(url + "/api/session/password", json={"old_password": password, "new_password": new}) as resp:
            assert resp.status == 200, await resp.text()
    return body


async def test_a_district_process_federated_live_in_chromium_and_its_archive_through_the_centre(
    tmp_path: Path, make_gateway, page
) -> None:
    proc, district_url, conf = await _district(tmp_path)
    drain: asyncio.Task | None = None
    try:
        one_time = await _first_admin_password(proc)
        assert proc.stdout is not None
        drain = asyncio.create_task(proc.stdout.read())  # keep the pipe from filling up
        jar = lambda: aiohttp.CookieJar(unsafe=True)  # noqa: E731 - cookies of 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar()) as admin, aiohttp.ClientSession(cookie_jar=jar()) as service:
            for _ in range(200):
                try:
                    async with admin.get(district_url + "/api/health") as resp:
                        if resp.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            await _session(admin, district_url, "admin", one_time, PASSWORD)
            async with admin.post(
                district_url + "/api/users",
                json={"username": "central", "role": "central-system", "areas": ["d1"], "password": PASSWORD + "-c"},
            ) as resp:
                assert resp.status == 201, await resp.text()
            await _session(service, district_url, "central", PASSWORD + "-c", PASSWORD + "-zz")
            async with service.post(
                district_url + "/api/session", json={"username": "central", "password": PASSWORD + "-zz", "kind": "token"}
            ) as resp:
                assert resp.status == 201, await resp.text()
                token = (await resp.json())["token"]

        central: RunningGateway = await make_gateway(
            camera_toml("d1-market", "citygate", base_url=district_url, token=token, camera="market", node="central")
        )
        await central.wait_online("d1-market", timeout=40)

        # live, in Chromium, on the central gateway
        await open_viewer(page, central)
        await show_camera(page, "d1-market")
        assert await wait_phase(page, 0, "live") == "live · WebRTC"
        await assert_playing(page, 0)

        # the district's own recordings, read through the central archive route
        alice = await central.sign_in("alice", role="operator", all_areas=True)
        since = time.time() - 60
        deadline = time.monotonic() + 30
        while True:
            async with alice.get(
                f"{central.url}/api/cameras/d1-market/archive/recordings",
                params={"from": str(since), "to": str(time.time()), "detail": "segments"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                items = [i for i in (await resp.json())["items"] if "id" in i and i.get("bytes")]
            if items:
                break
            assert time.monotonic() < deadline, "the district recorded nothing"
            await asyncio.sleep(0.3)
        async with alice.get(
            f"{central.url}/api/cameras/d1-market/archive/recordings/playlist.m3u8",
            params={"from": str(since), "to": str(time.time())},
        ) as resp:
            assert resp.status == 200, await resp.text()
            playlist = await resp.text()
        uris = re.findall(r"(/api/cameras/[^\s\"]+\.mp4[^\s\"]*)", playlist)
        assert uris and all(u.startswith("/api/cameras/d1-market/archive/recordings/segments/") for u in uris), playlist
        async with alice.get(f"{central.url}/api/cameras/d1-market/archive/recordings/segments/{items[0]['id']}.mp4") as resp:
            assert resp.status == 200, await resp.text()
            data = await resp.read()
        with av.open(io.BytesIO(data)) as container:
            frames = list(container.decode(video=0))
        assert frames and (frames[0].width, frames[0].height) == (320, 240)

        # refused without playback.view here (the district never asked), and audited here
        bob = await central.sign_in("bob", role="operator", areas=("elsewhere",))
        async with bob.get(f"{central.url}/api/cameras/d1-market/archive/recordings") as resp:
            assert resp.status == 403
        mine = await central.app[AUDIT].query(user="alice", camera="d1-market")
        assert any(e["detail"].get("archive") == "remote" for e in mine), mine

        # the district's audit log (its own database, read as an auditor would) names the central user
        with sqlite3.connect(conf / "data" / "citygate.db") as db:
            rows = db.execute("SELECT action, detail FROM audit WHERE user = 'central'").fetchall()
        named = [action for action, detail in rows if json.loads(detail or "{}").get("on_behalf_of") == "central:alice via central"]
        assert any(action.startswith("playback") for action in named), rows[-10:]
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            drain.cancel()
