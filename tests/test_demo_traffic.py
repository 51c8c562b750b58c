"""The demo camera's ``traffic`` pattern: a street whose every vehicle, lane, direction and
plate is known from the options, checked against the gateway's own analyzers.

One gateway for the end-to-end test: the demo camera (pattern ``traffic``, 1280x720, live
libx264, ingested over RTSP like any camera) with the counting line and plate reader of the
shipped ``conf/cameras.toml``. Its loop is short (16 s, 12 vehicles, faster than the
default 60 s loop of 24) so a whole loop, every vehicle once, passes in seconds: counts per lane and
direction over one loop equal the ground truth, the wrong-way vehicle raises its event, and
the plates read equal the plates driven past.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from citygate_plugins.cameras.demo import DemoOptions
from citygate_plugins.cameras.demo_traffic import (
    LANES, LINE_Y, TrafficOptions, TrafficScene, ground_truth, passages, schedule,
)
from gateway import config as config_mod
from gateway.appkeys import ANALYTICS
from gateway.plates.text import normalise
from gateway.plugins import load_plugins

ROOT = Path(__file__).resolve().parent.parent
#: A short, dense loop: twelve vehicles in sixteen seconds (UA, PL and VN cars, VN motorbikes
#: with two-line plates, one wrong-way driver), so one loop passes within the test's budget.
TRAFFIC = {"seed": 3, "loop-seconds": 16, "vehicles": 12, "speed": 0.7, "motorbikes": 0.25, "wrong-way": 1}
OPTIONS = msgspec.convert(TRAFFIC, TrafficOptions)


def _shipped_analytics() -> str:
    """The ``[[camera.analytics]]`` tables of the shipped traffic camera, as text."""
    text = (ROOT / "conf" / "cameras.toml").read_text()
    start = text.index('pattern = "traffic"')
    first = text.index("[[camera.analytics]]", start)
    end = text.find("\n[[camera]]", first)
    return text[first : end if end > 0 else len(text)]


CAMERAS = f"""
[[camera]]
id = "street"
vendor = "demo"
area = "centre"
record = false
[camera.options]
pattern = "traffic"
fps = 15
[camera.options.traffic]
{chr(10).join(f"{k} = {v}" for k, v in TRAFFIC.items())}
{_shipped_analytics()}
"""


# -- the schedule --------------------------------------------------------------------------


def test_the_schedule_follows_from_the_options() -> None:
    vehicles = schedule(OPTIONS)
    assert vehicles == schedule(msgspec.convert(TRAFFIC, TrafficOptions))  # deterministic
    assert vehicles != schedule(msgspec.convert(TRAFFIC | {"seed": 4}, TrafficOptions))
    # plates of the three countries, two-line motorbike plates among them, all distinct
    assert {(v.kind, v.country) for v in vehicles} == {("car", "UA"), ("car", "PL"), ("car", "VN"), ("motorbike", "VN")}
    assert all(len(v.lines) == (2 if v.kind == "motorbike" else 1) for v in vehicles)
    for v in vehicles:
        plate = normalise(v.lines)
        assert (plate.text, plate.country) == (v.plate, v.country), v
    assert len({v.plate for v in vehicles}) == len(vehicles)
    assert [v.lane for v in vehicles if v.wrong_way] and sum(v.wrong_way for v in vehicles) == 1
    # any window of one loop holds every vehicle once; each further loop repeats it
    for start in (0.0, 1_000_000.3, time.time()):
        truth = ground_truth(OPTIONS, start, start + OPTIONS.loop_seconds)
        assert sum(truth.values()) == 12 and set(truth) <= {(lane, d) for lane in LANES for d in ("inbound", "outbound")}
        assert ground_truth(OPTIONS, start, start + 3 * OPTIONS.loop_seconds) == Counter({k: 3 * n for k, n in truth.items()})
    # vehicles of one lane never overlap in the picture (sampled over a loop)
    scene = TrafficScene(OPTIONS, 320, 180)
    for step in range(320):
        in_lane: dict[str, list[tuple[float, float]]] = {}
        for vehicle, y in scene.in_view(step * 0.05):
            half = vehicle.size[1] / 2
            for a, b in in_lane.get(vehicle.lane, []):
                assert y + half <= a or y - half >= b, (step, vehicle)
            in_lane.setdefault(vehicle.lane, []).append((y - half, y + half))


def test_traffic_options_are_checked() -> None:
    for bad, reason in (
        ({"loop-seconds": 5, "vehicles": 100}, "do not fit"),
        ({"vehicles": 2, "wrong-way": 3}, "wrong-way"),
        ({"speed": 0}, ">= 0.05"),
        ({"lanes": 3}, "unknown field"),
    ):
        with pytest.raises(msgspec.ValidationError, match=reason):
            msgspec.convert({"pattern": "traffic", "traffic": bad}, DemoOptions)
    with pytest.raises(msgspec.ValidationError, match="whole number of frames"):
        msgspec.convert({"pattern": "traffic", "fps": 7, "preencoded-seconds": 1, "traffic": {"loop-seconds": 60.1}}, DemoOptions)


def test_the_shipped_traffic_camera_is_configured_like_the_tested_one(tmp_path: Path) -> None:
    plugins = load_plugins()
    kinds = {"vendors": plugins.camera_vendors(), "analyzers": plugins.analyzers()}
    shipped = next(c for c in config_mod.load(ROOT / "conf", env={}, **kinds).cameras if c.options.pattern == "traffic")
    (tmp_path / "cameras.toml").write_text(CAMERAS)
    (tested,) = config_mod.load(tmp_path, env={}, **kinds).cameras
    assert [a.analyzer for a in shipped.analytics] == ["vehicle-count", "plate-reader"]
    assert shipped.analytics == tested.analytics
    line = shipped.analytics[0].options.lines[0]
    assert line.points[0][1] == line.points[1][1] == LINE_Y and [lane.name for lane in line.lanes] == list(LANES)


# -- end to end ------------------------------------------------------------------------------


def quiet_moment(options: TrafficOptions, after: float, gap: float = 1.2) -> float:
    """The middle of the first gap of ``gap`` seconds or more between two crossings of the
    line, at or after ``after``."""
    times = [p.at for p in passages(options, after - gap, after + 2 * options.loop_seconds)]
    return next((a + b) / 2 for a, b in zip(times, times[1:], strict=False) if b - a >= gap and (a + b) / 2 >= after)


async def test_the_traffic_camera_counted_and_read_against_its_ground_truth(make_gateway) -> None:
    gw = await make_gateway(CAMERAS)
    officer = await gw.sign_in("officer", role="duty-officer", all_areas=True)  # may see counts and plates
    ws = await officer.ws_connect(gw.url + "/api/events")
    await gw.wait_online("street")
    counter, reader = gw.app[ANALYTICS].stats("street")[0].analyzers
    deadline = time.monotonic() + 20
    while counter.frames < 40 or reader.frames < 5:  # the counter has learnt the street
        assert time.monotonic() < deadline, (counter, reader)
        await asyncio.sleep(0.2)
    # one whole loop, every vehicle once (pictures skipped on a loaded machine must not
    # change the counts: the counter predicts tracks across them and merges split blobs)
    start, end, events, watched_from, watched_to = await _watch_one_loop(ws)

    def found(kind: str) -> list[dict]:
        return [e["detail"]["payload"] for e in events if e["kind"] == kind and start <= e["at"] < end]

    counted = Counter((p["lane"], p["direction"]) for p in found("analytics.count"))
    truth = ground_truth(OPTIONS, start, end)
    await ws.close()
    if os.environ.get("CITYGATE_TRAFFIC_DEBUG"):  # what was counted when, beside the ground truth
        Path(os.environ["CITYGATE_TRAFFIC_DEBUG"]).write_text(json.dumps([
            [(round(e["at"] - start, 2), e["kind"], e["detail"]["payload"]) for e in events],
            [(round(p.at - start, 2), p.vehicle.lane, p.vehicle.direction, p.vehicle.kind, p.vehicle.plate)
             for p in passages(OPTIONS, start - 20, end + 3)],
            repr(gw.app[ANALYTICS].stats("street")),
        ]))
    # counts per lane and direction over the loop equal the ground truth
    assert counted == truth, (
        [(round(e["at"] - start, 2), e["detail"]["payload"]) for e in events if e["kind"] == "analytics.count"],
        [(round(p.at - start, 2), p.vehicle.lane, p.vehicle.direction, p.vehicle.kind) for p in passages(OPTIONS, start - 3, end + 3)],
    )
    # the wrong-way driver raised its event, in its lane and direction
    wrong = [p.vehicle for p in passages(OPTIONS, start, end) if p.vehicle.wrong_way]
    assert [(p["lane"], p["direction"], p["allowed"]) for p in found("analytics.wrong-direction")] == [
        (v.lane, v.direction, "outbound" if v.direction == "inbound" else "inbound") for v in wrong
    ]
    # plates: those of every vehicle that passed whole while the reader watched
    scene_vehicles = schedule(OPTIONS)
    passed = {
        v.plate for v in scene_vehicles
        for p in passages(OPTIONS, watched_from, watched_to, vehicles=[v])
        if p.at - v.crosses(LINE_Y, OPTIONS.speed) >= watched_from
        and p.at - v.crosses(LINE_Y, OPTIONS.speed) + v.transit(OPTIONS.speed) <= watched_to - 0.5
    }
    reads = [e["detail"]["payload"]["plate"] for e in events if e["kind"] == "analytics.plate"]
    exact = passed & set(reads)
    wrong_reads = [r for r in reads if r not in {v.plate for v in scene_vehicles}]
    assert len(passed) >= 12 and len(exact) >= 0.9 * len(passed), (sorted(passed - exact), wrong_reads)
    # a misread plate counts once however often the vehicle was re-read
    assert len(set(wrong_reads)) <= 0.1 * len(set(reads)), wrong_reads


async def _watch_one_loop(ws) -> tuple[float, float, list[dict], float, float]:
    """The analytics events of the street over one whole loop, from a quiet moment on."""
    watched_from = time.time()
    start = quiet_moment(OPTIONS, watched_from + 0.5)
    end = start + OPTIONS.loop_seconds
    events: list[dict] = []
    while time.time() < end + 1.5:  # detection comes a picture or two after the crossing
        try:
            msg = await ws.receive(timeout=max(0.1, end + 1.5 - time.time()))
        except TimeoutError:
            break
        event = json.loads(msg.data).get("event") or {}
        if event.get("camera") == "street" and event.get("kind", "").startswith("analytics."):
            events.append(event)
    return start, end, events, watched_from, time.time()


async def test_the_preencoded_traffic_plays_in_step_with_the_wall_clock() -> None:
    """Pre-encoded, one loop is encoded once and played so that every picture shows the
    traffic of the moment it is sent: the ground truth holds as for live encoding."""
    from types import SimpleNamespace

    import av
    import numpy as np

    from citygate_plugins.cameras.demo import DemoCamera, _Renderer

    options = msgspec.convert({
        "width": 320, "height": 180, "fps": 10, "keyframe-interval": 1.0, "preencoded-seconds": 1,
        "pattern": "traffic", "traffic": {"loop-seconds": 4, "vehicles": 4, "speed": 0.8, "wrong-way": 0},
    }, DemoOptions)
    renderer = _Renderer(options, "street")  # draws what the camera should show at any moment
    async with DemoCamera(SimpleNamespace(id="street", name="street"), options) as cam:
        reader = cam.hub.open_reader("test")
        decoder = av.CodecContext.create("h264", "r")
        errors: list[tuple[float, float]] = []
        while len(errors) < 15:
            packet = await asyncio.wait_for(reader.recv(), 10)
            for frame in decoder.decode(av.Packet(packet.data)):
                luma = frame.to_ndarray(format="gray")[60:].astype(int)

                def error(at: float, luma=luma) -> float:
                    drawn = renderer.render(0, at, at).to_ndarray(format="gray")[60:].astype(int)
                    return float(np.abs(drawn - luma).mean())

                errors.append((error(packet.wallclock), error(packet.wallclock + 0.5)))
        reader.close()
    # each picture is the traffic of its moment (within a picture), not of half a second later
    # (a picture sent late on a busy machine shows a moment a little before its send time)
    assert sum(now < 1 for now, _ in errors) >= 0.8 * len(errors), errors
    assert sum(now for now, _ in errors) < sum(later for _, later in errors) / 3, errors
