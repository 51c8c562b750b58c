"""WebRTC live view through the WHEP endpoint: a real gateway, real cameras, real aiortc viewers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from gateway.live.webrtc import WEBRTC_SESSIONS, restrict_host_candidates
from tests.fixtures_app import RunningGateway, camera_toml

GST_SIZE = (640, 360)
GST_FPS = 25
DEMO_SIZE = (320, 240)
DEMO_FPS = 25

#: A viewer in its own process: connects, prints how many frames it got, then idles until killed.
VIEWER_SCRIPT = """
import asyncio, json, sys

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

async def main(url):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp", "Authorization": "Bearer " + token}) as r:
            answer = await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    track = pc.getTransceivers()[0].receiver.track
    for _ in range(5):
        await asyncio.wait_for(track.recv(), 10)
    print(json.dumps({"frames": 5}), flush=True)
    while True:
        await track.recv()

token = sys.argv[2]
asyncio.run(main(sys.argv[1]))
"""


@dataclass
class Viewer:
    pc: RTCPeerConnection
    track: MediaStreamTrack
    location: str
    answer: str
    posted_at: float
    frames: list = field(default_factory=list)

    async def first_frame(self, timeout: float = 5.0):
        return await asyncio.wait_for(self.track.recv(), timeout)

    async def count_frames(self, seconds: float) -> int:
        """Receive frames for ``seconds``; return how many arrived."""
        deadline = time.monotonic() + seconds
        count = 0
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(self.track.recv(), left)
            except TimeoutError:
                break
            self.frames.append(frame)
            count += 1
        return count


def client_offer_pc(video_codecs: list[str] | None = None) -> RTCPeerConnection:
    """A viewer peer with no ICE servers and a recvonly video transceiver.

    aiortc's default offer lists VP8 before H.264, like most browsers.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("video", direction="recvonly")
    if video_codecs:
        caps = RTCRtpReceiver.getCapabilities("video").codecs
        transceiver.setCodecPreferences(
            [c for name in video_codecs for c in caps if c.mimeType.lower() == f"video/{name}"]
        )
    return pc


async def post_offer(gw: RunningGateway, camera_id: str, sdp: str, content_type: str = "application/sdp"):
    async with gw.session.post(
        f"{gw.url}/api/cameras/{camera_id}/whep", data=sdp.encode(), headers={"Content-Type": content_type}
    ) as resp:
        return resp.status, resp.headers.copy(), await resp.text()


async def connect(
    gw: RunningGateway, camera_id: str, video_codecs: list[str] | None = None, munge: Callable[[str], str] | None = None
) -> Viewer:
    """An aiortc viewer of ``camera_id``; ``munge`` edits the offer on its way (what the peer
    itself would offer otherwise)."""
    pc = client_offer_pc(video_codecs)
    await pc.setLocalDescription(await pc.createOffer())
    posted = time.monotonic()
    offer = pc.localDescription.sdp
    status, headers, body = await post_offer(gw, camera_id, munge(offer) if munge else offer)
    assert status == 201, f"{status} {body}"
    assert headers["Content-Type"].startswith("application/sdp")
    assert headers["Location"].startswith("/api/whep/sessions/")
    assert headers.get("ETag")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    track = pc.getTransceivers()[0].receiver.track
    return Viewer(pc, track, headers["Location"], body, posted)


async def wait_for(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
async def gst_gateway(make_gateway, shared_gst_camera) -> RunningGateway:
    cams = (
        camera_toml("gst", "generic_rtsp", url=shared_gst_camera.url("h264"))
        + camera_toml("gst2", "generic_rtsp", url=shared_gst_camera.url("h264"))
        + camera_toml("gst265", "generic_rtsp", url=shared_gst_camera.url("h265"))
    )
    gw = await make_gateway(cams, "[live]\nmax-viewers-per-camera = 12\nmax-viewers = 14\n")
    await gw.wait_online("gst", "gst2", "gst265")
    return gw


@pytest.fixture
async def demo_gateway(make_gateway) -> RunningGateway:
    pytest.importorskip("citygate_plugins.cameras.demo")
    cams = camera_toml("demo", "demo", width=DEMO_SIZE[0], height=DEMO_SIZE[1], fps=DEMO_FPS, keyframe_interval=1.0)
    gw = await make_gateway(cams, "[live]\nmax-viewers-per-camera = 2\n")
    await gw.wait_online("demo")
    return gw


@pytest.mark.gstreamer
async def test_frames_arrive_from_a_gstreamer_camera(gst_gateway: RunningGateway) -> None:
    viewer = await connect(gst_gateway, "gst")
    try:
        frame = await viewer.first_frame()
        first = time.monotonic() - viewer.posted_at
        assert (frame.width, frame.height) == GST_SIZE
        assert first < 2.0, f"first frame after {first:.2f}s"
        assert "H264" in viewer.answer and "VP8" not in viewer.answer
        # The cached GOP is squeezed (1 ms apart), then live frames advance by the camera's 40 ms.
        await viewer.count_frames(1.5)
        frames = [frame, *viewer.frames]
        steps = [b.pts - a.pts for a, b in zip(frames, frames[1:])]
        burst = 0
        while burst < len(steps) and steps[burst] < 3000:
            burst += 1
        assert all(s % 90 == 0 for s in steps[:burst]), steps
        assert all(3000 <= s <= 7300 for s in steps[burst:]), steps
        assert len(steps) - burst >= 25, steps
        sessions = gst_gateway.app[WEBRTC_SESSIONS]
        assert len(sessions.sessions_for_camera("gst")) == 1
        print(f"first frame {first * 1000:.0f} ms after the offer")
    finally:
        await viewer.pc.close()


async def test_frames_arrive_from_the_demo_camera(demo_gateway: RunningGateway) -> None:
    viewer = await connect(demo_gateway, "demo")
    try:
        frame = await viewer.first_frame()
        assert (frame.width, frame.height) == DEMO_SIZE
        assert time.monotonic() - viewer.posted_at < 2.0
        await viewer.count_frames(0.5)  # past the cached-GOP burst
        frames = await viewer.count_frames(2.0)
        assert frames >= 0.8 * DEMO_FPS * 2.0
    finally:
        await viewer.pc.close()


@pytest.mark.gstreamer
async def test_ten_viewers_get_close_to_full_frame_rate(gst_gateway: RunningGateway) -> None:
    viewers = await asyncio.gather(*(connect(gst_gateway, "gst") for _ in range(10)))
    try:
        await asyncio.gather(*(v.first_frame() for v in viewers))
        await asyncio.gather(*(v.count_frames(0.5) for v in viewers))  # past the cached-GOP burst
        counts = await asyncio.gather(*(v.count_frames(3.0) for v in viewers))
        print("ten viewers, frames in 3 s:", counts)
        assert all(c >= 0.8 * GST_FPS * 3.0 for c in counts), counts
        assert all((v.frames[-1].width, v.frames[-1].height) == GST_SIZE for v in viewers)
    finally:
        await asyncio.gather(*(v.pc.close() for v in viewers))


@pytest.mark.gstreamer
async def test_an_offer_listing_vp8_first_gets_h264(gst_gateway: RunningGateway) -> None:
    viewer = await connect(gst_gateway, "gst", video_codecs=["vp8", "h264"])
    try:
        rtpmaps = [line for line in viewer.answer.splitlines() if line.startswith("a=rtpmap:")]
        assert rtpmaps and all("H264/90000" in line or "rtx/90000" in line for line in rtpmaps), rtpmaps
        frame = await viewer.first_frame()
        assert (frame.width, frame.height) == GST_SIZE
    finally:
        await viewer.pc.close()


@pytest.mark.gstreamer
async def test_delete_ends_the_session_and_unknown_session_is_404(gst_gateway: RunningGateway) -> None:
    gw = gst_gateway
    sessions = gw.app[WEBRTC_SESSIONS]
    viewer = await connect(gw, "gst")
    try:
        await viewer.first_frame()
        async with gw.session.delete(gw.url + viewer.location) as resp:
            assert resp.status == 204
        assert len(sessions) == 0
        # the gateway closed its peer: the viewer's connection ends
        await wait_for(lambda: viewer.pc.connectionState in ("closed", "failed"), 10, "viewer connection closed")
        async with gw.session.delete(gw.url + viewer.location) as resp:
            assert resp.status == 404
            assert "no WebRTC session" in (await resp.json())["error"]
    finally:
        await viewer.pc.close()


@pytest.mark.gstreamer
async def test_a_viewer_that_closes_without_delete_is_cleaned_up(gst_gateway: RunningGateway) -> None:
    sessions = gst_gateway.app[WEBRTC_SESSIONS]
    viewer = await connect(gst_gateway, "gst")
    await viewer.first_frame()
    assert len(sessions) == 1
    await viewer.pc.close()
    took = await wait_for(lambda: len(sessions) == 0, 5, "session of a closed viewer removed")
    print(f"closed viewer cleaned up in {took:.2f}s")


@pytest.mark.gstreamer
async def test_a_viewer_killed_without_a_word_is_cleaned_up(gst_gateway: RunningGateway) -> None:
    """The viewer's process is SIGKILLed: no DELETE, no DTLS alert, no RTCP BYE."""
    sessions = gst_gateway.app[WEBRTC_SESSIONS]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        VIEWER_SCRIPT,
        f"{gst_gateway.url}/api/cameras/gst/whep",
        await gst_gateway.api_token("tester"),
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        report = json.loads(line)
        assert report["frames"] >= 5, report
        assert len(sessions) == 1
        os.kill(proc.pid, signal.SIGKILL)
        took = await wait_for(lambda: len(sessions) == 0, 10, "session of a killed viewer removed")
        print(f"killed viewer cleaned up in {took:.2f}s")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.gstreamer
async def test_a_viewer_that_never_connects_is_dropped(gst_gateway: RunningGateway) -> None:
    sessions = gst_gateway.app[WEBRTC_SESSIONS]
    sessions.connect_timeout = 1.0
    pc = client_offer_pc()
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()  # the offer's candidates now lead nowhere
    status, _, body = await post_offer(gst_gateway, "gst", pc.localDescription.sdp)
    assert status == 201, body
    assert len(sessions) == 1
    await wait_for(lambda: len(sessions) == 0, 5, "session that never connected removed")


async def test_per_camera_viewer_limit_answers_503(demo_gateway: RunningGateway) -> None:
    # demo gateway: 2 viewers per camera
    viewers = [await connect(demo_gateway, "demo") for _ in range(2)]
    try:
        pc = client_offer_pc()
        await pc.setLocalDescription(await pc.createOffer())
        status, _, body = await post_offer(demo_gateway, "demo", pc.localDescription.sdp)
        await pc.close()
        assert status == 503
        assert "maximum of 2 WebRTC viewers" in json.loads(body)["error"]
        assert len(demo_gateway.app[WEBRTC_SESSIONS]) == 2
    finally:
        for v in viewers:
            await v.pc.close()


@pytest.mark.gstreamer
async def test_per_camera_and_global_viewer_limits_answer_503(gst_gateway: RunningGateway) -> None:
    # gst gateway: 12 viewers per camera, 14 in all; offers that are never completed count too
    sessions = gst_gateway.app[WEBRTC_SESSIONS]
    pcs = [client_offer_pc() for _ in range(16)]
    try:
        for pc in pcs:
            await pc.setLocalDescription(await pc.createOffer())
        results = [await post_offer(gst_gateway, "gst", pc.localDescription.sdp) for pc in pcs[:13]]
        assert [r[0] for r in results] == [201] * 12 + [503]
        assert "camera gst already has its maximum of 12" in json.loads(results[-1][2])["error"]
        results = [await post_offer(gst_gateway, "gst2", pc.localDescription.sdp) for pc in pcs[13:]]
        assert [r[0] for r in results] == [201, 201, 503]
        assert "maximum of 14 WebRTC viewers" in json.loads(results[-1][2])["error"]
        assert len(sessions) == 14
        assert len(sessions.sessions_for_camera("gst2")) == 2
    finally:
        await asyncio.gather(*(pc.close() for pc in pcs))
        await sessions.close_all("test over")
    assert len(sessions) == 0


@pytest.mark.gstreamer
async def test_h265_camera_is_refused_with_a_reason(gst_gateway: RunningGateway) -> None:
    pc = client_offer_pc(["h264"])  # a viewer that cannot take H.265 (see test_webrtc_hevc.py)
    await pc.setLocalDescription(await pc.createOffer())
    status, _, body = await post_offer(gst_gateway, "gst265", pc.localDescription.sdp)
    await pc.close()
    assert status == 409
    reason = json.loads(body)["error"]
    assert "H.265" in reason and "H.264 only" in reason
    assert len(gst_gateway.app[WEBRTC_SESSIONS]) == 0


@pytest.mark.gstreamer
async def test_bad_requests(gst_gateway: RunningGateway) -> None:
    gw = gst_gateway
    pc = client_offer_pc()
    await pc.setLocalDescription(await pc.createOffer())
    good = pc.localDescription.sdp
    await pc.close()

    status, _, body = await post_offer(gw, "nope", good)
    assert status == 404 and "nope" in json.loads(body)["error"]

    status, _, body = await post_offer(gw, "gst", good, content_type="application/json")
    assert status == 415 and "application/sdp" in json.loads(body)["error"]

    for sdp, reason in [
        ("this is not SDP", "no video m-line"),
        ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n", "no video m-line"),
        (good.replace("H264", "H263"), "no H.264"),
        ("\n".join(line for line in good.splitlines() if not line.startswith("a=ice-ufrag")), "ICE username fragment"),
        ("\n".join(line for line in good.splitlines() if not line.startswith("a=fingerprint")), "DTLS fingerprint"),
    ]:
        status, _, body = await post_offer(gw, "gst", sdp)
        assert status == 400, (reason, body)
        assert reason in json.loads(body)["error"]

    async with gw.session.post(
        f"{gw.url}/api/cameras/gst/whep", data=b"\xff\xfe\x00garbage", headers={"Content-Type": "application/sdp"}
    ) as resp:
        assert resp.status == 400
        assert "UTF-8" in (await resp.json())["error"]

    async with gw.session.options(f"{gw.url}/api/cameras/gst/whep") as resp:
        assert resp.status == 204
        assert resp.headers["Accept-Post"] == "application/sdp"
    assert len(gw.app[WEBRTC_SESSIONS]) == 0


async def test_offline_camera_answers_503(make_gateway, stalled_camera: str) -> None:
    gw = await make_gateway(camera_toml("dark", "generic_rtsp", url=stalled_camera))
    pc = client_offer_pc()
    await pc.setLocalDescription(await pc.createOffer())
    status, _, body = await post_offer(gw, "dark", pc.localDescription.sdp)
    await pc.close()
    assert status == 503
    assert "no picture" in json.loads(body)["error"]
    assert len(gw.app[WEBRTC_SESSIONS]) == 0


async def test_shutdown_closes_every_peer(make_gateway) -> None:
    pytest.importorskip("citygate_plugins.cameras.demo")
    gw = await make_gateway(camera_toml("demo", "demo", width=DEMO_SIZE[0], height=DEMO_SIZE[1]))
    await gw.wait_online("demo")
    viewer = await connect(gw, "demo")
    try:
        await viewer.first_frame()
        await gw.server.close()
        assert len(gw.app[WEBRTC_SESSIONS]) == 0
        await wait_for(lambda: viewer.pc.connectionState in ("closed", "failed"), 10, "viewer connection closed")
    finally:
        await viewer.pc.close()


@pytest.mark.gstreamer
async def test_ice_interfaces_restrict_the_answer_candidates(make_gateway, shared_gst_camera) -> None:
    probe = client_offer_pc()
    await probe.setLocalDescription(await probe.createOffer())
    await probe.close()
    hosts = [line.split()[4] for line in probe.localDescription.sdp.splitlines() if line.startswith("a=candidate:")]
    ipv4 = [h for h in hosts if ":" not in h]
    if not ipv4:
        pytest.skip(f"no non-loopback IPv4 address to restrict to (host candidates: {hosts})")
    gw = await make_gateway(
        camera_toml("gst", "generic_rtsp", url=shared_gst_camera.url("h264")),
        f'[live]\nice-interfaces = ["{ipv4[0]}"]\n',
    )
    await gw.wait_online("gst")
    viewer = await connect(gw, "gst")
    try:
        answer_hosts = {line.split()[4] for line in viewer.answer.splitlines() if line.startswith("a=candidate:")}
        assert answer_hosts == {ipv4[0]}
        assert f"c=IN IP4 {ipv4[0]}" in viewer.answer
        frame = await viewer.first_frame()
        assert (frame.width, frame.height) == GST_SIZE
    finally:
        await viewer.pc.close()


def test_restrict_host_candidates_keeps_only_allowed_addresses() -> None:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=video 5000 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 10.0.0.5\r\n"
        "a=candidate:1 1 udp 2130706431 10.0.0.5 5000 typ host\r\n"
        "a=candidate:2 1 udp 2130706431 192.0.2.7 5002 typ host\r\n"
        "a=candidate:3 1 udp 2130706431 fd00::7 5004 typ host\r\n"
        "a=candidate:4 1 udp 1694498815 203.0.113.9 6000 typ srflx raddr 10.0.0.5 rport 5000\r\n"
        "a=end-of-candidates\r\n"
    )
    out = restrict_host_candidates(sdp, {"192.0.2.7"})
    candidates = [line for line in out.splitlines() if line.startswith("a=candidate:")]
    assert [c.split()[4] for c in candidates] == ["192.0.2.7", "203.0.113.9"]
    assert "m=video 5002 UDP/TLS/RTP/SAVPF 96" in out and "c=IN IP4 192.0.2.7" in out
    assert "10.0.0.5 5000 typ host" not in out and "a=end-of-candidates" in out
