"""The ONVIF plugin against a device simulator on loopback (no real ONVIF device is reachable
here): discovery of the stream URI, authenticated and well-formed PTZ requests, and a clear
error when the device refuses the credentials."""

from __future__ import annotations

import base64
import types

import pytest

from citygate_plugins.cameras.demo import DemoCamera, DemoOptions
from citygate_plugins.cameras.onvif import OnvifAuthError, OnvifCamera, OnvifOptions, password_digest
from tests.fixtures_app import camera_toml
from tests.onvif_simulator import OnvifSimulator

USER, PASSWORD = "citygate", "dome-s3cret"


def test_password_digest_matches_the_onvif_programmers_guide_example() -> None:
    nonce = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    assert password_digest(nonce, "2010-09-16T07:50:45Z", "userpassword") == "tuOSpGlFlIXsozq4HFNeeGeFLEI="


async def test_discovery_follows_the_device_clock_and_finds_both_streams() -> None:
    # The device's clock is two hours ahead: digests stamped with our clock would be refused.
    async with OnvifSimulator(USER, PASSWORD, clock_offset=7200) as sim:
        options = OnvifOptions(host="127.0.0.1", port=sim.port, username=USER, password=PASSWORD)
        async with OnvifCamera(types.SimpleNamespace(id="dome"), options) as cam:
            main = await cam.stream_url()
            sub = await cam.stream_url(cam.profiles()[1])
    assert main == f"rtsp://{USER}:{PASSWORD}@127.0.0.1:554/Streaming/Channels/101"
    assert sub.endswith("/Streaming/Channels/102")
    assert sim.operations()[:3] == ["GetSystemDateAndTime", "GetCapabilities", "GetProfiles"]
    assert all(r.authenticated for r in sim.requests[1:]), [(r.operation, r.fault) for r in sim.requests]
    uri = sim.last("GetStreamUri")
    assert uri.service == "media" and uri.body.findtext("{*}ProfileToken") == "Profile_2"


async def test_a_wrong_password_is_refused_by_the_device_and_reported_clearly() -> None:
    async with OnvifSimulator(USER, PASSWORD) as sim:
        options = OnvifOptions(host="127.0.0.1", port=sim.port, username=USER, password="wrong")
        async with OnvifCamera(types.SimpleNamespace(id="dome"), options) as cam:
            with pytest.raises(OnvifAuthError, match="refused the credentials of user 'citygate'.*check username and password"):
                await cam.stream_url()
            assert cam.ptz_capabilities().any is False
    refused = [r for r in sim.requests if r.operation != "GetSystemDateAndTime"]
    assert refused and all(not r.authenticated and r.fault == "wrong username or password digest" for r in refused)


@pytest.fixture
async def demo_rtsp():
    """A real RTSP camera for the simulator to point at."""
    cam = DemoCamera(types.SimpleNamespace(id="behind-onvif", name="Behind ONVIF"), DemoOptions(width=320, height=240, pattern="bars"))
    async with cam:
        yield await cam.stream_url()


async def test_an_onvif_camera_through_the_gateway(make_gateway, demo_rtsp, monkeypatch) -> None:
    monkeypatch.setenv("DOME_PASSWORD", PASSWORD)
    async with OnvifSimulator(USER, PASSWORD, stream_uri=demo_rtsp) as sim, OnvifSimulator(USER, "other") as other:
        cams = camera_toml("dome", "onvif", host="127.0.0.1", port=sim.port, username=USER, password_env="DOME_PASSWORD")
        cams += camera_toml("locked-out", "onvif", host="127.0.0.1", port=other.port, username=USER, password="nope")
        gw = await make_gateway(cams)
        await gw.wait_online("dome")  # only host and credentials configured: the URI came from the device
        camera = await gw.get_json("/api/cameras/dome")
        assert (camera["width"], camera["height"]) == (320, 240)
        assert camera["ptz"] == {"continuous": True, "absolute": True, "relative": True, "presets": True, "home": True}

        async def post(path: str, json: dict | None = None) -> tuple[int, dict]:
            async with gw.session.post(f"{gw.url}/api/cameras/{path}", json=json) as resp:
                return resp.status, await resp.json()

        assert (await post("dome/ptz/move", {"pan": 0.5, "tilt": -0.25}))[0] == 200
        move = sim.last("ContinuousMove")
        assert move.service == "ptz" and move.authenticated and move.username == USER
        assert move.body.findtext("{*}ProfileToken") == "Profile_1"
        pan_tilt = move.body.find("{*}Velocity/{*}PanTilt")
        assert (float(pan_tilt.get("x")), float(pan_tilt.get("y"))) == (0.5, -0.25)
        assert sim.state.velocity == (0.5, -0.25, 0.0)
        assert (await post("dome/ptz/stop"))[0] == 200
        assert sim.state.velocity is None and sim.last("Stop").body.findtext("{*}PanTilt") == "true"
        assert (await post("dome/ptz/absolute", {"pan": -0.5, "tilt": 0.1, "zoom": 0.75}))[0] == 200
        assert (sim.state.pan, sim.state.tilt, sim.state.zoom) == (-0.5, 0.1, 0.75)
        async with gw.session.get(f"{gw.url}/api/cameras/dome/ptz/presets") as resp:
            assert [p["name"] for p in await resp.json()] == ["Main entrance", "Parking"]
        assert (await post("dome/ptz/presets/2/go"))[0] == 200
        assert sim.last("GotoPreset").body.findtext("{*}PresetToken") == "2"
        assert (await post("dome/ptz/home"))[0] == 200
        ptz_requests = [r for r in sim.requests if r.service == "ptz"]
        assert ptz_requests and all(r.authenticated for r in ptz_requests)

        # The camera whose password is wrong: offline, saying why.
        locked = await gw.get_json("/api/cameras/locked-out")
        assert locked["state"] != "online" and "refused the credentials" in (locked["last_error"] or "")
        status, body = await post("locked-out/ptz/move", {"pan": 0.5})
        assert status == 400 and "does not support" in body["error"]
