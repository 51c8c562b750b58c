"""ONVIF PTZ GetStatus: the position the scene-anchored privacy masks are placed from, read
from the device simulator on loopback; a device without GetStatus reports no position."""

from __future__ import annotations

import types

from citygate_plugins.cameras.onvif import OnvifCamera, OnvifOptions
from gateway.interfaces import PtzStatus
from tests.onvif_simulator import OnvifSimulator

USER, PASSWORD = "citygate", "dome-s3cret"


async def test_get_status_reports_position_and_movement() -> None:
    async with OnvifSimulator(USER, PASSWORD) as sim:
        options = OnvifOptions(host="127.0.0.1", port=sim.port, username=USER, password=PASSWORD)
        async with OnvifCamera(types.SimpleNamespace(id="dome"), options) as cam:
            await cam.ptz_absolute_move(0.25, -0.5, 0.75)
            assert await cam.ptz_status() == PtzStatus(0.25, -0.5, 0.75, moving=False)
            await cam.ptz_continuous_move(0.5, 0.0, 0.0)
            status = await cam.ptz_status()
            assert status is not None and status.moving
            await cam.ptz_stop()
            status = await cam.ptz_status()
            assert status is not None and not status.moving
    request = sim.last("GetStatus")
    assert request.service == "ptz" and request.authenticated
    assert request.body.findtext("{*}ProfileToken") == "Profile_1"


async def test_a_device_without_get_status_reports_no_position() -> None:
    async with OnvifSimulator(USER, PASSWORD) as sim:
        sim.state.reports_status = False
        options = OnvifOptions(host="127.0.0.1", port=sim.port, username=USER, password=PASSWORD)
        async with OnvifCamera(types.SimpleNamespace(id="dome"), options) as cam:
            assert cam.ptz_capabilities().any or await cam.stream_url()
            assert await cam.ptz_status() is None
    assert sim.last("GetStatus").fault is not None
