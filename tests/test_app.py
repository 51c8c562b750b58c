"""The gateway as a whole: real server on loopback, real demo cameras, real CLI process."""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from gateway.media.timecode import read_timecode
from tests.fixtures_app import camera_toml
from tests.fixtures_cameras import free_port

ROOT = Path(__file__).parent.parent
SMALL_DEMO = {"width": 320, "height": 240, "fps": 25}


async def test_cameras_listed_online_with_stream_facts(make_gateway):
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO) + camera_toml("d2", "demo", area="north", **SMALL_DEMO))
    await gw.wait_online()
    await asyncio.sleep(1.5)  # let the rate window fill
    cams = {c["id"]: c for c in await gw.get_json("/api/cameras")}
    assert set(cams) == {"d1", "d2"}
    d1 = cams["d1"]
    assert d1["state"] == "online" and d1["codec"] == "h264"
    assert (d1["width"], d1["height"]) == (320, 240)
    assert 20 <= d1["fps"] <= 30, d1["fps"]
    assert d1["bitrate"] > 0 and d1["last_error"] is None
    assert cams["d2"]["area"] == "north"
    one = await gw.get_json("/api/cameras/d2")
    assert one["id"] == "d2" and one["state"] == "online"


async def test_broken_camera_does_not_disturb_the_others(make_gateway):
    dead = camera_toml("dead", "generic_rtsp", url=f"rtsp://127.0.0.1:{free_port()}/x")
    gw = await make_gateway(camera_toml("ok", "demo", **SMALL_DEMO) + dead)
    await gw.wait_online("ok")
    ok = gw.cameras.get("ok")
    before = ok.hub.packets
    await asyncio.sleep(1.0)
    cams = {c["id"]: c for c in await gw.get_json("/api/cameras")}
    assert cams["dead"]["state"] in ("offline", "connecting")
    assert cams["dead"]["reconnects"] >= 1 and "refused" in cams["dead"]["last_error"]
    assert ok.hub.packets - before >= 20
    health = await gw.get_json("/api/health")
    assert health["cameras"]["total"] == 2 and health["cameras"]["online"] == 1


async def test_unknown_camera_is_404_with_reason(make_gateway):
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    async with gw.session.get(gw.url + "/api/cameras/nope") as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body == {"error": "no camera 'nope'", "status": 404}


def _write_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.toml").write_text('[server]\ndata-dir = "data"\n')
    (conf / "cameras.toml").write_text(camera_toml("d1", "demo", **SMALL_DEMO))
    (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    return conf


def _read_first_admin(stdout) -> tuple[str, str, str]:
    """The one-time credentials ``serve`` prints at the first start, and what came before."""
    username, seen = None, ""
    for line in stdout:
        seen += line
        line = line.strip()
        if line.startswith("username:"):
            username = line.split(":", 1)[1].strip()
        elif line.startswith("password:"):
            return username, line.split(":", 1)[1].strip(), seen
    raise AssertionError("serve did not print the first administrator's credentials")


async def test_serve_command_runs_and_stops_gracefully_on_sigterm(tmp_path):
    conf = _write_conf(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "gateway", "serve", "--config", str(conf), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        username, password, printed = await asyncio.wait_for(asyncio.to_thread(_read_first_admin, proc.stdout), 30)
        assert f"open http://127.0.0.1:{port}/" in printed
        deadline = time.monotonic() + 20
        state = None
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            base = f"http://127.0.0.1:{port}"
            while True:  # the credentials are printed just before the port opens
                try:
                    async with session.post(base + "/api/session", json={"username": username, "password": password}) as resp:
                        assert resp.status == 201
                        body = await resp.json()
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert body["must_change_password"] is True
            async with session.get(base + "/api/cameras") as resp:
                assert resp.status == 403  # nothing but the password change until it is done
            async with session.post(
                base + "/api/session/password", json={"old_password": password, "new_password": "a-new-long-passphrase-7"},
                headers={"X-CSRF-Token": body["csrf_token"]},
            ) as resp:
                assert resp.status == 200
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/api/cameras") as resp:
                        state = (await resp.json())[0]["state"]
                        if state == "online":
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        assert state == "online"
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "started 1 cameras" in err and "Traceback" not in err


def test_serve_with_bad_config_exits_2_naming_the_problem(tmp_path):
    conf = _write_conf(tmp_path)
    (conf / "gateway.toml").write_text("[server]\nport = 'x'\n")
    proc = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(conf)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "gateway.toml: server.port: expected `int`, got `str`" in proc.stderr


def test_serve_refuses_a_signing_key_under_the_web_root(tmp_path):
    from gateway.app import WEBCLIENT_DIR

    key = WEBCLIENT_DIR / "keys" / f"{tmp_path.name}.pem"
    conf = _write_conf(tmp_path)
    (conf / "gateway.toml").write_text(f'[server]\nport = 0\ndata-dir = "data"\n[evidence]\nkey-path = "{key}"\n')
    try:
        proc = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(conf)], capture_output=True, text=True, timeout=60)
    finally:
        created = key.exists()
        key.unlink(missing_ok=True)
    assert proc.returncode == 2, proc.stderr
    assert f"gateway.toml: evidence.key-path: {key} lies inside the web root {WEBCLIENT_DIR}" in proc.stderr
    assert not created and "Traceback" not in proc.stderr


def test_serve_with_an_unreachable_database_exits_1_naming_it(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = _write_conf(tmp_path)
    (conf / "gateway.toml").write_text(f'[server]\nport = 0\ndata-dir = "data"\n[database]\nurl = "postgresql+asyncpg://city:secret@127.0.0.1:{port}/citygate"\n')
    proc = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(conf)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"cannot start: database postgresql+asyncpg://city:***@127.0.0.1:{port}/citygate: cannot connect" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "secret" not in proc.stderr


async def test_snapshot_is_a_jpeg_of_the_camera_picture(make_gateway):
    import av

    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    await gw.wait_online()
    for query, size in (("", (320, 240)), ("?width=160", (160, 120))):
        async with gw.session.get(gw.url + "/api/cameras/d1/snapshot.jpg" + query) as resp:
            assert resp.status == 200 and resp.content_type == "image/jpeg"
            body = await resp.read()
        with av.open(__import__("io").BytesIO(body), format="image2pipe") as container:
            frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == size
        # it is this camera's recent picture: the demo's burned-in clock says so
        captured = read_timecode(frame.to_ndarray(format="gray"))
        assert captured is not None and abs(captured / 1000 - time.time()) < 10
    async with gw.session.get(gw.url + "/api/cameras/d1/snapshot.jpg?width=huge") as resp:
        assert resp.status == 400 and "width" in (await resp.json())["error"]
