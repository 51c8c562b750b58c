"""PTZ patrol tours on the demo dome: the picture visits each preset in order with its dwell
(the vendor head over time and decoded WebRTC frames), an operator taking control pauses the
tour and it resumes after the control lock lapses; editing needs cameras.manage; the daily
schedule starts and stops a tour (injected clock); start and stop are audited."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from gateway.appkeys import AUDIT
from gateway.ptz_tours import TOURS
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_webrtc import connect

WIDTH, HEIGHT = 320, 240
#: Rows below the time-code strip and the clock text: the scene only.
BAND = slice(48, 140)
PRESETS = {"1": (0.0, 0.0, 0.0), "2": (0.5, 0.2, 0.9), "3": (-0.5, -0.2, 0.4)}
DWELL = 1.0


@pytest.fixture
async def gw(make_gateway) -> RunningGateway:
    gateway = await make_gateway(
        camera_toml("dome", "demo", width=WIDTH, height=HEIGHT, fps=15, keyframe_interval=0.5, bitrate=300_000),
        "[ptz]\nlock-idle-seconds = 1.5\n",
    )
    await gateway.wait_online("dome")
    return gateway


async def call(session, gw: RunningGateway, method: str, path: str, body: dict | None = None):
    async with session.request(method, f"{gw.url}/api/cameras/dome/{path}", json=body) as resp:
        return resp.status, await resp.json()


async def audited(gw: RunningGateway, action: str, **filters) -> list[dict]:
    await gw.app[AUDIT].flush()
    return await gw.app[AUDIT].query(action=action, **filters)


def which_preset(position: tuple[float, float, float]) -> str | None:
    for token, spot in PRESETS.items():
        if np.allclose(position, spot, atol=1e-6):
            return token
    return None


async def tour_state(gw: RunningGateway, tour_id: int) -> str:
    status, tours = await call(gw.session, gw, "GET", "tours")
    assert status == 200, tours
    return next(t for t in tours if t["id"] == tour_id)["state"]


async def wait_state(gw: RunningGateway, tour_id: int, state: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await tour_state(gw, tour_id) != state:
        assert time.monotonic() < deadline, f"tour never became {state}"
        await asyncio.sleep(0.05)


async def test_tour_visits_presets_in_order_pauses_for_an_operator_and_resumes(gw: RunningGateway) -> None:
    head = gw.cameras.get("dome").vendor.head
    admin = await gw.sign_in("ada", role="admin", all_areas=True)

    # a third preset, added through the API; then the administrator lets go of the dome
    assert (await call(admin, gw, "POST", "ptz/absolute", {"pan": -0.5, "tilt": -0.2, "zoom": 0.4}))[0] == 200
    status, preset = await call(admin, gw, "POST", "ptz/presets", {"name": "West"})
    assert status == 201 and preset["token"] == "3"
    assert (await call(admin, gw, "DELETE", "ptz/lock"))[0] == 200

    steps = [{"preset": t, "dwell_seconds": DWELL, "speed": 0.8} for t in ("1", "2", "3")]
    # editing needs cameras.manage: the operator is refused, with the reason, audited
    status, body = await call(gw.session, gw, "POST", "tours", {"name": "Square", "steps": steps})
    assert status == 403 and body["error"] == "role operator does not allow cameras.manage"
    assert await audited(gw, "cameras.manage", outcome="refused", user="tester")
    status, body = await call(admin, gw, "POST", "tours", {"name": "Bad", "steps": [{"preset": "9"}]})
    assert status == 400 and "no preset '9'" in body["error"]
    status, tour = await call(admin, gw, "POST", "tours", {"name": "Square", "steps": steps})
    assert status == 201, tour
    assert tour["state"] == "stopped" and [s["preset"] for s in tour["steps"]] == ["1", "2", "3"]
    tid = tour["id"]
    assert (await audited(gw, "ptz.tour.edit", user="ada"))[0]["detail"]["change"] == "created"

    viewer = await connect(gw, "dome")
    frames: list[tuple[float, np.ndarray]] = []
    visits: list[tuple[str | None, float]] = []  # (preset or None, first seen)

    async def watch_frames() -> None:
        while True:
            frame = await viewer.track.recv()
            frames.append((time.monotonic(), frame.to_ndarray(format="yuv420p")[:HEIGHT][BAND].astype(np.int16)))

    def look() -> None:
        token = which_preset(head.position())
        if not visits or visits[-1][0] != token:
            visits.append((token, time.monotonic()))

    watcher = asyncio.create_task(watch_frames())
    try:
        await viewer.first_frame()
        status, body = await call(gw.session, gw, "POST", f"tours/{tid}/start")
        assert status == 200 and body["state"] == "running" and body["started_by"] == "tester", body
        # the head visits 1, 2, 3, 1 in order (gliding there at speed 0.8, dwelling on arrival)
        deadline = time.monotonic() + 45
        while [v[0] for v in visits if v[0] is not None][-4:] != ["1", "2", "3", "1"]:
            assert time.monotonic() < deadline, repr(visits)[-600:]
            look()
            await asyncio.sleep(0.02)
        # (preset, arrived, left): the dome glides between presets, so it leaves one well
        # before it reaches the next
        stays = [(v[0], v[1], visits[i + 1][1] if i + 1 < len(visits) else None) for i, v in enumerate(visits) if v[0] is not None]
        tokens = [stay[0] for stay in stays]
        start = tokens.index("1")
        assert tokens[start:start + 4] == ["1", "2", "3", "1"], tokens
        dwells = [left - arrived for _, arrived, left in stays[start:start + 3]]
        assert all(d >= DWELL * 0.9 for d in dwells), dwells  # each preset held for its dwell
        times = [left for _, _, left in stays[start:start + 3]]

        # decoded frames: the picture at each preset differs from the others, and preset 1
        # looks the same at both visits
        def picture(at: float) -> np.ndarray:
            # the last frame before the next move, so the encoder had the whole dwell to catch up
            candidates = [f for t, f in frames if t <= at - 0.15]
            assert candidates, "no frame in the dwell"
            return candidates[-1]

        pics = [picture(times[i]) for i in range(3)]
        for i in range(3):
            for j in range(i + 1, 3):
                assert np.abs(pics[i] - pics[j]).mean() > 10, (i, j)
        await asyncio.sleep(DWELL * 0.95)
        again = picture(time.monotonic())
        assert np.abs(again - pics[0]).mean() < 6, "preset 1 shows another picture on the second visit"

        # an operator takes control: the tour pauses and leaves the dome where they put it
        assert (await call(gw.session, gw, "POST", "ptz/absolute", {"pan": 0.75, "tilt": 0.0, "zoom": 0.2}))[0] == 200
        await wait_state(gw, tid, "paused")
        held = head.position()
        assert held == pytest.approx((0.75, 0.0, 0.2))
        # while the lock is held (1.5 s idle), the tour does not move the dome
        while await gw.app[TOURS].ptz.holder("dome") == "tester":
            assert head.position() == held
            await asyncio.sleep(0.05)
        # ... and after the lapse it resumes, going to a preset again and on in order
        await wait_state(gw, tid, "running")
        resumed_at = len(visits)
        deadline = time.monotonic() + 10
        while len([v for v in visits[resumed_at:] if v[0] is not None]) < 2:
            assert time.monotonic() < deadline, repr(visits)[-600:]
            look()
            await asyncio.sleep(0.02)
        after = [v[0] for v in visits[resumed_at:] if v[0] is not None][:2]
        assert after in (["1", "2"], ["2", "3"], ["3", "1"]), after

        status, body = await call(gw.session, gw, "POST", f"tours/{tid}/stop")
        assert status == 200 and body["state"] == "stopped"
        stopped = head.position()
        await asyncio.sleep(DWELL * 1.2)
        assert head.position() == stopped, "a stopped tour moved the dome"
    finally:
        watcher.cancel()
        await viewer.pc.close()

    starts = await audited(gw, "ptz.tour.start", camera="dome")
    assert [(e["user"], e["detail"]["tour"], e["detail"]["reason"]) for e in starts] == [("tester", tid, "on demand")]
    stops = await audited(gw, "ptz.tour.stop", camera="dome")
    assert [(e["user"], e["detail"]["reason"]) for e in stops] == [("tester", "stopped")]


async def test_schedule_starts_and_stops_a_tour_in_its_window(gw: RunningGateway) -> None:
    admin = await gw.sign_in("ada", role="admin", all_areas=True)
    body = {"name": "Night", "steps": [{"preset": "1", "dwell_seconds": 5}, {"preset": "2", "dwell_seconds": 5}],
            "schedule": [{"from": "22:00", "to": "06:00"}]}
    status, tour = await call(admin, gw, "POST", "tours", body)
    assert status == 201, tour
    assert tour["schedule"] == [{"from": "22:00", "to": "06:00"}]
    service = gw.app[TOURS]
    day = time.mktime((2026, 12, 6, 0, 0, 0, 0, 0, -1))
    service.clock = lambda: day + 23 * 3600  # 23:00, inside the window that crosses midnight
    await service.check_schedule()
    assert await tour_state(gw, tour["id"]) in ("running", "paused")
    service.clock = lambda: day + 7 * 3600  # 07:00
    await service.check_schedule()
    assert await tour_state(gw, tour["id"]) == "stopped"
    starts = await audited(gw, "ptz.tour.start", camera="dome")
    assert [(e["user"], e["detail"]["by"], e["detail"]["reason"]) for e in starts] == [(None, "schedule", "schedule")]
    stops = await audited(gw, "ptz.tour.stop", camera="dome")
    assert [(e["user"], e["detail"]["reason"]) for e in stops] == [(None, "time window ended")]
    # stopped by a user inside its window: not restarted until the window has ended
    service.clock = lambda: day + 23 * 3600
    await service.check_schedule()
    assert await tour_state(gw, tour["id"]) in ("running", "paused")
    assert (await call(admin, gw, "POST", f"tours/{tour['id']}/stop"))[0] == 200
    await service.check_schedule()
    assert await tour_state(gw, tour["id"]) == "stopped"
    service.clock = lambda: day + 7 * 3600
    await service.check_schedule()
    service.clock = lambda: day + 22 * 3600 + 60
    await service.check_schedule()
    assert await tour_state(gw, tour["id"]) in ("running", "paused")
    status, body = await call(admin, gw, "PUT", f"tours/{tour['id']}", {**body, "schedule": [{"from": "25:00", "to": "06:00"}]})
    assert status == 400 and "schedule" in body["error"]
