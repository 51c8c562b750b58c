"""Video analytics: analyzer config, and the whole path from a camera to stored counts.

One gateway for the end-to-end test: a real RTSP camera on loopback
(``tests.traffic_video.TrafficCamera``, libx264) shows a street where six vehicles drive
through at known times, lanes and directions; the built-in ``vehicle-count`` analyzer
counts them from the camera's public hub, beside an analyzer that raises and one that
hangs. Counts are read back through the API (JSON and CSV) with rights and audit.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway import config as config_mod
from gateway import hookimpl
from gateway.appkeys import ANALYTICS, ANALYTICS_STORE, AUDIT
from gateway.errors import ConfigErrors
from gateway.interfaces import Analyzer, AnalyzerFrame, Observation
from gateway.plugins import load_plugins
from tests.traffic_video import TrafficCamera, ground_truth

LINE = "=main"  # a name a spreadsheet would run as a formula: the CSV must neutralise it

ANALYTICS_TOML = f"""
[[camera.analytics]]
analyzer = "vehicle-count"
fps = 10
[[camera.analytics.lines]]
name = "{LINE}"
points = [[0.5, 0.05], [0.5, 0.95]]
directions = ["eastbound", "westbound"]
[[camera.analytics.lines.lanes]]
name = "north"
span = [0.0, 0.5]
[[camera.analytics.lines.lanes]]
name = "south"
span = [0.5, 1.0]
one-way = "westbound"
[[camera.analytics]]
analyzer = "test-raises"
[[camera.analytics]]
analyzer = "test-hangs"
fps = 2
"""


class Raises(Analyzer):
    """Fails on every third picture it gets."""

    @staticmethod
    def id() -> str:
        return "test-raises"

    def __init__(self, camera: str, options: object) -> None:
        super().__init__(camera, options)
        self.seen = 0

    def analyze(self, frame: AnalyzerFrame) -> list[Observation]:
        self.seen += 1
        if self.seen % 3 == 0:
            raise RuntimeError("analyzer bug")
        return []


class Hangs(Analyzer):
    """Once, never returns from its second picture (a deadlocked native library, say)."""

    max_seconds = 1.0
    hung = False

    @staticmethod
    def id() -> str:
        return "test-hangs"

    def __init__(self, camera: str, options: object) -> None:
        super().__init__(camera, options)
        self.seen = 0

    def analyze(self, frame: AnalyzerFrame) -> list[Observation]:
        self.seen += 1
        if self.seen == 2 and not Hangs.hung:
            Hangs.hung = True
            HANG.wait(30)
        return []


#: Set at the end of the test: the abandoned thread of the hung analyzer may then end.
HANG = threading.Event()


def _plugins():
    plugins = load_plugins()
    plugins.register(
        SimpleNamespace(gateway_register_analyzers=hookimpl(lambda register: (register(Raises), register(Hangs)))),
        "test-analyzers",
    )
    return plugins


# -- config ----------------------------------------------------------------------------------


def test_analytics_config_mistakes_name_file_camera_key_and_reason(tmp_path: Path) -> None:
    plugins = load_plugins()
    (tmp_path / "cameras.toml").write_text("""
[[camera]]
id = "gate-1"
vendor = "demo"
area = "centre"
[[camera.analytics]]
analyzer = "crowd-count"
[[camera.analytics]]
analyzer = "vehicle-count"
fps = 0
[[camera.analytics.lines]]
name = "a"
points = [[0.1, 0.5], [0.9, 0.5]]
[[camera.analytics.lines.lanes]]
name = "x"
one-way = "sideways"
""")
    with pytest.raises(ConfigErrors) as caught:
        config_mod.load(tmp_path, vendors=plugins.camera_vendors(), analyzers=plugins.analyzers())
    errors = {e.key: e for e in caught.value.errors}
    file = str(tmp_path / "cameras.toml")
    unknown = errors["camera[0].analytics[0].analyzer"]
    assert unknown.file == file and "unknown analyzer 'crowd-count'" in unknown.reason and "vehicle-count" in unknown.reason
    assert "camera 'gate-1'" in unknown.reason
    assert "camera[0].analytics[1].fps" in errors
    # fixed, the lane's one-way direction is still not one of the line's
    (tmp_path / "cameras.toml").write_text((tmp_path / "cameras.toml").read_text().replace("fps = 0\n", "").replace(
        '[[camera.analytics]]\nanalyzer = "crowd-count"\n', ""))
    with pytest.raises(ConfigErrors) as caught:
        config_mod.load(tmp_path, vendors=plugins.camera_vendors(), analyzers=plugins.analyzers())
    (error,) = caught.value.errors
    assert error.key.startswith("camera[0].analytics[0].lines") and "one-way 'sideways'" in error.reason, error


# -- end to end ------------------------------------------------------------------------------


async def _until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.2)


async def test_vehicles_are_counted_per_lane_and_direction_beside_failing_analyzers(make_gateway) -> None:
    HANG.clear()
    Hangs.hung = False
    async with TrafficCamera() as street:
        cameras = f"""
[[camera]]
id = "traffic"
vendor = "generic_rtsp"
area = "centre"
[camera.options]
url = "{street.url}"
""" + ANALYTICS_TOML
        gw = await make_gateway(cameras, gateway_toml="[recording]\nsegment-seconds = 1\n", plugins=_plugins())
        try:
            await _run(gw, street)
        finally:
            HANG.set()  # let the hung analyzer's abandoned thread end


async def _run(gw, street: TrafficCamera) -> None:
    runner = gw.app[ANALYTICS]
    await gw.wait_online("traffic")
    ws = await gw.session.ws_connect(gw.url + "/api/events")
    counter, raises, hangs = runner.stats("traffic")[0].analyzers

    async def learned():  # the counter has seen the empty street a while (its background)
        return counter.frames >= 15

    await _until(learned, 20, "background learning")
    started = street.go()

    async def counted():
        body = await gw.get_json(f"/api/analytics/counts?camera=traffic&interval=hour&from={started - 3600}")
        return body if sum(c["count"] for c in body["counts"]) >= 6 else None

    body = await _until(counted, 30, "six vehicles counted")
    got = Counter()
    for c in body["counts"]:
        assert c["camera"] == "traffic" and c["line"] == LINE
        got[(c["lane"], c["direction"])] += c["count"]
    assert got == ground_truth()

    # the wrong-way vehicle reached the events channel
    async def wrong_way():
        msg = await ws.receive(timeout=10)
        event = json.loads(msg.data).get("event") or {}
        return event if event.get("kind") == "analytics.wrong-direction" else None

    event = await _until(wrong_way, 15, "wrong-direction event")
    assert event["camera"] == "traffic"
    assert event["detail"]["payload"] | {"track": 0} == {
        "line": LINE, "lane": "south", "direction": "eastbound", "allowed": "westbound", "track": 0,
    }
    await ws.close()
    stored = await gw.app[ANALYTICS_STORE].observations(["traffic"], start=started - 60, end=time.time() + 60)
    assert [(o["kind"], o["payload"]["lane"], o["analyzer"]) for o in stored] == [("wrong-direction", "south", "vehicle-count")]

    # the failing analyzers were counted and restarted; counting and recording carried on
    assert raises.crashes >= 1 and raises.restarts >= 1 and raises.frames >= 2
    assert hangs.crashes >= 1 and "hung" in (hangs.last_error or "")
    assert counter.crashes == 0
    timeline = await gw.get_json(f"/api/cameras/traffic/recordings?from={started - 5}&to={time.time() + 5}")
    segments = [i for i in timeline["items"] if i["kind"] == "segment"]
    assert segments and max(s["end"] for s in segments) > started + 5, timeline
    cams = await gw.get_json("/api/cameras/traffic")
    assert cams["state"] == "online"
    (listed,) = await gw.get_json("/api/analytics/cameras")
    assert [a["analyzer"] for a in listed["analyzers"]] == ["vehicle-count", "test-raises", "test-hangs"]
    assert listed["analyzers"][0]["lines"][0]["lanes"][1] == {"name": "south", "one_way": "westbound"}

    # CSV: one row per lane and direction; the line's formula-like name is neutralised
    async with gw.session.get(gw.url + f"/api/analytics/counts?camera=traffic&interval=day&format=csv&from={started - 86400 * 2}") as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert {r["line"] for r in rows} == {"'" + LINE}
    assert Counter({(r["lane"], r["direction"]): int(r["count"]) for r in rows}) == ground_truth()

    # rights: another district's user is refused (audited); without the right at all too
    north = await gw.sign_in("north-operator", role="operator", areas=("north",))
    async with north.get(gw.url + "/api/analytics/counts?camera=traffic") as resp:
        assert resp.status == 403
    async with north.get(gw.url + "/api/analytics/counts") as resp:
        assert resp.status == 200 and (await resp.json())["counts"] == []  # only the cameras of the north
    investigator = await gw.sign_in("inv", role="investigator", all_areas=True)
    async with investigator.get(gw.url + "/api/analytics/counts?camera=traffic") as resp:
        assert resp.status == 403
    # the transport department sees the counts, and neither plates nor pictures (refused, audited)
    transport = await gw.sign_in("transport", role="transport", all_areas=True)
    async with transport.get(gw.url + f"/api/analytics/counts?camera=traffic&interval=hour&from={started - 3600}") as resp:
        assert resp.status == 200 and sum(c["count"] for c in (await resp.json())["counts"]) == 6
    async with transport.get(gw.url + "/api/plates", params={"q": "AA*", "purpose": "traffic study"}) as resp:
        assert resp.status == 403
    async with transport.get(gw.url + "/api/cameras/traffic/snapshot.jpg") as resp:
        assert resp.status == 403
    assert await gw.app[AUDIT].query(action="plates.search", outcome="refused", user="transport")
    refused = await gw.app[AUDIT].query(action="analytics.view", outcome="refused")
    assert {(r["user"], r["camera"]) for r in refused} >= {("north-operator", "traffic"), ("inv", None)}
    granted = await gw.app[AUDIT].query(action="analytics.view", outcome="ok", user="tester")
    assert granted and granted[0]["camera"] == "traffic"

    # the camera stops here (a cluster node hands it over) and starts again: analytics follow
    await gw.cameras.stop_camera("traffic")
    assert "traffic" not in runner.cameras
    await gw.cameras.start_camera("traffic")
    assert runner.cameras == ["traffic"]
    fresh = runner.stats("traffic")[0].analyzers[0]
    assert fresh is not counter

    async def analysing():
        return fresh.frames > 0

    await _until(analysing, 15, "analysis of the restarted camera")


# -- a masked camera's pictures are decoded once ---------------------------------------------


class LumaProbe(Analyzer):
    """Remembers the mean brightness of the masked left half and of the right half."""

    seen: list[tuple[float, float]] = []

    @staticmethod
    def id() -> str:
        return "test-luma"

    def analyze(self, frame: AnalyzerFrame) -> list[Observation]:
        gray = frame.gray
        half = gray.shape[1] // 2
        LumaProbe.seen.append((float(gray[:, : half - 8].mean()), float(gray[:, half + 8 :].mean())))
        return []


async def test_a_masked_cameras_analyzers_get_the_mask_stages_pictures_without_a_second_decode(make_gateway) -> None:
    LumaProbe.seen = []
    plugins = load_plugins()
    plugins.register(SimpleNamespace(gateway_register_analyzers=hookimpl(lambda register: register(LumaProbe))), "test-luma")
    cameras = """
[[camera]]
id = "masked"
vendor = "demo"
area = "centre"
record = false
[camera.options]
width = 320
height = 180
fps = 10
keyframe-interval = 1.0
[[camera.masks]]
points = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
filter = "fill"
[[camera.analytics]]
analyzer = "test-luma"
fps = 5
"""
    gw = await make_gateway(cameras, plugins=plugins)
    await gw.wait_online("masked")

    async def probed():
        return len(LumaProbe.seen) >= 5

    await _until(probed, 20, "pictures reaching the analyzer")
    stats = gw.app[ANALYTICS].stats("masked")[0].decode
    assert stats.shared >= 5, "the analyzer's pictures come from the mask stage"
    assert stats.frames == 0, "the masked public stream was never decoded a second time"
    for masked, clear in LumaProbe.seen:
        assert masked < 24 < clear, f"the analyzer saw the masked picture (left {masked:.0f}, right {clear:.0f})"


def test_an_analytics_stream_other_than_main_or_sub_names_its_key(tmp_path: Path) -> None:
    plugins = load_plugins()
    (tmp_path / "cameras.toml").write_text("""
[[camera]]
id = "gate-1"
vendor = "demo"
area = "centre"
[[camera.analytics]]
analyzer = "vehicle-count"
stream = "third"
[[camera.analytics.lines]]
name = "a"
points = [[0.1, 0.5], [0.9, 0.5]]
""")
    with pytest.raises(ConfigErrors) as caught:
        config_mod.load(tmp_path, vendors=plugins.camera_vendors(), analyzers=plugins.analyzers())
    (error,) = caught.value.errors
    assert error.key == "camera[0].analytics[0].stream" and "'third'" in error.reason and error.file.endswith("cameras.toml"), error
    (tmp_path / "cameras.toml").write_text((tmp_path / "cameras.toml").read_text().replace('"third"', '"sub"'))
    (camera,) = config_mod.load(tmp_path, vendors=plugins.camera_vendors(), analyzers=plugins.analyzers()).cameras
    assert camera.analytics[0].stream == "sub" and camera.analytics[0].options.lines[0].name == "a"
