"""Emergency pushes over the real API: grants, WHEP and HLS refusals, expiry, the events
channel (WebSocket) with per-user filtering."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from gateway.appkeys import AUDIT, EVENTS, PUSHES
from tests.fixtures_app import RunningGateway, camera_toml

SMALL = {"width": 320, "height": 240, "fps": 10, "keyframe_interval": 1.0}


@pytest.fixture
async def gw(make_gateway) -> RunningGateway:
    gw = await make_gateway(
        camera_toml("c-centre", "demo", area="centre", **SMALL) + camera_toml("c-north", "demo", area="north", **SMALL),
        gateway_toml="[push]\ndefault-minutes = 10\nmax-minutes = 30\n",
    )
    await gw.wait_online()
    return gw


async def whep_status(session: aiohttp.ClientSession, gw: RunningGateway, camera: str) -> int:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with session.post(
            f"{gw.url}/api/cameras/{camera}/whep", data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        ) as resp:
            if resp.status == 201:
                async with session.delete(gw.url + resp.headers["Location"]):
                    pass
            return resp.status
    finally:
        await pc.close()


async def hls_status(session: aiohttp.ClientSession, gw: RunningGateway, camera: str) -> int:
    async with session.get(f"{gw.url}/api/cameras/{camera}/hls/index.m3u8") as resp:
        return resp.status


async def push(session: aiohttp.ClientSession, gw: RunningGateway, **body) -> tuple[int, dict]:
    async with session.post(gw.url + "/api/pushes", json=body) as resp:
        return resp.status, await resp.json()


async def test_push_grants_live_view_until_revoked(gw):
    station = await gw.sign_in("station-a", role="rescue-station")
    other = await gw.sign_in("station-b", role="rescue-station")
    officer = await gw.sign_in("officer", role="duty-officer", areas=("north",))
    await gw.sign_in("someone", role="investigator")

    # A station sees nothing by default; its web client knows it is a station.
    async with station.get(gw.url + "/api/session") as resp:
        assert (await resp.json())["user"]["station"] is True
    async with officer.get(gw.url + "/api/session") as resp:
        assert (await resp.json())["user"]["station"] is False
    assert await whep_status(station, gw, "c-centre") == 403
    assert await hls_status(station, gw, "c-centre") == 403

    # Refusals name what is wrong.
    status, body = await push(officer, gw, cameras=["c-north", "c-centre"], stations=["station-a"], reason="fire")
    assert status == 403 and "c-centre" in body["error"]
    status, body = await push(gw.session, gw, cameras=["c-centre"], stations=["someone"], reason="fire")
    assert status == 400 and "not a station" in body["error"]
    status, body = await push(gw.session, gw, cameras=["c-centre"], stations=["nobody"], reason="fire")
    assert status == 400 and "no station 'nobody'" in body["error"]
    status, body = await push(gw.session, gw, cameras=["nope"], stations=["station-a"], reason="fire")
    assert status == 400 and "no camera 'nope'" in body["error"]
    status, body = await push(gw.session, gw, cameras=["c-centre"], stations=["station-a"], reason="fire", minutes=31)
    assert status == 400 and "minutes" in body["error"]
    status, body = await push(gw.session, gw, cameras=["c-centre"], stations=["station-a"], reason="  ")
    assert status == 400
    status, body = await push(station, gw, cameras=["c-centre"], stations=["station-a"], reason="fire")
    assert status == 403  # stations cannot push

    before = time.time()
    status, created = await push(gw.session, gw, cameras=["c-centre"], stations=["station-a"], reason="Fire at the market")
    assert status == 201, created
    assert created["state"] == "active" and created["created_by"] == "tester"
    assert 10 * 60 - 5 < created["expires_at"] - before < 10 * 60 + 5  # the configured default

    assert await whep_status(station, gw, "c-centre") == 201
    assert await hls_status(station, gw, "c-centre") == 200
    async with station.get(f"{gw.url}/api/cameras/c-centre/snapshot.jpg") as resp:
        assert resp.status == 200
    # ... but not another camera, and not another station.
    assert await whep_status(station, gw, "c-north") == 403
    assert await hls_status(station, gw, "c-north") == 403
    assert await whep_status(other, gw, "c-centre") == 403
    async with station.get(gw.url + "/api/cameras") as resp:
        assert [c["id"] for c in await resp.json()] == ["c-centre"]

    # Listings: senders see all, a station its own active pushes only.
    assert [p["id"] for p in await gw.get_json("/api/pushes?state=active")] == [created["id"]]
    async with officer.get(gw.url + "/api/pushes") as resp:
        assert [p["id"] for p in await resp.json()] == [created["id"]]
    async with station.get(gw.url + "/api/pushes") as resp:
        assert await resp.json() == []
    async with station.get(gw.url + "/api/pushes/mine") as resp:
        mine = (await resp.json())["pushes"]
    assert [(p["id"], p["reason"], p["cameras"]) for p in mine] == [(created["id"], "Fire at the market", ["c-centre"])]
    async with other.get(gw.url + "/api/pushes/mine") as resp:
        assert (await resp.json())["pushes"] == []
    async with gw.session.get(gw.url + "/api/pushes/stations") as resp:
        body = await resp.json()
    assert [s["username"] for s in body["stations"]] == ["station-a", "station-b"]
    assert (body["default_minutes"], body["max_minutes"]) == (10, 30)

    # Extend: more time, within the maximum.
    async with gw.session.post(f"{gw.url}/api/pushes/{created['id']}/extend", json={"minutes": 5}) as resp:
        extended = await resp.json()
        assert resp.status == 200 and abs(extended["expires_at"] - created["expires_at"] - 300) < 1
    async with gw.session.post(f"{gw.url}/api/pushes/{created['id']}/extend", json={"minutes": 20}) as resp:
        assert resp.status == 400 and "at most 30 minutes" in (await resp.json())["error"]

    # The officer may not push c-centre, so may not revoke someone else's push of it.
    async with officer.delete(f"{gw.url}/api/pushes/{created['id']}") as resp:
        assert resp.status == 403
    async with station.delete(f"{gw.url}/api/pushes/{created['id']}") as resp:
        assert resp.status == 404
    async with gw.session.delete(f"{gw.url}/api/pushes/{created['id']}") as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "revoked"
    async with gw.session.delete(f"{gw.url}/api/pushes/{created['id']}") as resp:
        assert resp.status == 409
    assert await whep_status(station, gw, "c-centre") == 403
    assert await hls_status(station, gw, "c-centre") == 403
    assert await gw.get_json("/api/pushes?state=active") == []
    past = await gw.get_json("/api/pushes?state=past")
    assert [(p["id"], p["state"], p["ended_by"]) for p in past] == [(created["id"], "revoked", "tester")]

    audit = gw.app[AUDIT]
    await audit.flush()
    actions = [r["action"] for r in await audit.query(action="push.*", limit=50)]
    assert {"push.create", "push.extend", "push.revoke"} <= set(actions)
    refused = {(r["user"], r["camera"]) for r in await audit.query(action="push.send", outcome="refused")}
    assert refused == {("officer", "c-centre"), ("station-a", None)}


async def test_expiry_ends_the_view_and_refuses_whep_and_hls(gw):
    station = await gw.sign_in("station-a", role="rescue-station")
    status, created = await push(gw.session, gw, cameras=["c-north"], stations=["station-a"], reason="Flood", minutes=0.05)
    assert status == 201, created
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with station.post(
        f"{gw.url}/api/cameras/c-north/whep", data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
    ) as resp:
        assert resp.status == 201
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(pc.getTransceivers()[0].receiver.track.recv(), 10)
    assert await hls_status(station, gw, "c-north") == 200
    # 3 s of push, then at most 2 s until the view is closed.
    deadline = created["expires_at"] + 2.0
    while pc.connectionState not in ("closed", "failed"):
        assert time.time() < deadline, "the expired push's view is still open"
        await asyncio.sleep(0.05)
    await pc.close()
    assert await whep_status(station, gw, "c-north") == 403
    assert await hls_status(station, gw, "c-north") == 403
    past = await gw.get_json("/api/pushes?state=past")
    assert past[0]["id"] == created["id"] and past[0]["state"] == "expired"
    await gw.app[AUDIT].flush()
    assert await gw.app[AUDIT].query(action="push.expire")


# --------------------------------------------------------------------------------------
# the events channel


async def next_message(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0, *, skip_pings: bool = True) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        msg = await asyncio.wait_for(ws.receive(), max(left, 0.01))
        if msg.type != aiohttp.WSMsgType.TEXT:
            return {"type": "closed", "code": ws.close_code, "msg": msg.type}
        data = json.loads(msg.data)
        if skip_pings and data["type"] == "ping":
            continue
        return data


async def next_event(ws, kind: str, timeout: float = 3.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        data = await next_message(ws, max(deadline - asyncio.get_running_loop().time(), 0.01))
        if data["type"] == "event" and data["event"]["kind"] == kind:
            return data["event"]


async def test_events_channel_needs_a_session_and_the_own_origin(gw):
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await gw.anonymous.ws_connect(gw.url + "/api/events")
    assert err.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await gw.session.ws_connect(gw.url + "/api/events", headers={"Origin": "https://evil.example"})
    assert err.value.status == 403
    ws = await gw.session.ws_connect(gw.url + "/api/events", headers={"Origin": gw.url})
    assert (await next_message(ws))["type"] == "state"
    await ws.close()


async def test_a_station_receives_only_its_own_pushes(gw):
    station_a = await gw.sign_in("station-a", role="rescue-station")
    station_b = await gw.sign_in("station-b", role="rescue-station")
    ws_a = await station_a.ws_connect(gw.url + "/api/events")
    ws_b = await station_b.ws_connect(gw.url + "/api/events")
    ws_op = await gw.session.ws_connect(gw.url + "/api/events")
    for ws in (ws_a, ws_b, ws_op):
        state = await next_message(ws)
        assert state["type"] == "state" and state["pushes"] == []

    status, created = await push(gw.session, gw, cameras=["c-centre", "c-north"], stations=["station-a", "station-b"],
                                 reason="Exercise")
    assert status == 201
    first = await next_event(ws_b, "push.created")
    assert first["detail"]["stations"] == ["station-b"]  # the other station is not named
    status, only_a = await push(gw.session, gw, cameras=["c-north"], stations=["station-a"], reason="Gas leak")
    assert status == 201

    event = await next_event(ws_a, "push.created")
    assert event["detail"]["id"] == created["id"]
    event = await next_event(ws_a, "push.created")
    assert event["detail"]["id"] == only_a["id"] and event["detail"]["reason"] == "Gas leak"
    assert event["detail"]["stations"] == ["station-a"] and event["detail"]["cameras"] == ["c-north"]
    op_events = [await next_event(ws_op, "push.created") for _ in range(2)]
    assert [e["detail"]["id"] for e in op_events] == [created["id"], only_a["id"]]
    assert op_events[0]["detail"]["stations"] == ["station-a", "station-b"]

    # station-b hears nothing of the push to station-a, nor of its revocation.
    async with gw.session.delete(f"{gw.url}/api/pushes/{only_a['id']}") as resp:
        assert resp.status == 200
    ended = await next_event(ws_a, "push.revoked")
    assert ended["detail"]["id"] == only_a["id"]
    with pytest.raises(TimeoutError):
        while True:
            data = await next_message(ws_b, 1.0)
            assert data["type"] != "event" or data["event"]["detail"].get("id") != only_a["id"], data

    # A station connecting late is told what is active for it now.
    late = await station_a.ws_connect(gw.url + "/api/events")
    state = await next_message(late)
    assert [p["id"] for p in state["pushes"]] == [created["id"]] and state["pushes"][0]["stations"] == ["station-a"]

    # Camera notices go to those who may view the camera.
    police = await gw.sign_in("officer", role="district-police", areas=("centre",))
    ws_police = await police.ws_connect(gw.url + "/api/events")
    assert (await next_message(ws_police))["type"] == "state"
    gw.app[EVENTS].emit("camera.offline", camera="c-north", error="test: cable cut")
    gw.app[EVENTS].emit("camera.offline", camera="c-centre", error="test: cable cut")
    seen = [await next_event(ws_op, "camera.offline") for _ in range(2)]
    assert [e["camera"] for e in seen] == ["c-north", "c-centre"]
    assert (await next_event(ws_police, "camera.offline"))["camera"] == "c-centre"
    await ws_police.close()

    # Signing out closes the channel.
    async with station_a.delete(gw.url + "/api/session") as resp:
        assert resp.status == 204
    started = time.monotonic()
    closed = await next_message(late, 3.0)
    while closed["type"] == "event":  # the camera notices above (station-a may view both)
        closed = await next_message(late, 3.0)
    assert closed["type"] == "closed" and late.close_code == 4401
    assert time.monotonic() - started < 2.5
    for ws in (ws_a, ws_b, ws_op):
        await ws.close()
    assert gw.app[PUSHES].active_for_station("station-b")[0].id == created["id"]
