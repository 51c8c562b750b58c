"""``GET /metrics``: a Prometheus scraper with a service account's API token reads the state
of cameras, live viewers, recording and the audit chain; everyone else is refused.

Real parts: a gateway recording a live demo camera, a camera whose RTSP port nobody
listens on, an aiortc viewer, and prometheus_client's own parser reading the exposition.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.appkeys import AUDIT
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml
from tests.fixtures_cameras import free_port
from tests.test_webrtc import connect

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(gw: RunningGateway, token: str) -> Samples:
    async with aiohttp.ClientSession() as http, http.get(
        gw.url + "/metrics", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=")  # the exposition format
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def api_token(gw: RunningGateway, username: str, role: str) -> str:
    await gw.sign_in(username, role=role)
    async with aiohttp.ClientSession() as http, http.post(
        gw.url + "/api/session", json={"username": username, "password": TEST_PASSWORD, "kind": "token", "name": "prometheus"}
    ) as resp:
        assert resp.status == 201, await resp.text()
        return (await resp.json())["token"]


async def test_a_scraper_reads_cameras_viewers_recording_and_audit(make_gateway) -> None:
    cams = camera_toml("d1", "demo", width=320, height=240, pattern="bars")
    cams += camera_toml("dead", "generic_rtsp", area="north", url=f"rtsp://127.0.0.1:{free_port()}/nothing")
    gw = await make_gateway(cams, "[recording]\nsegment-seconds = 1\n")
    await gw.wait_online("d1")
    token = await api_token(gw, "prom", "monitoring")

    first = await scrape(gw, token)
    assert value(first, "citygate_camera_up", camera="d1", area="centre", vendor="demo") == 1
    assert value(first, "citygate_camera_up", camera="dead", area="north", vendor="generic_rtsp") == 0
    assert value(first, "citygate_live_viewers", camera="d1", transport="webrtc") == 0
    assert value(first, "citygate_camera_frames_total", camera="d1") > 0
    assert value(first, "citygate_audit_entries") > 0

    viewer = await connect(gw, "d1")
    try:
        await viewer.first_frame(timeout=10)
        deadline = time.monotonic() + 15
        while True:
            later = await scrape(gw, token)
            if value(later, "citygate_recording_segments_total", camera="d1") >= 2 and \
                    value(later, "citygate_camera_reconnects_total", camera="dead") >= 1:
                break
            assert time.monotonic() < deadline, later
            await asyncio.sleep(0.5)
    finally:
        await viewer.pc.close()
    assert value(later, "citygate_live_viewers", camera="d1", transport="webrtc") == 1
    assert value(later, "citygate_live_viewers", camera="dead", transport="webrtc") == 0
    assert value(later, "citygate_camera_frames_total", camera="d1") > value(first, "citygate_camera_frames_total", camera="d1")
    assert value(later, "citygate_camera_received_bytes_total", camera="d1") > 0
    assert value(later, "citygate_recording_bytes_total", camera="d1") > 0
    assert abs(value(later, "citygate_recording_last_segment_end_timestamp_seconds", camera="d1") - time.time()) < 10
    assert value(later, "citygate_storage_used_bytes") >= value(later, "citygate_recording_bytes_total", camera="d1")
    assert value(later, "citygate_camera_fps", camera="d1") > 10
    assert value(later, "citygate_camera_bitrate_bits_per_second", camera="d1") > 0
    # The audit chain's length: what the scraper's alert on unsigned entries compares with.
    newest = await gw.app[AUDIT].query(limit=1)
    assert value(later, "citygate_audit_entries") >= newest[0]["id"]


async def test_metrics_are_refused_without_system_monitor(make_gateway) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", width=320, height=240, pattern="bars"))
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as resp:
        assert resp.status == 401
    for role in ("operator", "auditor", "supervisor"):
        token = await api_token(gw, f"{role}-user", role)
        async with aiohttp.ClientSession() as http, http.get(
            gw.url + "/metrics", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 403, role
            assert "system.monitor" in (await resp.json())["error"]
    refused = await gw.app[AUDIT].query(outcome="refused", limit=100)
    assert {r["user"] for r in refused if r["action"] == "system.monitor"} == {"operator-user", "auditor-user", "supervisor-user"}
