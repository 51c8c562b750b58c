"""PTZ through the real API: the demo camera's virtual dome, the control lock, priorities,
idle lapse, rights and areas, and one audit entry per control session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from gateway.appkeys import AUDIT, EVENTS
from gateway.interfaces import Event
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_webrtc import connect

WIDTH, HEIGHT = 320, 240
#: Rows below the time-code strip and the text panel, above the bouncing box.
BAND = slice(48, 140)
#: The virtual dome pans 0.25 units/s at velocity 1; one unit is half the panorama
#: (2 frame widths), so at home zoom (1:1) velocity 0.5 moves the picture 80 px/s.
PX_PER_SECOND_AT_HALF_SPEED = 0.5 * 0.25 * 2 * WIDTH


@pytest.fixture
async def gw(make_gateway) -> RunningGateway:
    pytest.importorskip("citygate_plugins.cameras.demo")
    cams = camera_toml("demo", "demo", width=WIDTH, height=HEIGHT, fps=25, keyframe_interval=1.0) + camera_toml(
        "north-1", "demo", area="north", width=WIDTH, height=HEIGHT, fps=5
    )
    gateway = await make_gateway(cams, "[ptz]\nlock-idle-seconds = 1.5\nmove-timeout-seconds = 10\n")
    await gateway.wait_online("demo")
    return gateway


@pytest.fixture
async def events(gw: RunningGateway) -> AsyncIterator[list[Event]]:
    """Every event on the gateway's bus, in-process."""
    seen: list[Event] = []

    async def collect() -> None:
        async for event in gw.app[EVENTS].subscribe():
            seen.append(event)

    task = asyncio.create_task(collect())
    await asyncio.sleep(0)
    yield seen
    task.cancel()


async def call(session, gw: RunningGateway, method: str, path: str, json: dict | None = None) -> tuple[int, dict]:
    async with session.request(method, f"{gw.url}/api/cameras/{path}", json=json) as resp:
        return resp.status, await resp.json()


async def latest_luma(viewer, seconds: float) -> np.ndarray:
    """Drain frames for ``seconds`` and return the luma of the last one."""
    await viewer.count_frames(seconds)
    frame = viewer.frames[-1]
    return frame.to_ndarray(format="yuv420p")[:HEIGHT].astype(np.int16)


def horizontal_shift(before: np.ndarray, after: np.ndarray, limit: int = 150) -> tuple[int, float]:
    """The ``d`` for which ``after[:, x] ≈ before[:, x + d]`` (the picture moved left by d)."""
    a, b = before[BAND], after[BAND]
    best, best_err = 0, float("inf")
    for d in range(-limit, limit + 1):
        if d >= 0:
            err = np.abs(a[:, d:] - b[:, : WIDTH - d]).mean()
        else:
            err = np.abs(a[:, :d] - b[:, -d:]).mean()
        if err < best_err:
            best, best_err = d, float(err)
    return best, best_err


async def test_pan_right_for_one_second_moves_the_picture_left(gw: RunningGateway) -> None:
    camera = await gw.get_json("/api/cameras/demo")
    assert camera["ptz"] == {"continuous": True, "absolute": True, "relative": True, "presets": True, "home": True}
    viewer = await connect(gw, "demo")
    try:
        await viewer.first_frame()
        before = await latest_luma(viewer, 1.0)  # past the cached-GOP burst
        started = time.monotonic()
        status, body = await call(gw.session, gw, "POST", "demo/ptz/move", {"pan": 0.5})
        assert status == 200, body
        assert body["lock"]["holder"] == "tester" and body["lock"]["yours"]
        await asyncio.sleep(1.0)
        status, _ = await call(gw.session, gw, "POST", "demo/ptz/stop")
        moved_for = time.monotonic() - started
        assert status == 200
        after = await latest_luma(viewer, 0.8)
        shift, err = horizontal_shift(before, after)
        expected = PX_PER_SECOND_AT_HALF_SPEED * moved_for
        print(f"picture moved left {shift} px (expected ~{expected:.0f}), residual {err:.1f}")
        assert shift > 0, f"panning right must move the picture left, it moved {shift}"
        assert abs(shift - expected) < 0.3 * expected, (shift, expected)
        assert err < 12, "the two views do not match at any shift"
        # Stopped means still: two frames half a second apart show the same view.
        again = await latest_luma(viewer, 0.5)
        assert horizontal_shift(after, again)[0] == 0
    finally:
        await viewer.pc.close()


async def test_tilt_zoom_presets_and_home_move_the_view(gw: RunningGateway) -> None:
    head = gw.cameras.get("demo").vendor.head
    admin = await gw.sign_in("ada", role="admin", all_areas=True)
    status, presets = await call(gw.session, gw, "GET", "demo/ptz/presets")
    assert status == 200 and [p["name"] for p in presets] == ["Overview", "East, close"]
    assert (await call(gw.session, gw, "POST", "demo/ptz/absolute", {"pan": 0.25, "tilt": 0.5, "zoom": 1.0}))[0] == 200
    assert head.position() == pytest.approx((0.25, 0.5, 1.0))
    assert (await call(gw.session, gw, "POST", "demo/ptz/relative", {"pan": -0.5, "zoom": -0.5}))[0] == 200
    assert head.position() == pytest.approx((-0.25, 0.5, 0.5))
    assert (await call(gw.session, gw, "POST", "demo/ptz/presets/1/go"))[0] == 200
    assert head.position() == pytest.approx((0.0, 0.0, 0.0))
    status, body = await call(gw.session, gw, "POST", "demo/ptz/presets/99/go")
    assert status == 404 and "99" in body["error"]
    # Setting a preset needs cameras.manage: an operator may not, an administrator may.
    status, body = await call(gw.session, gw, "POST", "demo/ptz/presets", {"name": "Fountain"})
    assert status == 403
    await call(gw.session, gw, "DELETE", "demo/ptz/lock")
    assert (await call(admin, gw, "POST", "demo/ptz/absolute", {"pan": -0.75, "tilt": 0, "zoom": 0.5}))[0] == 200
    status, preset = await call(admin, gw, "POST", "demo/ptz/presets", {"name": "Fountain"})
    assert status == 201 and preset["name"] == "Fountain"
    assert (await call(admin, gw, "POST", "demo/ptz/home"))[0] == 200
    assert head.position() == pytest.approx((0.0, 0.0, 0.5))
    assert (await call(admin, gw, "POST", f"demo/ptz/presets/{preset['token']}/go"))[0] == 200
    assert head.position() == pytest.approx((-0.75, 0.0, 0.5))


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("move", {"pan": 1.5}, "<= 1.0"),
        ("move", {"pan": "fast"}, "Expected `float`"),
        ("move", {"pan": 0.5, "roll": 1}, "roll"),
        ("absolute", {"pan": 0, "tilt": 0, "zoom": -0.1}, ">= 0.0"),
        ("absolute", {"pan": 0, "tilt": 0}, "zoom"),
    ],
)
async def test_bad_moves_are_400_with_the_reason(gw: RunningGateway, path: str, body: dict, reason: str) -> None:
    status, answer = await call(gw.session, gw, "POST", f"demo/ptz/{path}", body)
    assert status == 400 and reason in answer["error"], answer


async def test_lock_refuses_others_yields_to_priority_and_lapses(gw: RunningGateway, events: list[Event]) -> None:
    head = gw.cameras.get("demo").vendor.head
    alice = await gw.sign_in("alice", role="operator", all_areas=True)
    bob = await gw.sign_in("bob", role="operator", all_areas=True)
    dora = await gw.sign_in("dora", role="duty-officer", all_areas=True)

    status, body = await call(alice, gw, "POST", "demo/ptz/move", {"pan": 0.3})
    assert status == 200 and body["lock"]["holder"] == "alice"
    assert head.moving

    status, body = await call(bob, gw, "POST", "demo/ptz/move", {"pan": -1})
    assert status == 409 and "alice" in body["error"], body
    status, body = await call(bob, gw, "POST", "demo/ptz/lock")  # same priority: no take-over
    assert status == 409 and "alice" in body["error"]
    status, lock = await call(bob, gw, "GET", "demo/ptz/lock")
    assert status == 200 and lock["holder"] == "alice" and lock["role"] == "operator"
    assert not lock["yours"] and not lock["can_take"]

    status, lock = await call(dora, gw, "GET", "demo/ptz/lock")
    assert lock["can_take"] and lock["your_priority"] == 50
    status, lock = await call(dora, gw, "POST", "demo/ptz/lock")
    assert status == 200 and lock["holder"] == "dora" and lock["yours"]
    assert not head.moving, "the previous holder's move stops at a take-over"

    await asyncio.sleep(0.05)
    told = [e for e in events if e.kind == "ptz.taken_over"]
    assert len(told) == 1 and told[0].user == "alice" and told[0].camera == "demo"
    assert told[0].detail["by"] == "dora" and "duty-officer" in told[0].detail["reason"]
    broadcast = [e.detail["holder"] for e in events if e.kind == "ptz.lock"]
    assert broadcast == ["alice", "dora"]

    status, body = await call(alice, gw, "POST", "demo/ptz/move", {"pan": 0.3})
    assert status == 409 and "dora" in body["error"]

    # Idle for longer than lock-idle-seconds (1.5): the lock lapses and others may steer.
    await asyncio.sleep(2.2)
    status, lock = await call(bob, gw, "GET", "demo/ptz/lock")
    assert lock["holder"] is None and lock["can_take"]
    assert any(e.kind == "ptz.lapsed" and e.user == "dora" for e in events)
    assert [e.detail["holder"] for e in events if e.kind == "ptz.lock"][-1] is None
    status, body = await call(bob, gw, "POST", "demo/ptz/stop")
    assert status == 200 and body["lock"]["holder"] == "bob"

    audit = gw.app[AUDIT]
    await audit.flush()
    alice_rows = await audit.query(user="alice", action="ptz.control", outcome="ok")
    assert [(r["detail"]["ended"], r["detail"]["commands"]) for r in alice_rows] == [("taken over", 1)]
    assert alice_rows[0]["detail"]["taken_by"] == "dora"
    alice_refused = await audit.query(user="alice", action="ptz.control", outcome="refused")
    assert len(alice_refused) == 1 and "dora" in alice_refused[0]["detail"]["reason"]
    refused = await audit.query(user="bob", action="ptz.control", outcome="refused")
    assert len(refused) == 1 and "alice" in refused[0]["detail"]["reason"]  # once per session, not per press
    dora_rows = await audit.query(user="dora", action="ptz.control")
    assert [r["detail"]["ended"] for r in dora_rows] == ["lapsed"]


async def test_no_right_or_wrong_area_is_403_and_audited(gw: RunningGateway) -> None:
    ivan = await gw.sign_in("ivan", role="investigator", all_areas=True)  # no ptz.control
    paul = await gw.sign_in("paul", role="district-police", areas=("north",))
    status, body = await call(ivan, gw, "POST", "demo/ptz/move", {"pan": 0.5})
    assert status == 403 and "ptz.control" in body["error"]
    status, body = await call(paul, gw, "POST", "demo/ptz/move", {"pan": 0.5})
    assert status == 403 and "area" in body["error"]
    status, _ = await call(paul, gw, "POST", "north-1/ptz/move", {"pan": 0.1})  # his own district: fine
    assert status == 200
    status, lock = await call(gw.session, gw, "GET", "demo/ptz/lock")
    assert lock["holder"] is None

    audit = gw.app[AUDIT]
    await audit.flush()
    for user in ("ivan", "paul"):
        rows = await audit.query(user=user, action="ptz.control", outcome="refused", camera="demo")
        assert len(rows) == 1 and rows[0]["detail"]["path"] == "/api/cameras/demo/ptz/move", rows


async def test_one_audit_entry_per_control_session(gw: RunningGateway) -> None:
    commands = 0
    for i in range(12):
        assert (await call(gw.session, gw, "POST", "demo/ptz/move", {"pan": 0.1 * (i % 5), "tilt": -0.1}))[0] == 200
        commands += 1
    for _ in range(3):
        assert (await call(gw.session, gw, "POST", "demo/ptz/relative", {"pan": 0.01}))[0] == 200
        commands += 1
    assert (await call(gw.session, gw, "POST", "demo/ptz/stop"))[0] == 200
    commands += 1
    status, lock = await call(gw.session, gw, "DELETE", "demo/ptz/lock")
    assert status == 200 and lock["holder"] is None

    audit = gw.app[AUDIT]
    await audit.flush()
    rows = await audit.query(user="tester", action="ptz.*")
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["action"] == "ptz.control" and row["outcome"] == "ok" and row["camera"] == "demo"
    assert row["detail"]["commands"] == commands and row["detail"]["ended"] == "released"
    assert row["range_from"] < row["range_to"]


async def test_a_move_without_repeats_stops_by_itself(make_gateway) -> None:
    gw = await make_gateway(
        camera_toml("demo", "demo", width=WIDTH, height=HEIGHT, fps=10), "[ptz]\nmove-timeout-seconds = 0.5\n"
    )
    await gw.wait_online("demo")
    head = gw.cameras.get("demo").vendor.head
    assert (await call(gw.session, gw, "POST", "demo/ptz/move", {"zoom": 0.2}))[0] == 200
    assert head.moving
    deadline = time.monotonic() + 2.0
    while head.moving and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not head.moving
    status, lock = await call(gw.session, gw, "GET", "demo/ptz/lock")
    assert lock["holder"] == "tester"  # the lock stays until the idle time


async def test_the_previous_holder_is_told_on_the_events_channel(gw: RunningGateway) -> None:
    pytest.importorskip("gateway.dispatch.notify")
    alice = await gw.sign_in("alice", role="operator", all_areas=True)
    dora = await gw.sign_in("dora", role="duty-officer", all_areas=True)
    assert (await call(alice, gw, "POST", "demo/ptz/move", {"tilt": 0.2}))[0] == 200
    async with alice.ws_connect(gw.url.replace("http", "ws", 1) + "/api/events") as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "state"
        assert (await call(dora, gw, "POST", "demo/ptz/lock"))[0] == 200
        seen = []
        while not any(e["kind"] == "ptz.taken_over" for e in seen):
            message = await ws.receive_json(timeout=5)
            if message["type"] == "event":
                seen.append(message["event"])
    told = next(e for e in seen if e["kind"] == "ptz.taken_over")
    assert told["user"] == "alice" and told["camera"] == "demo" and told["detail"]["by"] == "dora"
    assert "took control" in told["detail"]["reason"]
