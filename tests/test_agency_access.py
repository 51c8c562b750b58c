"""Access requests from other agencies over the real API: refused before approval, live
(WHEP 201 and frames) after it, refused again after expiry or revocation, the view ended
within two seconds; self-approval refused; every step in the access register (JSON, CSV)
and the audit log.

Real parts: a gateway with two demo cameras in two areas, real aiortc WHEP viewers.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from gateway.appkeys import AUDIT, IDENTITY
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_push import whep_status

SMALL = {"width": 160, "height": 120, "fps": 10, "keyframe_interval": 1.0, "pattern": "bars"}
COMMITMENT = "We use these cameras only for the purpose stated and pass nothing on."


@pytest.fixture
async def gw(make_gateway) -> RunningGateway:
    gw = await make_gateway(
        camera_toml("c-centre", "demo", area="centre", **SMALL) + camera_toml("c-north", "demo", area="north", **SMALL),
        gateway_toml=f'[agency-access]\ncommitment = "{COMMITMENT}"\nmax-hours = 48\n',
    )
    await gw.wait_online()
    return gw


async def call(session: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, dict | list]:
    async with session.request(method, url, **kw) as resp:
        return resp.status, await resp.json()


async def file(session: aiohttp.ClientSession, gw: RunningGateway, **body) -> tuple[int, dict]:
    now = time.time()
    body = {"cameras": ["c-centre"], "live": True, "from": now, "to": now + 600, "purpose": "Traffic accident, Nguyen Thai Hoc",
            "commitment": COMMITMENT, **body}
    return await call(session, "POST", gw.url + "/api/access-requests", json=body)


async def open_view(session: aiohttp.ClientSession, gw: RunningGateway, camera: str) -> RTCPeerConnection:
    """A WHEP viewer that got its first frame."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with session.post(
        f"{gw.url}/api/cameras/{camera}/whep", data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
    ) as resp:
        assert resp.status == 201, await resp.text()
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(pc.getTransceivers()[0].receiver.track.recv(), 10)
    return pc


async def wait_closed(pc: RTCPeerConnection, by: float, what: str) -> None:
    """Poll until the view is closed; it must be closed by ``by`` (epoch seconds)."""
    while pc.connectionState not in ("closed", "failed"):
        assert time.time() < by, f"{what}: the agency's view is still open"
        await asyncio.sleep(0.05)
    await pc.close()


async def register_events(gw: RunningGateway, session: aiohttp.ClientSession, request_id: int) -> list[str]:
    status, entries = await call(session, "GET", f"{gw.url}/api/access-requests/register?request={request_id}")
    assert status == 200, entries
    return [e["event"] for e in reversed(entries)]


async def audited(gw: RunningGateway, action: str, **filters) -> list[dict]:
    audit = gw.app[AUDIT]
    await audit.flush()
    return await audit.query(action=action, **filters)


async def test_request_approve_live_then_expiry_ends_the_view(gw: RunningGateway) -> None:
    agency = await gw.sign_in("police-yb", role="agency")
    admin = await gw.sign_in("admin-a", role="admin", all_areas=True)
    north_admin = await gw.sign_in("admin-north", role="admin", areas=("north",))

    # Before any request: nothing.
    assert await whep_status(agency, gw, "c-centre") == 403
    status, body = await call(agency, "GET", gw.url + "/api/access-requests/commitment")
    assert status == 200 and body["commitment"] == COMMITMENT

    # The commitment must be accepted word for word; an operator cannot file at all.
    status, body = await file(agency, gw, commitment="We promise nothing.")
    assert status == 400 and "commitment" in body["error"]
    status, body = await file(gw.session, gw)
    assert status == 403 and "access.request" in body["error"]

    now = time.time()
    status, req = await file(agency, gw, **{"from": now, "to": now + 8})
    assert status == 201, req
    assert req["status"] == "pending" and req["commitment"] == COMMITMENT and req["actions"] == ["live.view", "snapshot.view"]

    # Refused before approval.
    assert await whep_status(agency, gw, "c-centre") == 403
    # The agency cannot approve (no access.request -> approve right); an administrator of
    # another district cannot approve a centre camera.
    status, body = await call(agency, "POST", f"{gw.url}/api/access-requests/{req['id']}/approve", json={"reason": "ok"})
    assert status == 403 and "access.approve" in body["error"]
    status, body = await call(north_admin, "POST", f"{gw.url}/api/access-requests/{req['id']}/approve", json={"reason": "ok"})
    assert status == 403 and "c-centre" in body["error"]

    status, approved = await call(admin, "POST", f"{gw.url}/api/access-requests/{req['id']}/approve", json={"reason": "Police case 17/2026"})
    assert status == 200, approved
    assert approved["status"] == "approved" and approved["decided_by"] == "admin-a" and approved["grant_id"]

    # Live after it: WHEP 201 and frames; only the camera asked for.
    pc = await open_view(agency, gw, "c-centre")
    assert await whep_status(agency, gw, "c-north") == 403
    # The period ends: the view is closed within 2 s, and WHEP is refused again.
    await wait_closed(pc, approved["to"] + 2.0, "expiry")
    assert await whep_status(agency, gw, "c-centre") == 403

    async def expired() -> bool:
        status, body = await call(agency, "GET", f"{gw.url}/api/access-requests/{req['id']}")
        return status == 200 and body["status"] == "expired"

    for _ in range(100):  # bounded: 10 s
        if await expired():
            break
        await asyncio.sleep(0.1)
    assert await expired()

    # Every step in the register and the audit log.
    assert await register_events(gw, admin, req["id"]) == ["filed", "approved", "expired"]
    assert [e["user"] for e in await audited(gw, "agency.filed")] == ["police-yb"]
    assert [e["user"] for e in await audited(gw, "agency.approved")] == ["admin-a"]
    assert [e["user"] for e in await audited(gw, "agency.expired")] == [None]
    refused = {(e["user"], e["camera"]) for e in await audited(gw, "agency.approve", outcome="refused")}
    assert refused == {("admin-north", "c-centre")}
    assert {e["user"] for e in await audited(gw, "agency.file", outcome="refused")} == {"police-yb"}
    grants = await audited(gw, "grant.create", user="admin-a")
    assert grants and grants[0]["detail"]["source"] == f"agency:{req['id']}"
    ended = await audited(gw, "live.revoked", user="police-yb", camera="c-centre")
    assert ended, "the closed view is in the audit log"


async def test_self_approval_refused_revocation_ends_the_view_and_the_register(gw: RunningGateway) -> None:
    agency = await gw.sign_in("transport", role="agency")
    admin = await gw.sign_in("admin-a", role="admin", all_areas=True)
    auditor = await gw.sign_in("aud", role="auditor")

    status, req = await file(agency, gw, cameras=[], areas=["north"], purpose="=HYPERLINK(\"http://x\")")
    assert status == 201 and req["cameras"] == ["c-north"] and req["areas"] == ["north"]

    # The requester becomes an administrator: still may not decide their own request (four eyes, by user id).
    identity = gw.app[IDENTITY]
    await identity.set_role("transport", "admin", by="tester")
    await identity.set_areas("transport", [], True, by="tester")
    status, body = await call(agency, "POST", f"{gw.url}/api/access-requests/{req['id']}/approve", json={"reason": "mine"})
    assert status == 403 and "four eyes" in body["error"]
    refused = await audited(gw, "agency.approve", outcome="refused", user="transport")
    assert refused and "four eyes" in refused[0]["detail"]["reason"]
    await identity.set_role("transport", "agency", by="tester")
    await identity.set_areas("transport", [], False, by="tester")

    status, approved = await call(admin, "POST", f"{gw.url}/api/access-requests/{req['id']}/approve", json={"reason": "ok"})
    assert status == 200 and approved["status"] == "approved"
    pc = await open_view(agency, gw, "c-north")
    status, revoked = await call(admin, "POST", f"{gw.url}/api/access-requests/{req['id']}/revoke", json={"reason": "case closed"})
    assert status == 200 and revoked["status"] == "revoked" and revoked["ended_by"] == "admin-a"
    await wait_closed(pc, time.time() + 2.0, "revocation")
    assert await whep_status(agency, gw, "c-north") == 403
    status, body = await call(admin, "POST", f"{gw.url}/api/access-requests/{req['id']}/revoke", json={"reason": "again"})
    assert status == 409

    # A rejected one.
    status, other = await file(agency, gw, playback=True, live=False)
    assert status == 201 and other["actions"] == ["playback.view"]
    status, rejected = await call(admin, "POST", f"{gw.url}/api/access-requests/{other['id']}/reject", json={"reason": "no legal basis"})
    assert status == 200 and rejected["status"] == "rejected" and rejected["decision_reason"] == "no legal basis"

    # The register: approvers and auditors read it; the agency does not (refusal audited).
    assert await register_events(gw, auditor, req["id"]) == ["filed", "approved", "revoked"]
    assert await register_events(gw, admin, other["id"]) == ["filed", "rejected"]
    status, body = await call(agency, "GET", gw.url + "/api/access-requests/register")
    assert status == 403 and "access register" in body["error"]
    assert await audited(gw, "agency.register", outcome="refused", user="transport")
    # The agency lists its own requests only.
    status, mine = await call(agency, "GET", gw.url + "/api/access-requests")
    assert status == 200 and {r["id"] for r in mine} == {req["id"], other["id"]}

    async with auditor.get(gw.url + "/api/access-requests/register.csv") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [(int(r["request"]), r["event"]) for r in rows] == [
        (other["id"], "rejected"), (other["id"], "filed"), (req["id"], "revoked"), (req["id"], "approved"), (req["id"], "filed"),
    ]
    assert {r["purpose"] for r in rows if int(r["request"]) == req["id"]} == {"'=HYPERLINK(\"http://x\")"}  # neutralised
    assert all(r["commitment"] == COMMITMENT for r in rows)
    assert [e["user"] for e in await audited(gw, "agency.revoked")] == ["admin-a"]
    assert [e["user"] for e in await audited(gw, "agency.rejected")] == ["admin-a"]
    assert await audited(gw, "grant.revoke", user="admin-a")
