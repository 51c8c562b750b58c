"""Camera health over the API, with real GStreamer cameras: frozen picture, offline and gaps."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.appkeys import AUDIT
from tests.fixtures_app import RunningGateway, camera_toml

FAST_HEALTH = """
[health]
sample-seconds = 0.5
frozen-check-seconds = 0.5
frozen-seconds = 3
"""


class Hooks:
    """A webhook receiver on loopback: the bodies it was sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.events.append(json.loads(await request.read()))
        return web.Response(text="ok")


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    receiver = Hooks()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    receiver.url = str(server.make_url("/hook"))
    try:
        yield receiver
    finally:
        await server.close()


async def poll(fetch: Callable[[], Any], until: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if until(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {value}"
        await asyncio.sleep(0.2)


def by_id(report: list[dict]) -> dict[str, dict]:
    return {c["id"]: c for c in report}


async def test_a_frozen_picture_raises_the_frozen_alarm_and_a_webhook(make_gateway, shared_gst_camera, hooks) -> None:
    cams = camera_toml("still", "generic_rtsp", url=shared_gst_camera.url("pattern")) + camera_toml(
        "moving", "generic_rtsp", url=shared_gst_camera.url("h264")
    )
    gw = await make_gateway(cams, FAST_HEALTH + f'[[events.webhooks]]\nurl = "{hooks.url}"\nsecret = "s"\nkinds = ["camera.alarm*"]\n')
    await gw.wait_online("still", "moving")

    report = await poll(
        lambda: gw.get_json("/api/health/cameras"),
        lambda r: any(a["kind"] == "frozen" for a in by_id(r)["still"]["alarms"]),
        20, "the frozen alarm",
    )
    still, moving = by_id(report)["still"], by_id(report)["moving"]
    frozen = next(a for a in still["alarms"] if a["kind"] == "frozen")
    assert frozen["detail"].startswith("the same picture for ")
    assert still["frozen_for"] >= 3
    # the moving picture is never frozen; the worst camera comes first
    assert not any(a["kind"] == "frozen" for a in moving["alarms"])
    assert moving["frozen_for"] < 3
    assert report[0]["id"] == "still"
    assert still["state"] == "online" and 0 < still["uptime_24h"] <= 1.0 and still["fps"] > 0
    assert still["keyframe_interval"] is not None and 0.5 <= still["keyframe_interval"] <= 3

    # the alarm is an event for the webhooks
    await poll(lambda: asyncio.sleep(0, hooks.events), lambda e: any(x["kind"] == "camera.alarm" for x in e), 10, "the webhook")
    event = next(x for x in hooks.events if x["kind"] == "camera.alarm")
    assert event["camera"] == "still" and event["detail"]["alarm"] == "frozen"

    # one camera, with its history
    one = await gw.get_json("/api/health/cameras/moving")
    assert len(one["history"]) >= 2 and all(len(s) == 3 for s in one["history"])
    assert any(s[1] > 0 and s[2] > 0 for s in one["history"])


async def test_a_killed_camera_shows_offline_and_its_gap(make_gateway, gst_camera) -> None:
    gw = await make_gateway(
        camera_toml("gone", "generic_rtsp", area="north", url=gst_camera.url("h264")),
        FAST_HEALTH + "[recording]\nsegment-seconds = 1\n",
    )
    await gw.wait_online("gone")
    await poll(
        lambda: gw.get_json("/api/health/cameras/gone"), lambda h: h["last_segment_end"] is not None, 15, "a recorded segment"
    )
    gst_camera.kill()
    # the recorder stores its last part after 5 s without packets; the gap then follows it
    health = await poll(
        lambda: gw.get_json("/api/health/cameras/gone"),
        lambda h: h["state"] == "offline" and h["gaps_24h"] and h["gaps_24h"][-1]["end"] - h["gaps_24h"][-1]["start"] >= 6,
        30, "offline with a gap",
    )
    assert [a["kind"] for a in health["alarms"]] == ["offline"]
    assert health["uptime_24h"] is not None and health["uptime_24h"] < 1.0
    gap = health["gaps_24h"][-1]
    assert gap["start"] >= health["last_segment_end"] - 0.5 and gap["end"] <= time.time() + 1

    # a user of another district is refused the camera's health, audited with the reason
    other = await gw.sign_in("sud", role="operator", areas=("south",))
    async with other.get(gw.url + "/api/health/cameras/gone") as resp:
        assert resp.status == 403
        reason = (await resp.json())["error"]
    assert "north" in reason or "area" in reason
    async with other.get(gw.url + "/api/health/cameras") as resp:
        assert resp.status == 200 and await resp.json() == []
    audit = gw.app[AUDIT]
    await audit.flush()
    (entry,) = await audit.query(user="sud", action="camera.health")
    assert entry["outcome"] == "refused" and entry["camera"] == "gone" and entry["detail"]["reason"] == reason
