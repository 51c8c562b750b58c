"""The authenticated RTSP re-stream ([rtsp-out]) end to end: a real gateway on the GStreamer
camera, FFmpeg and GStreamer's rtspsrc as independent clients, Digest against accounts,
the policy per camera, masks in the re-streamed picture, audit entries and revocation."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.access.control import AccessControl
from gateway.appkeys import ACCESS, AUDIT, IDENTITY
from gateway.live.rtsp_out import RTSP_OUT, parse_path
from gateway.rtsp.digest import DigestAuth, DigestCredentials, expected_response, parse_authorization
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml
from tests.fixtures_cameras import SYSTEM_PYTHON, free_port
from tests.test_masks_live import REGION, region_masks

pytestmark = pytest.mark.gstreamer

W, H = 640, 360
RTSPSRC_CLIENT = Path(__file__).parent / "gst" / "rtspsrc_client.py"
MASK = f"""
[[camera.masks]]
points = {[list(p) for p in REGION]}
filter = "fill"
"""


@pytest.fixture
async def rtsp_gateway(make_gateway, shared_gst_camera) -> RunningGateway:
    cam = shared_gst_camera
    cams = (
        camera_toml("cam", "generic_rtsp", url=cam.url("h264"), sub_url=cam.url("h264-sub"))
        + camera_toml("far", "generic_rtsp", area="north", url=cam.url("h264"))
        + camera_toml("hevc", "generic_rtsp", url=cam.url("h265"))
        + camera_toml("masked", "generic_rtsp", url=cam.url("pattern"), sub_url=cam.url("h264-sub"))
        + MASK
    )
    toml = f"[rtsp-out]\nenabled = true\nport = {free_port()}\nallow-md5 = true\n[masking]\nkeyframe-interval = 1.0\n"
    gw = await make_gateway(cams, toml)
    await gw.wait_online("cam", "far", "masked", "hevc")
    return gw


async def rtsp_secret(gw: RunningGateway, username: str) -> str:
    """Issued by an administrator over the API, as a deployment does."""
    admins = [s for s in gw._sessions if getattr(s, "_citygate_admin", False)]
    admin = admins[0] if admins else await gw.sign_in("root", role="admin", all_areas=True)
    admin._citygate_admin = True  # type: ignore[attr-defined]
    async with admin.post(f"{gw.url}/api/users/{username}/rtsp-secret") as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["realm"] == "citygate" and len(body["secret"]) == 32
    return body["secret"]


async def service_account(gw: RunningGateway, username: str = "central", **kw) -> str:
    kw.setdefault("role", "central-system")
    kw.setdefault("areas", ("centre",))
    await gw.app[IDENTITY].create_user(username, password=TEST_PASSWORD, **kw)
    return await rtsp_secret(gw, username)


def url(gw: RunningGateway, path: str, user: str | None = None, secret: str | None = None) -> str:
    auth = f"{user}:{secret}@" if user else ""
    return f"rtsp://{auth}127.0.0.1:{gw.app[RTSP_OUT].port}{path}"


async def ffmpeg_frames(
    source: str, *, transport: str = "tcp", frames: int = 10, size: tuple[int, int] = (W, H), timeout: float = 30.0
) -> tuple[int, bytes, str]:
    """Decode ``frames`` frames with the FFmpeg CLI; (exit code, gray frames, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_transport", transport, "-i", source,
        "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{size[0]}x{size[1]}", "-",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out, err.decode(errors="replace")


async def audit_entries(gw: RunningGateway, *, action: str, want: int = 1, timeout: float = 10.0, **kw) -> list[dict]:
    """Poll the audit log until ``want`` entries match (written after the client hangs up)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await gw.app[AUDIT].query(action=action, **kw)
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_ffmpeg_pulls_with_digest_over_tcp_and_udp_and_every_session_is_audited(rtsp_gateway: RunningGateway) -> None:
    gw = rtsp_gateway
    secret = await service_account(gw)
    for transport in ("tcp", "udp"):
        rc, out, err = await ffmpeg_frames(url(gw, "/cameras/cam", "central", secret), transport=transport)
        assert rc == 0, err
        assert len(out) == 10 * W * H, f"{transport}: {len(out)} bytes"
    starts = await audit_entries(gw, action="live.start", user="central", want=2)
    stops = await audit_entries(gw, action="live.stop", user="central", want=2)
    assert sorted(s["detail"]["transport"] for s in starts) == ["tcp", "udp"]
    for entry in starts + stops:
        assert entry["camera"] == "cam" and entry["client"] == "127.0.0.1"
        assert entry["detail"]["protocol"] == "rtsp" and entry["detail"]["kind"] == "rtsp"
    assert all(s["detail"]["auth"] == "digest" and "Lavf" in s["detail"]["user_agent"] for s in starts)
    assert all(s["detail"]["duration"] > 0 and s["detail"]["reason"] for s in stops)

    # the sub stream, at its own size
    rc, out, err = await ffmpeg_frames(url(gw, "/cameras/cam/sub", "central", secret), frames=3, size=(W // 2, H // 2))
    assert rc == 0 and len(out) == 3 * (W // 2) * (H // 2), err


async def test_h265_is_restreamed_as_h265(rtsp_gateway: RunningGateway) -> None:
    gw = rtsp_gateway
    secret = await service_account(gw)
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-rtsp_transport", "udp", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0",
        url(gw, "/cameras/hevc", "central", secret), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert out.decode().strip() == f"hevc,{W},{H}", err.decode()


async def test_gstreamer_rtspsrc_pulls_with_digest(rtsp_gateway: RunningGateway) -> None:
    gw = rtsp_gateway
    secret = await service_account(gw)
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, str(RTSPSRC_CLIENT), url(gw, "/cameras/cam"), "central", secret, "tcp", "10",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    text = out.decode()
    counted = re.search(r"FRAMES (\d+)", text)
    assert counted and int(counted.group(1)) >= 10, text + err.decode()  # it may decode a few more before it stops
    starts = await audit_entries(gw, action="live.start", user="central")
    assert starts and "GStreamer" in starts[0]["detail"]["user_agent"]


async def rtsp_request(port: int, method: str, uri: str, headers: dict[str, str] | None = None) -> tuple[int, str, list[tuple[str, str]]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {uri} RTSP/1.0", "CSeq: 1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    finally:
        writer.close()
    status_line, *rest = head.strip().split("\r\n")
    fields = [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in rest)]
    return int(status_line.split()[1]), status_line, fields


async def test_no_anonymous_access_sha256_digest_and_wrong_secret(rtsp_gateway: RunningGateway) -> None:
    gw = rtsp_gateway
    secret = await service_account(gw)
    port = gw.app[RTSP_OUT].port
    uri = f"rtsp://127.0.0.1:{port}/cameras/cam"
    status, line, fields = await rtsp_request(port, "DESCRIBE", uri)
    assert status == 401 and line.endswith("Unauthorized")
    challenges = [v for n, v in fields if n == "www-authenticate"]
    assert [re.search(r"algorithm=([\w-]+)", c).group(1) for c in challenges] == ["SHA-256", "MD5"]

    def authorization(password: str, challenge: str) -> str:
        nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)
        creds = DigestCredentials("central", "citygate", nonce, uri, "", "SHA-256", "auth", "00000001", "c0ffee")
        response = expected_response(creds, "DESCRIBE", password)
        return (
            f'Digest username="central", realm="citygate", nonce="{nonce}", uri="{uri}", response="{response}", '
            f'algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c0ffee"'
        )

    status, _, fields = await rtsp_request(port, "DESCRIBE", uri, {"Authorization": authorization(secret, challenges[0])})
    assert status == 200
    assert dict(fields)["content-type"] == "application/sdp"

    status, line, _ = await rtsp_request(port, "DESCRIBE", uri, {"Authorization": authorization("wrong" + secret[5:], challenges[0])})
    assert status == 401 and line.endswith("Unauthorized")
    # and the account's web password is no RTSP password
    status, _, _ = await rtsp_request(port, "DESCRIBE", uri, {"Authorization": authorization(TEST_PASSWORD, challenges[0])})
    assert status == 401
    refused = await audit_entries(gw, action="live.view", outcome="refused", user="central", want=2)
    assert len(refused) == 2
    assert all(r["detail"]["status"] == 401 and r["detail"]["reason"] == "wrong username or secret" for r in refused)
    assert all(r["detail"]["protocol"] == "rtsp" for r in refused)


async def test_ffmpeg_wrong_secret_is_refused_and_audited(rtsp_gateway: RunningGateway) -> None:
    gw = rtsp_gateway
    await service_account(gw)
    rc, out, err = await ffmpeg_frames(url(gw, "/cameras/cam", "central", "not-the-secret"))
    assert rc != 0 and not out
    assert "401 Unauthorized" in err
    refused = await audit_entries(gw, action="live.view", outcome="refused", user="central")
    assert refused and refused[0]["detail"]["reason"] == "wrong username or secret"
    assert await gw.app[AUDIT].query(action="live.start", user="central") == []


async def test_a_camera_outside_the_areas_is_refused_and_audited(rtsp_gateway: RunningGateway) -> None:
    gw = rtsp_gateway
    secret = await service_account(gw)
    rc, out, err = await ffmpeg_frames(url(gw, "/cameras/far", "central", secret))
    assert rc != 0 and not out
    assert "403 Forbidden" in err
    refused = await audit_entries(gw, action="live.view", outcome="refused", user="central", camera="far")
    assert refused and refused[0]["detail"]["status"] == 403 and refused[0]["detail"]["protocol"] == "rtsp"
    assert "area" in refused[0]["detail"]["reason"]


async def test_a_masked_cameras_sub_stream_is_refused_and_its_main_stream_is_masked(rtsp_gateway: RunningGateway) -> None:
    gw = rtsp_gateway
    secret = await service_account(gw)
    rc, out, err = await ffmpeg_frames(url(gw, "/cameras/masked/sub", "central", secret))
    assert rc != 0 and not out and "403 Forbidden" in err
    refused = await audit_entries(gw, action="live.view", outcome="refused", user="central", camera="masked")
    assert refused and "privacy masks" in refused[0]["detail"]["reason"]

    rc, out, err = await ffmpeg_frames(url(gw, "/cameras/masked", "central", secret), frames=5)
    assert rc == 0, err
    inside, outside = region_masks(W, H)
    for i in range(5):
        y = np.frombuffer(out[i * W * H : (i + 1) * W * H], np.uint8).reshape(H, W).astype(np.float32)
        # black (luma 16, 0 once FFmpeg converts to full-range gray) and flat
        assert float(y[inside].mean()) <= 20 and float(y[inside].std()) <= 4, f"frame {i} not masked"
        assert float(y[outside].mean()) > 40, f"frame {i}: the rest of the picture is missing"


async def test_revoking_a_grant_ends_an_ffmpeg_session_within_2s(rtsp_gateway: RunningGateway) -> None:
    gw = rtsp_gateway
    secret = await service_account(gw, "station", role="rescue-station", areas=())
    user = await gw.app[IDENTITY].get_user("station")
    control: AccessControl = gw.app[ACCESS]
    grant = await control.add_grant(
        cameras=["cam"], actions=["live.view"], expires_at=time.time() + 600, reason="flood", by="tester", user_id=user.id
    )
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url(gw, "/cameras/cam", "station", secret),
         "-f", "null", "-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        service = gw.app[RTSP_OUT]
        deadline = time.monotonic() + 20
        while ("cam", "main", "station") not in service.plays():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "ffmpeg never started playing"
            await asyncio.sleep(0.05)
        await control.revoke_grant(grant.id, by="tester")
        start = time.monotonic()
        while service.plays():
            assert time.monotonic() - start < 2.5, "the revoked grant did not end the RTSP session within 2 s"
            await asyncio.sleep(0.05)
        while proc.poll() is None:  # ffmpeg notices the closed connection
            assert time.monotonic() - start < 15, "ffmpeg still running"
            await asyncio.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    revoked = await audit_entries(gw, action="live.revoked", user="station")
    assert revoked and revoked[0]["camera"] == "cam" and revoked[0]["detail"]["kind"] == "rtsp"
    stops = await audit_entries(gw, action="live.stop", user="station")
    assert stops and stops[0]["detail"]["reason"].startswith("access revoked")
    # and a new attempt is refused
    rc, out, err = await ffmpeg_frames(url(gw, "/cameras/cam", "station", secret))
    assert rc != 0 and "403 Forbidden" in err


async def test_disabling_the_account_ends_the_session_and_a_token_works_without_digest(rtsp_gateway: RunningGateway) -> None:
    gw = rtsp_gateway
    await service_account(gw, "relay")
    await gw.sign_in("relay", create=False)  # first password changed, as a service account's keeper does
    token = await gw.api_token("relay")
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url(gw, f"/cameras/cam?token={token}"),
         "-f", "null", "-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        service = gw.app[RTSP_OUT]
        deadline = time.monotonic() + 20
        while ("cam", "main", "relay") not in service.plays():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "ffmpeg never started playing"
            await asyncio.sleep(0.05)
        await gw.app[IDENTITY].set_disabled("relay", True, by="tester")
        start = time.monotonic()
        while service.plays():
            assert time.monotonic() - start < 2.5, "disabling the account did not end the RTSP session within 2 s"
            await asyncio.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    starts = await audit_entries(gw, action="live.start", user="relay")
    assert starts[0]["detail"]["auth"] == "token"
    assert token not in str(starts[0])


def test_digest_nonces_expire_and_md5_is_offered_only_when_allowed() -> None:
    now = [1000.0]
    auth = DigestAuth(b"k" * 32, lifetime=60, clock=lambda: now[0])
    assert [c.split("algorithm=")[1].split(",")[0] for c in auth.challenges()] == ["SHA-256"]
    nonce = auth.nonce()
    assert auth.nonce_state(nonce) == "fresh"
    now[0] += 61
    assert auth.nonce_state(nonce) == "stale"
    assert auth.nonce_state(nonce[:-2] + "AA") == "invalid"
    creds = parse_authorization(
        f'Digest username="u", realm="citygate", nonce="{nonce}", uri="/cameras/x", response="{"0" * 32}", algorithm=MD5'
    )
    assert creds is not None and auth.check(creds, "DESCRIBE", "rtsp://h/cameras/x", "pw").startswith("Digest algorithm MD5")
    fresh = auth.nonce()
    good = DigestCredentials("u", "citygate", fresh, "/cameras/x", "", "SHA-256")
    good = dataclasses.replace(good, response=expected_response(good, "DESCRIBE", "pw"))
    assert auth.check(good, "DESCRIBE", "rtsp://h/cameras/x", "pw") == "ok"
    assert auth.check(good, "PLAY", "rtsp://h/cameras/x", "pw") == "wrong username or secret"
    now[0] += 61
    assert auth.check(good, "DESCRIBE", "rtsp://h/cameras/x", "pw") == "stale"
    assert parse_path("/cameras/a.b/sub") == ("a.b", "sub") and parse_path("/cameras") is None


async def test_rtsps_with_ffmpeg(make_gateway, shared_gst_camera, tmp_path: Path) -> None:
    cert, key = tmp_path / "rtsp.crt", tmp_path / "rtsp.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60,
    )
    toml = f'[rtsp-out]\nenabled = true\nport = {free_port()}\ntls-cert = "{cert}"\ntls-key = "{key}"\nallow-md5 = true\n'
    gw = await make_gateway(camera_toml("cam", "generic_rtsp", url=shared_gst_camera.url("h264")), toml)
    await gw.wait_online("cam")
    secret = await service_account(gw)
    async with gw.session.get(f"{gw.url}/api/cameras/cam/rtsp") as resp:
        urls = await resp.json()
    assert urls["main"] == f"rtsps://127.0.0.1:{gw.app[RTSP_OUT].port}/cameras/cam" and urls["sub"] is None
    source = urls["main"].replace("rtsps://", f"rtsps://central:{secret}@")
    rc, out, err = await ffmpeg_frames(source, frames=3)
    assert rc == 0 and len(out) == 3 * W * H, err
    # plain RTSP on the TLS port gets nowhere
    rc, out, _ = await ffmpeg_frames(url(gw, "/cameras/cam", "central", secret), frames=1, timeout=30)
    assert rc != 0 and not out


async def test_rtsp_clients_count_against_the_live_limits(make_gateway, shared_gst_camera) -> None:
    toml = f"[rtsp-out]\nenabled = true\nport = {free_port()}\nallow-md5 = true\n[live]\nmax-viewers-per-camera = 1\n"
    gw = await make_gateway(camera_toml("cam", "generic_rtsp", url=shared_gst_camera.url("h264")), toml)
    await gw.wait_online("cam")
    secret = await service_account(gw)
    first = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url(gw, "/cameras/cam", "central", secret),
         "-f", "null", "-"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not gw.app[RTSP_OUT].plays():
            assert first.poll() is None and time.monotonic() < deadline, "the first client never played"
            await asyncio.sleep(0.05)
        rc, out, err = await ffmpeg_frames(url(gw, "/cameras/cam", "central", secret), frames=1)
        assert rc != 0 and not out and "503 Service Unavailable" in err
    finally:
        first.kill()
        first.wait()
    refused = await audit_entries(gw, action="live.view", outcome="refused", user="central")
    assert refused and refused[0]["detail"]["status"] == 503 and "maximum of 1 RTSP clients" in refused[0]["detail"]["reason"]
