"""Audit entries written in the background (live.start and live.stop of WebRTC and HLS views)
are kept until written: a gateway stopped right after a view starts or ends still has them in
its database, before its ``gateway.stop`` entry (so the last signed checkpoint covers them)."""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway.access.audit import AuditLog
from gateway.appkeys import CONFIG
from gateway.db import Database
from gateway.live import webrtc
from tests.fixtures_app import RunningGateway, camera_toml

DEMO = camera_toml("demo", "demo", width=320, height=240, keyframe_interval=1.0)


async def entries_after_stop(gw: RunningGateway) -> list[dict]:
    """Stop the gateway, then read its audit log from the database, oldest first."""
    await gw.server.close()
    async with Database(gw.app[CONFIG].database_url) as db:
        rows = await AuditLog(db).query(limit=10_000)
    return list(reversed(rows))


def position(rows: list[dict], action: str, **detail: object) -> int:
    found = [
        i for i, r in enumerate(rows)
        if r["action"] == action and all(r["detail"].get(k) == v for k, v in detail.items())
    ]
    assert len(found) == 1, (action, detail, [(r["action"], r["detail"]) for r in rows])
    return found[0]


class SlowClosingPeer(RTCPeerConnection):
    """The gateway's peer, taking half a second to close (DTLS/ICE teardown to a peer that
    went away; the gateway allows it 5 s): the close outlasts the shutdown that starts
    meanwhile, so only a close kept track of gets its ``live.stop`` written."""

    async def close(self) -> None:
        await asyncio.sleep(0.5)
        await super().close()


async def test_webrtc_view_ended_by_the_viewer_just_before_stop_is_audited(make_gateway, monkeypatch) -> None:
    monkeypatch.setattr(webrtc, "RTCPeerConnection", SlowClosingPeer)
    gw = await make_gateway(DEMO)
    await gw.wait_online("demo")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with gw.session.post(
        f"{gw.url}/api/cameras/demo/whep", data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
    ) as resp:
        assert resp.status == 201, await resp.text()
        session_id = resp.headers["Location"].rsplit("/", 1)[1]
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(pc.getTransceivers()[0].receiver.track.recv(), 10)
    await pc.close()  # the viewer leaves (a closed browser tab) ...
    sessions = gw.app[webrtc.WEBRTC_SESSIONS]
    deadline = asyncio.get_running_loop().time() + 10
    while len(sessions):  # ... the gateway notices and starts closing its side ...
        assert asyncio.get_running_loop().time() < deadline, "the gateway did not notice the viewer leave"
        await asyncio.sleep(0.01)
    # ... and is stopped meanwhile
    rows = await entries_after_stop(gw)
    start = position(rows, "live.start", kind="webrtc", session=session_id)
    stop = position(rows, "live.stop", kind="webrtc", session=session_id)
    end = position(rows, "gateway.stop")
    assert start < stop < end
    assert rows[start]["user"] == rows[stop]["user"] == "tester" and rows[stop]["camera"] == "demo"


async def test_webrtc_views_closed_by_shutdown_are_audited(make_gateway) -> None:
    gw = await make_gateway(DEMO)
    await gw.wait_online("demo")
    pcs, ids = [], []
    for _ in range(3):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with gw.session.post(
            f"{gw.url}/api/cameras/demo/whep", data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        ) as resp:
            assert resp.status == 201, await resp.text()
            ids.append(resp.headers["Location"].rsplit("/", 1)[1])
        pcs.append(pc)
    try:
        rows = await entries_after_stop(gw)  # right after the offers: the views are still connecting
    finally:
        await asyncio.gather(*(pc.close() for pc in pcs))
    end = position(rows, "gateway.stop")
    for session_id in ids:
        stop = position(rows, "live.stop", kind="webrtc", session=session_id)
        assert rows[stop]["detail"]["reason"] == "gateway shutting down"
        assert position(rows, "live.start", kind="webrtc", session=session_id) < stop < end


async def test_hls_view_started_just_before_stop_is_audited(make_gateway) -> None:
    gw = await make_gateway(DEMO)
    await gw.wait_online("demo")
    async with gw.session.get(f"{gw.url}/api/cameras/demo/hls/index.m3u8") as resp:
        assert resp.status == 200, await resp.text()
    rows = await entries_after_stop(gw)
    start = position(rows, "live.start", kind="hls")
    stop = position(rows, "live.stop", kind="hls")
    assert start < stop < position(rows, "gateway.stop")
    assert rows[stop]["detail"]["reason"] == "gateway shutting down" and rows[start]["camera"] == "demo"
