"""WHEP exhaustion: per-user limits on WebRTC sessions (all, and not yet connected), offers per
minute, offer size and m-lines. Real gateway, real demo camera, real aiortc offers over HTTP;
every refusal has its status, its reason and its audit entry."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway.appkeys import AUDIT
from gateway.live.webrtc import WEBRTC_SESSIONS
from tests.fixtures_app import RunningGateway, camera_toml

LIMITS = """
[live]
max-viewers-per-camera = 50
max-sessions-per-user = 3
max-pending-per-user = 2
max-offers-per-minute = 6
max-offer-bytes = 16384
max-offer-m-lines = 2
connect-timeout = 2.0
"""


@pytest.fixture
async def gw(make_gateway) -> RunningGateway:
    gw = await make_gateway(camera_toml("demo", "demo", width=320, height=240, keyframe_interval=1.0), LIMITS)
    await gw.wait_online("demo")
    return gw


async def real_offer(m_lines: int = 1) -> tuple[RTCPeerConnection, str]:
    """A viewer's peer and its offer (ICE gathered), with ``m_lines`` recvonly video sections."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for _ in range(m_lines):
        pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def post(session, gw: RunningGateway, sdp: str) -> tuple[int, str, str | None]:
    """POST an offer; (status, body, Location)."""
    async with session.post(
        f"{gw.url}/api/cameras/demo/whep", data=sdp.encode(), headers={"Content-Type": "application/sdp"}
    ) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location")


def reason(body: str) -> str:
    return json.loads(body)["error"]


async def refusals(gw: RunningGateway, user: str) -> list[dict]:
    entries = await gw.app[AUDIT].query(action="live.view", outcome="refused", user=user)
    return [e for e in entries if e["detail"].get("kind") == "webrtc"]


async def poll(predicate, what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


async def test_offers_too_large_or_with_too_many_m_lines_are_400_and_audited(gw: RunningGateway) -> None:
    pc, three = await real_offer(m_lines=3)
    await pc.close()
    status, body, _ = await post(gw.session, gw, three)
    assert status == 400 and "too many m-lines: 3, at most 2" in reason(body), body

    pc, good = await real_offer()
    await pc.close()
    padded = good + "".join(f"a=x-padding:{i:04d}{'x' * 60}\r\n" for i in range(300))
    assert len(three.encode()) < 16384 < len(padded.encode())
    status, body, _ = await post(gw.session, gw, padded)
    assert status == 400 and "SDP offer too large" in reason(body) and "at most 16384" in reason(body), body

    entries = await refusals(gw, "tester")
    assert {e["detail"]["status"] for e in entries} == {400}
    assert any("too many m-lines" in e["detail"]["reason"] for e in entries)
    assert any("too large" in e["detail"]["reason"] for e in entries)
    assert all(e["camera"] == "demo" for e in entries)
    assert len(gw.app[WEBRTC_SESSIONS]) == 0


async def test_pending_sessions_per_user_are_limited_and_time_out(gw: RunningGateway) -> None:
    sessions = gw.app[WEBRTC_SESSIONS]
    # Offers whose peers are gone: answered, never connected.
    ghosts = [await real_offer() for _ in range(3)]
    for pc, _ in ghosts:
        await pc.close()
    results = [await post(gw.session, gw, sdp) for _, sdp in ghosts]
    assert [r[0] for r in results] == [201, 201, 429], results
    assert "too many pending WebRTC sessions" in reason(results[2][1])
    assert "at most 2" in reason(results[2][1])
    [entry] = await refusals(gw, "tester")
    assert entry["detail"]["status"] == 429 and "pending" in entry["detail"]["reason"]

    # Someone else is not held up by tester's pending offers.
    other = await gw.sign_in("other-operator", role="operator", all_areas=True)
    pc, sdp = await real_offer()
    status, body, location = await post(other, gw, sdp)
    assert status == 201, body
    async with other.delete(gw.url + location) as resp:
        assert resp.status == 204
    await pc.close()

    # A session that never connects is closed after connect-timeout, and audited as such.
    async def dropped() -> bool:
        return len(sessions) == 0

    await poll(dropped, "pending sessions closed")

    async def audited_stops() -> list[dict]:  # the audit log writes in batches: poll for them
        return [e for e in await gw.app[AUDIT].query(action="live.stop", user="tester") if e["detail"]["kind"] == "webrtc"]

    async def both_stops_audited() -> bool:
        return len(await audited_stops()) >= 2

    await poll(both_stops_audited, "both closed sessions audited")
    stops = await audited_stops()
    assert len(stops) == 2 and all("ICE/DTLS did not complete within 2s" in e["detail"]["reason"] for e in stops)


async def test_concurrent_sessions_per_user_are_limited(gw: RunningGateway) -> None:
    viewers = []
    try:
        for _ in range(3):
            pc, sdp = await real_offer()
            status, body, _ = await post(gw.session, gw, sdp)
            assert status == 201, body
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
            viewers.append(pc)
            await asyncio.wait_for(pc.getTransceivers()[0].receiver.track.recv(), 10)  # connected
        pc, sdp = await real_offer()
        await pc.close()
        status, body, _ = await post(gw.session, gw, sdp)
        assert status == 429, body
        assert "too many concurrent WebRTC sessions: user tester already has 3 (at most 3)" in reason(body)
        [entry] = await refusals(gw, "tester")
        assert entry["detail"]["status"] == 429 and "concurrent" in entry["detail"]["reason"]
        assert len(gw.app[WEBRTC_SESSIONS]) == 3
    finally:
        await asyncio.gather(*(pc.close() for pc in viewers))


async def test_offers_per_minute_are_limited(gw: RunningGateway) -> None:
    for _ in range(6):
        pc, sdp = await real_offer()
        status, body, location = await post(gw.session, gw, sdp)
        await pc.close()
        assert status == 201, body
        async with gw.session.delete(gw.url + location) as resp:
            assert resp.status == 204
    pc, sdp = await real_offer()
    await pc.close()
    status, body, _ = await post(gw.session, gw, sdp)
    assert status == 429, body
    assert "too many WHEP offers: user tester may send 6 per minute; try again in" in reason(body)
    [entry] = await refusals(gw, "tester")
    assert entry["detail"]["status"] == 429 and "per minute" in entry["detail"]["reason"]
    assert len(gw.app[WEBRTC_SESSIONS]) == 0
