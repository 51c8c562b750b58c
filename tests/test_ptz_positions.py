"""The PTZ position log: what is written (changes, moves, commands, a heartbeat while still),
and how recorded pictures are placed from it — never from a guess: before the log began,
across a gap, or after a command nobody followed with a reading, the position is unknown."""

from __future__ import annotations

import pytest

from gateway.db import Database
from gateway.ptz_positions import HEARTBEAT, MAX_GAP, PoseHistory, PositionLog, PositionRow
from gateway.ptz_tracking import PoseSample, TrackingSettings

SETTINGS = TrackingSettings(capture_latency=0.25, position_latency=0.1, stale_seconds=1.0)


def reading(at: float, pan: float = 0.0, moving: bool = False) -> PositionRow:
    return PositionRow("dome", at, "reading", PoseSample(at, pan, 0.0, 0.5, moving))


def command(at: float) -> PositionRow:
    return PositionRow("dome", at, "command")


def pans(samples: list[PoseSample] | None) -> list[float] | None:
    return None if samples is None else [s.pan for s in samples]


def test_a_still_camera_holds_its_position_between_heartbeats() -> None:
    history = PoseHistory([reading(100.0), reading(110.0), reading(120.0)], SETTINGS, now=121.0)
    assert pans(history.samples_for(105.0)) == [0.0, 0.0]
    assert pans(history.samples_for(120.5)) == [0.0]  # the log ends at a still reading: it holds


def test_a_move_is_covered_by_the_readings_around_it() -> None:
    rows = [reading(100.0), command(101.0), reading(101.05, 0.1, moving=True), reading(101.15, 0.2, moving=True),
            reading(101.25, 0.3), reading(111.0, 0.3)]
    history = PoseHistory(rows, SETTINGS, now=112.0)
    # a picture that arrived just after the command: from the old position through the move
    assert pans(history.samples_for(101.1)) == [0.0, 0.1, 0.2, 0.3]
    assert pans(history.samples_for(105.0)) == [0.3, 0.3]


def test_unknown_before_the_log_across_gaps_and_after_an_unanswered_command() -> None:
    assert PoseHistory([], SETTINGS, now=100.0).samples_for(50.0) is None
    assert PoseHistory([reading(100.0)], SETTINGS, now=200.0).samples_for(99.0) is None  # before it began
    gap = PoseHistory([reading(100.0), reading(100.0 + MAX_GAP + 5, 0.5)], SETTINGS, now=200.0)
    assert gap.samples_for(100.0 + MAX_GAP) is None  # the gateway was down: anything may have happened
    stale = PoseHistory([reading(100.0), command(101.0), reading(103.0, 0.4)], SETTINGS, now=200.0)
    assert stale.samples_for(101.5) is None  # nobody read where the command took it for 2 s
    ended = PoseHistory([reading(100.0, moving=True)], SETTINGS, now=200.0)
    assert ended.samples_for(100.05) is None  # the log ends mid-move


@pytest.fixture
async def db(tmp_path):
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'citygate.db'}") as database:
        await database.migrate()
        yield database


async def test_the_log_writes_changes_moves_commands_and_heartbeats_only(db: Database) -> None:
    now = [1000.0]
    async with PositionLog(db, keep_days=1, clock=lambda: now[0]) as log:
        log.reading("dome", PoseSample(1000.0, 0.0, 0.0, 0.5, False))
        log.reading("dome", PoseSample(1001.0, 0.0, 0.0, 0.5, False))  # same place, too soon: skipped
        log.reading("dome", PoseSample(1000.0 + HEARTBEAT + 0.1, 0.0, 0.0, 0.5, False))  # heartbeat
        log.command("dome", 1011.0)
        log.reading("dome", PoseSample(1011.1, 0.0, 0.0, 0.5, False))  # right after a command: kept
        log.reading("dome", PoseSample(1011.2, 0.2, 0.0, 0.5, True))
        log.reading("dome", PoseSample(1011.3, 0.2, 0.0, 0.5, True))  # moving: every reading
        await log.flush()
        history = await log.history("dome", 1000.0, 1012.0, SETTINGS)
        assert [(r.kind, r.at) for r in history._rows] == [
            ("reading", 1000.0), ("reading", 1000.0 + HEARTBEAT + 0.1), ("command", 1011.0), ("reading", 1011.1),
            ("reading", 1011.2), ("reading", 1011.3),
        ]
        now[0] = 1000.0 + 2 * 86400
        assert await log.prune() == 6
