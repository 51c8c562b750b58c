"""Presets approached at a speed (patrol tours' steps): the demo dome glides there instead of
jumping, reporting that it moves until it arrives (so scene masks sweep the path), and the
ONVIF vendor sends GotoPreset with a Speed in the generic speed space."""

from __future__ import annotations

import types

import pytest

from citygate_plugins.cameras.onvif import OnvifCamera, OnvifOptions
from citygate_plugins.cameras.virtual_ptz import PAN_SPEED, VirtualHead
from tests.onvif_simulator import OnvifSimulator


def test_the_demo_dome_glides_to_a_preset_at_the_asked_speed() -> None:
    now = [100.0]
    head = VirtualHead(clock=lambda: now[0])
    token = head.set_preset("Gate")  # at home: pan 0
    head.absolute_move(-0.5, 0.0, 0.5)
    assert head.goto_preset(token, speed=0.5)
    assert head.moving
    now[0] += 1.0  # half speed: PAN_SPEED / 2 generic units a second
    pan, _, _ = head.position()
    assert pan == pytest.approx(-0.5 + PAN_SPEED / 2)
    assert head.moving
    now[0] += 10.0
    assert head.position() == pytest.approx((0.0, 0.0, 0.5))
    assert not head.moving  # arrived: still again
    assert head.goto_preset(token)  # no speed: at once, as before
    assert not head.moving


async def test_onvif_goto_preset_sends_the_speed() -> None:
    async with OnvifSimulator("citygate", "dome-s3cret") as sim:
        options = OnvifOptions(host="127.0.0.1", port=sim.port, username="citygate", password="dome-s3cret")
        async with OnvifCamera(types.SimpleNamespace(id="dome"), options) as cam:
            await cam.ptz_goto_preset("1", speed=0.25)
            speed = sim.last("GotoPreset").body.find("{*}Speed")
            assert speed is not None
            assert float(speed.find("{*}PanTilt").get("x")) == pytest.approx(0.25)
            assert float(speed.find("{*}Zoom").get("x")) == pytest.approx(0.25)
            await cam.ptz_goto_preset("2")
            assert sim.last("GotoPreset").body.find("{*}Speed") is None
