"""Deny by default, proven over the real HTTP API and real WHEP offers."""

import asyncio
import re
import sqlalchemy as sa
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiohttp import web

from gateway.access.control import AccessControl
from gateway.access.guard import route_access
from gateway.access.policy import Action, load_roles
from gateway.appkeys import ACCESS, AUDIT, DATABASE, IDENTITY
from tests.fixtures_app import camera_toml

ROOT = Path(__file__).parent.parent
ROLES = tomllib.loads((ROOT / "conf" / "roles.toml").read_text())["role"]
SMALL = {"width": 320, "height": 240}

#: Routes that must be reachable without a session, and nothing else.
PUBLIC = {("POST", "/api/session"), ("GET", "/"), ("HEAD", "/"), ("OPTIONS", "/api/cameras/{camera_id}/whep"),
          # the evidence signing key's PUBLIC half: courts fetch it to verify packages
          ("GET", "/api/evidence/public-key"), ("HEAD", "/api/evidence/public-key"),
          # redirect sign-in (OIDC): which providers there are, the way out to one and back
          *((m, p) for m in ("GET", "HEAD") for p in (
              "/api/session/providers", "/api/session/redirect/{provider}", "/api/session/redirect/{provider}/callback"))}


def concrete(path: str) -> str:
    """Fill a route's placeholders with plausible values."""
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: "1" if m.group(2) else "c-centre", path)


@pytest.fixture
async def gw(make_gateway):
    gw = await make_gateway(
        camera_toml("c-centre", "demo", area="centre", **SMALL) + camera_toml("c-north", "demo", area="north", **SMALL)
    )
    await gw.wait_online()
    return gw


async def test_every_route_refuses_anonymous_callers(gw):
    seen_public = set()
    checked = 0
    for route in gw.app.router.routes():
        resource = route.resource
        if isinstance(resource, web.StaticResource):
            continue
        path = resource.canonical
        if route.method == "*":
            continue
        access = route_access(route.handler)
        assert access is not None, f"{route.method} {path} declares no access"
        if access.public:
            seen_public.add((route.method, path))
            continue
        async with gw.anonymous.request(route.method, gw.url + concrete(path)) as resp:
            assert resp.status == 401, f"{route.method} {path} answered {resp.status} without a session"
            if route.method != "HEAD":
                assert (await resp.json())["error"] == "sign in first"
        checked += 1
    assert seen_public == PUBLIC
    assert checked >= 15
    # an unknown API path says nothing either
    async with gw.anonymous.get(gw.url + "/api/no-such-thing") as resp:
        assert resp.status == 401


async def test_a_route_without_a_declaration_is_open_to_no_one(gw):
    async def forgotten(request):
        return web.Response(text="secret")

    # the router is frozen once the app runs; check the guard's verdict on a handler directly
    assert route_access(forgotten) is None


def expected(role: str, action: str, camera_area: str, user_areas=("centre",)) -> bool:
    return action in ROLES[role].get("actions", []) and camera_area in user_areas


async def offer_sdp() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_role_action_area_matrix_over_http_and_whep(gw):
    sessions = {role: await gw.sign_in(f"{role}-user", role=role, areas=("centre",)) for role in ROLES}
    cameras = {"c-centre": "centre", "c-north": "north"}
    mismatches = []

    async def check(role, action, camera, status_ok, resp_status):
        want = expected(role, action, cameras[camera]) if camera else action in ROLES[role].get("actions", [])
        got = resp_status == status_ok
        if resp_status not in (status_ok, 403):
            mismatches.append(f"{role} {action} {camera}: unexpected status {resp_status}")
        elif want != got:
            mismatches.append(f"{role} {action} {camera}: expected {'allowed' if want else 'refused'}, got {resp_status}")

    for role, session in sessions.items():
        for camera in cameras:
            pc, sdp = await offer_sdp()
            async with session.post(
                f"{gw.url}/api/cameras/{camera}/whep", data=sdp, headers={"Content-Type": "application/sdp"}
            ) as resp:
                await check(role, "live.view", camera, 201, resp.status)
                if resp.status == 201:
                    async with session.delete(gw.url + resp.headers["Location"]) as gone:
                        assert gone.status == 204
            await pc.close()
            async with session.get(f"{gw.url}/api/cameras/{camera}/snapshot.jpg") as resp:
                await check(role, "snapshot.view", camera, 200, resp.status)
            async with session.get(f"{gw.url}/api/cameras/{camera}/hls/index.m3u8") as resp:
                await check(role, "live.view", camera, 200, resp.status)
        async with session.get(f"{gw.url}/api/users") as resp:
            await check(role, "users.manage", None, 200, resp.status)
        async with session.get(f"{gw.url}/api/audit?limit=5") as resp:
            await check(role, "audit.read", None, 200, resp.status)
        # the camera list shows exactly what the user may watch
        async with session.get(f"{gw.url}/api/cameras") as resp:
            listed = {c["id"] for c in await resp.json()}
        views = {"live.view", "playback.view", "snapshot.view"} & set(ROLES[role].get("actions", []))
        if listed != ({"c-centre"} if views else set()):
            mismatches.append(f"{role}: camera list {sorted(listed)}")
    assert not mismatches, "\n".join(mismatches)

    # every refusal is in the audit log, with who, what and why
    refused = await gw.app[AUDIT].query(outcome="refused", limit=1000)
    assert any(r["user"] == "rescue-station-user" and r["action"] == "live.view" and r["camera"] == "c-centre" for r in refused)
    assert any(r["user"] == "operator-user" and r["camera"] == "c-north" and "outside" in r["detail"]["reason"] for r in refused)


async def test_policy_matrix_for_every_action(gw):
    """All twelve actions, including those whose routes come with later features."""
    control: AccessControl = gw.app[ACCESS]
    policy = load_roles(ROOT / "conf")
    for role in ROLES:
        user, _ = await gw.app[IDENTITY].create_user(f"p-{role}", role=role, areas=("centre",), password="Tr0ub4dor-and-3-horses")
        from gateway.access.guard import Principal

        who = Principal(user.id, user.username, role, frozenset({"centre"}), False, "x", "cookie", "x")
        for action in Action:
            for camera, area in (("c-centre", "centre"), ("c-north", "north")):
                decision = control.decide(who, action, camera)
                from gateway.access.policy import GLOBAL_ACTIONS

                want = action in ROLES[role].get("actions", []) and (area == "centre" or action in GLOBAL_ACTIONS)
                assert bool(decision) == want, (role, action, camera, decision)
    assert policy.role("rescue-station").actions == frozenset()


async def test_grant_opens_a_camera_and_expiry_or_revocation_closes_it(gw):
    station = await gw.sign_in("station-1", role="rescue-station")
    control: AccessControl = gw.app[ACCESS]
    user = await gw.app[IDENTITY].get_user("station-1")
    pc, sdp = await offer_sdp()
    async with station.post(f"{gw.url}/api/cameras/c-north/whep", data=sdp, headers={"Content-Type": "application/sdp"}) as resp:
        assert resp.status == 403
    grant = await control.add_grant(
        cameras=["c-north"], actions=["live.view"], expires_at=time.time() + 60, reason="flood", by="tester", user_id=user.id
    )
    async with station.post(f"{gw.url}/api/cameras/c-north/whep", data=sdp, headers={"Content-Type": "application/sdp"}) as resp:
        assert resp.status == 201
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(pc.getTransceivers()[0].receiver.track.recv(), 10)
    await control.revoke_grant(grant.id, by="tester")
    start = time.monotonic()
    while pc.connectionState not in ("closed", "failed"):
        assert time.monotonic() - start < 2.5, "revoked grant did not end the view within 2 s"
        await asyncio.sleep(0.05)
    await pc.close()
    async with station.get(f"{gw.url}/api/cameras/c-north/hls/index.m3u8") as resp:
        assert resp.status == 403


async def test_disabling_a_user_ends_their_webrtc_view_and_hls_within_2s(gw):
    police = await gw.sign_in("officer", role="district-police", areas=("centre",))
    pc, sdp = await offer_sdp()
    async with police.post(f"{gw.url}/api/cameras/c-centre/whep", data=sdp, headers={"Content-Type": "application/sdp"}) as resp:
        assert resp.status == 201
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    track = pc.getTransceivers()[0].receiver.track
    await asyncio.wait_for(track.recv(), 10)
    async with police.get(f"{gw.url}/api/cameras/c-centre/hls/index.m3u8") as resp:
        assert resp.status == 200
    async with gw.session.patch(f"{gw.url}/api/users/officer", json={"disabled": True}) as resp:
        assert resp.status == 403  # the operator may not manage users
    admin = await gw.sign_in("root", role="admin", all_areas=True)
    async with admin.patch(f"{gw.url}/api/users/officer", json={"disabled": True}) as resp:
        assert resp.status == 200, await resp.text()
    start = time.monotonic()
    while pc.connectionState not in ("closed", "failed"):
        assert time.monotonic() - start < 2.0, "the disabled user's WebRTC view is still open"
        await asyncio.sleep(0.05)
    async with police.get(f"{gw.url}/api/cameras/c-centre/hls/index.m3u8") as resp:
        assert resp.status == 401
    await pc.close()
    # written once the gateway has closed its side of the view, which may end after ours
    deadline = time.monotonic() + 6
    while not (revoked := await gw.app[AUDIT].query(action="live.revoked", user="officer")) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert revoked and revoked[0]["camera"] == "c-centre"


async def test_losing_the_area_ends_the_view(gw):
    police = await gw.sign_in("officer2", role="district-police", areas=("centre",))
    pc, sdp = await offer_sdp()
    async with police.post(f"{gw.url}/api/cameras/c-centre/whep", data=sdp, headers={"Content-Type": "application/sdp"}) as resp:
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(pc.getTransceivers()[0].receiver.track.recv(), 10)
    await gw.app[IDENTITY].set_areas("officer2", ["north"], False, by="root")
    start = time.monotonic()
    while pc.connectionState not in ("closed", "failed"):
        assert time.monotonic() - start < 2.0
        await asyncio.sleep(0.05)
    await pc.close()


async def test_csrf_is_required_for_cookie_sessions(gw):
    police = await gw.sign_in("officer3", role="district-police", areas=("centre",))
    pc, sdp = await offer_sdp()
    headers = {"Content-Type": "application/sdp", "X-CSRF-Token": "forged"}
    async with police.post(f"{gw.url}/api/cameras/c-centre/whep", data=sdp, headers=headers) as resp:
        assert resp.status == 403 and "X-CSRF-Token" in (await resp.json())["error"]
    await pc.close()


async def test_audit_verify_names_an_edited_row(gw):
    await gw.app[AUDIT].flush()
    ok = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", "--config", str(gw.conf_dir)], capture_output=True, text=True)
    assert ok.returncode == 0 and "audit chain intact" in ok.stdout, ok.stdout + ok.stderr
    async with gw.app[DATABASE].begin() as conn:  # someone with write access to the database
        await conn.execute(sa.text("UPDATE audit SET camera = 'elsewhere' WHERE id = 3"))
    bad = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", "--config", str(gw.conf_dir)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "BROKEN at entry 3: entry 3 was altered" in bad.stdout


async def test_audit_api_filters_and_csv(gw):
    auditor = await gw.sign_in("aud", role="auditor")
    async with gw.session.get(f"{gw.url}/api/cameras/c-centre/snapshot.jpg") as resp:
        assert resp.status == 200
    async with auditor.get(f"{gw.url}/api/audit?action=snapshot&user=tester") as resp:
        body = await resp.json()
    assert body["entries"][0]["camera"] == "c-centre"
    async with auditor.get(f"{gw.url}/api/audit?format=csv&action=login.*") as resp:
        assert resp.content_type == "text/csv"
        text = await resp.text()
    assert text.splitlines()[0].startswith("id,at,user,client,action")
    assert "login.ok" in text
    async with auditor.get(f"{gw.url}/api/audit?from=tomorrow") as resp:
        assert resp.status == 400 and "from must be" in (await resp.json())["error"]


async def test_hls_viewing_is_audited_with_start_and_stop(gw, monkeypatch):
    from gateway.live.hls import HLS_VIEWERS

    gw.app[HLS_VIEWERS].idle = 1.0
    async with gw.session.get(f"{gw.url}/api/cameras/c-centre/hls/index.m3u8") as resp:
        assert resp.status == 200
    async with gw.session.get(f"{gw.url}/api/cameras/c-centre/hls/stream.m3u8") as resp:
        assert resp.status == 200
    assert len(gw.app[HLS_VIEWERS]) == 1  # one view, however many requests
    await asyncio.sleep(3.0)
    assert len(gw.app[HLS_VIEWERS]) == 0
    starts = [r for r in await gw.app[AUDIT].query(action="live.start", user="tester") if r["detail"]["kind"] == "hls"]
    stops = [r for r in await gw.app[AUDIT].query(action="live.stop", user="tester") if r["detail"]["kind"] == "hls"]
    assert len(starts) == 1 and len(stops) == 1 and stops[0]["camera"] == "c-centre", (starts, stops)
    assert stops[0]["detail"]["duration"] >= 0
