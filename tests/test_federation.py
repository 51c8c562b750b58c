"""Federation: a central Citygate adds a district Citygate's camera with the ``citygate``
vendor. Two real gateways in this process: the central one pulls the district's RTSP
re-stream with a service account's token, serves it over WHEP, forwards PTZ in the name of
its user, and the district's audit log names that user; ``citygate cameras discover``
lists what the token may see."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import tomllib

from gateway.appkeys import AUDIT, IDENTITY
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml
from tests.fixtures_cameras import free_port
from tests.test_webrtc import connect

SIZE = (320, 240)


async def district_and_central(make_gateway) -> tuple[RunningGateway, RunningGateway, str]:
    market = camera_toml("market", "demo", area="d1", width=SIZE[0], height=SIZE[1], fps=10, keyframe_interval=1.0)
    market = market.replace("[camera.options]", 'owner = "District 1"\nlocation = [21.0285, 105.8542]\n[camera.options]')
    district = await make_gateway(
        market
        + camera_toml("depot", "demo", area="d2", width=SIZE[0], height=SIZE[1], fps=5, pattern="bars"),
        f"[rtsp-out]\nenabled = true\nport = {free_port()}\n[ptz]\nlock-idle-seconds = 1\n",
    )
    await district.app[IDENTITY].create_user("central", role="central-system", areas=("d1",), password=TEST_PASSWORD)
    await district.sign_in("central", create=False)  # its keeper sets the first password
    token = await district.api_token("central")
    central = await make_gateway(
        camera_toml("d1-market", "citygate", area="district-1", base_url=district.url, token=token, camera="market", node="central")
    )
    return district, central, token


async def test_a_remote_camera_plays_over_whep_and_ptz_names_the_central_user(make_gateway) -> None:
    district, central, token = await district_and_central(make_gateway)
    await central.wait_online("d1-market", timeout=30)
    viewer = await connect(central, "d1-market")
    try:
        frame = await viewer.first_frame(timeout=15)
        assert (frame.width, frame.height) == SIZE
    finally:
        await viewer.pc.close()
    # the district saw the central gateway's service account pull its re-stream
    pulls = await district.app[AUDIT].query(action="live.start", user="central", camera="market")
    assert pulls and pulls[0]["detail"]["protocol"] == "rtsp" and pulls[0]["detail"]["auth"] == "token"

    alice = await central.sign_in("alice", role="operator", areas=("district-1",))
    async with alice.post(f"{central.url}/api/cameras/d1-market/ptz/move", json={"pan": 0.5}) as resp:
        assert resp.status == 200, await resp.text()
    async with alice.post(f"{central.url}/api/cameras/d1-market/ptz/stop") as resp:
        assert resp.status == 200, await resp.text()
    # the district's control session (held by the service account) lapses and is audited
    deadline = time.monotonic() + 15
    while not (entries := await district.app[AUDIT].query(action="ptz.control", user="central")):
        assert time.monotonic() < deadline, "the district never audited the PTZ session"
        await asyncio.sleep(0.1)
    assert entries[0]["camera"] == "market" and entries[0]["outcome"] == "ok"
    assert entries[0]["detail"]["on_behalf_of"] == "central:alice via central"
    assert entries[0]["detail"]["commands"] == 2


async def test_the_on_behalf_header_counts_only_from_federation_relay_accounts(make_gateway) -> None:
    district, _, token = await district_and_central(make_gateway)
    await district.wait_online("market")
    operator_token = await district.api_token("tester")
    spoof = {"X-Citygate-On-Behalf-Of": "mallory@elsewhere"}
    # the service account (federation.relay) outside its areas: refused, the central user named
    headers = {"Authorization": f"Bearer {token}", **spoof}
    async with district.anonymous.post(f"{district.url}/api/cameras/depot/ptz/move", json={"pan": 0.2}, headers=headers) as resp:
        assert resp.status == 403
    refused = await district.app[AUDIT].query(action="ptz.control", outcome="refused", user="central")
    assert refused and refused[0]["detail"]["on_behalf_of"] == "central:mallory via elsewhere"
    # an operator's account may not speak for anyone: the header is ignored
    headers = {"Authorization": f"Bearer {operator_token}", **spoof}
    async with district.anonymous.post(f"{district.url}/api/cameras/market/ptz/move", json={"pan": 0.2}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    deadline = time.monotonic() + 15
    while not (entries := await district.app[AUDIT].query(action="ptz.control", user="tester")):
        assert time.monotonic() < deadline, "the operator's PTZ session was never audited"
        await asyncio.sleep(0.1)
    assert "on_behalf_of" not in entries[0]["detail"]


async def test_cameras_discover_prints_the_tables_the_token_may_see(make_gateway) -> None:
    district, _, token = await district_and_central(make_gateway)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "cameras", "discover", "--url", district.url, "--token-env", "D1_TOKEN",
        "--prefix", "d1-", "--node", "central",
        env={**os.environ, "D1_TOKEN": token}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert 'id = "d1-market"' in text and 'camera = "market"' in text and 'area = "d1"' in text
    assert 'token-env = "D1_TOKEN"' in text and token not in text
    assert 'owner = "District 1"' in text and "location = [21.0285, 105.8542]" in text
    assert "depot" not in text  # outside the service account's areas
    (table,) = tomllib.loads(text)["camera"]
    assert table["vendor"] == "citygate" and table["options"]["base-url"] == district.url
