"""The position log of PTZ cameras: so that a mask drawn today lands on last week's pictures.

The live tracker (``gateway.ptz_tracking``) hands every reading and every command to the
``PositionLog``, which stores what matters in ``ptz_positions``: a reading when the
position or the moving flag changed, while the camera moves, right after a command, and
every ``HEARTBEAT`` seconds while it stands still (so that a gap in the log — the gateway
was down, the camera did not answer — is visible as a gap, not as stillness). Rows are
written in batches off the request path and kept as long as the longest retention.

``PoseHistory`` answers, for a recorded picture, the same question the tracker answers
live, from those rows and without ever guessing: the readings that bound where the
camera was, or ``None`` (unknown: mask the whole picture).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from gateway.db import Database, ptz_positions
from gateway.ptz_tracking import PoseSample, TrackingSettings

logger = logging.getLogger(__name__)

#: A still camera's position is written at least this often.
HEARTBEAT = 10.0
#: Rows further apart than this leave the time between them unknown.
MAX_GAP = 3 * HEARTBEAT
#: How often buffered rows are written.
FLUSH_SECONDS = 1.0
#: How often rows older than the retention are deleted.
PRUNE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class PositionRow:
    camera: str
    at: float
    kind: str  #: "reading" or "command"
    sample: PoseSample | None = None


class PositionLog:
    """Buffers position rows and writes them in batches; an async context manager."""

    def __init__(self, db: Database, *, keep_days: float, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._keep = keep_days * 86400
        self._clock = clock
        self._buffer: list[dict[str, object]] = []
        self._last: dict[str, PoseSample] = {}
        self._after_command: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._pruned = 0.0

    async def __aenter__(self) -> PositionLog:
        self._task = asyncio.create_task(self._run(), name="ptz-position-log")
        return self

    async def __aexit__(self, *exc: object) -> None:
        # the writer is asked to stop, never cancelled: a cancel landing inside a write can
        # leave SQLite's write lock with a connection that only the garbage collector closes,
        # and every later write (the audit log's last entries) waits for it
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.flush()

    # -- from trackers (event loop) -------------------------------------------------------
    def command(self, camera: str, at: float) -> None:
        self._after_command.add(camera)
        self._buffer.append({"camera": camera, "at": at, "kind": "command", "pan": None, "tilt": None, "zoom": None, "moving": None})

    def reading(self, camera: str, sample: PoseSample) -> None:
        last = self._last.get(camera)
        if (
            last is not None
            and camera not in self._after_command
            and not sample.moving
            and not last.moving
            and last.same_place(sample)
            and sample.at - last.at < HEARTBEAT
        ):
            return
        self._after_command.discard(camera)
        self._last[camera] = sample
        self._buffer.append({
            "camera": camera, "at": sample.at, "kind": "reading", "pan": sample.pan, "tilt": sample.tilt,
            "zoom": sample.zoom, "moving": sample.moving,
        })

    # -- writing ------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), FLUSH_SECONDS)
            try:
                await self.flush()
                if self._clock() - self._pruned >= PRUNE_SECONDS:
                    await self.prune()
            except Exception:
                logger.exception("ptz: writing the position log failed; retrying")

    async def flush(self) -> None:
        rows, self._buffer = self._buffer, []
        if not rows:
            return
        try:
            async with self._db.begin() as conn:
                await conn.execute(ptz_positions.insert(), rows)
        except Exception:
            self._buffer[:0] = rows  # keep them for the next try
            raise

    async def prune(self) -> int:
        self._pruned = self._clock()
        async with self._db.begin() as conn:
            result = await conn.execute(ptz_positions.delete().where(ptz_positions.c.at < self._clock() - self._keep))
        return result.rowcount or 0

    # -- reading --------------------------------------------------------------------------
    async def history(self, camera: str, start: float, end: float, settings: TrackingSettings) -> PoseHistory:
        """The rows needed to place masks on pictures that arrived between start and end."""
        low = start - settings.capture_latency - settings.position_latency
        high = end + settings.position_latency
        cols = ptz_positions.c
        before = (
            sa.select(ptz_positions).where(cols.camera == camera, cols.at <= low, cols.kind == "reading")
            .order_by(cols.at.desc()).limit(1)
        )
        within = sa.select(ptz_positions).where(cols.camera == camera, cols.at > low, cols.at <= high + MAX_GAP).order_by(cols.at)
        async with self._db.connect() as conn:
            rows = list((await conn.execute(before)).mappings()) + list((await conn.execute(within)).mappings())
        pending = [PositionRow(camera, r["at"], r["kind"], _sample(r)) for r in rows]
        # rows still in the buffer (not written yet) belong to the history too
        pending += [
            PositionRow(camera, r["at"], r["kind"], _sample(r))  # type: ignore[arg-type]
            for r in self._buffer
            if r["camera"] == camera and low - MAX_GAP <= r["at"] <= high + MAX_GAP  # type: ignore[operator]
        ]
        pending.sort(key=lambda r: r.at)
        return PoseHistory(pending, settings, now=self._clock())


def _sample(row: object) -> PoseSample | None:
    r = row  # a mapping
    if r["kind"] != "reading":  # type: ignore[index]
        return None
    return PoseSample(r["at"], r["pan"], r["tilt"], r["zoom"], bool(r["moving"]))  # type: ignore[index]


class PoseHistory:
    """Recorded positions of one camera over a time range; usable from any thread."""

    def __init__(self, rows: Sequence[PositionRow], settings: TrackingSettings, *, now: float) -> None:
        self._rows = list(rows)
        self._times = [r.at for r in self._rows]
        self._settings = settings
        self._now = now

    def samples_for(self, arrived: float) -> list[PoseSample] | None:
        """The readings bounding the position of a picture that arrived at ``arrived``;
        None when the log cannot say (no reading before, a gap, a command not followed by
        a reading in time)."""
        s = self._settings
        low = arrived - s.capture_latency - s.position_latency
        high = arrived + s.position_latency
        rows = self._rows
        first = bisect.bisect_right(self._times, low) - 1
        while first >= 0 and rows[first].kind != "reading":
            first -= 1
        if first < 0:
            return None
        chosen: list[PoseSample] = []
        i = first
        while True:
            row = rows[i]
            if row.sample is not None:
                chosen.append(row.sample)
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if row.at >= high and row.kind == "reading":
                return chosen
            if nxt is None:
                # the log ends here: a still camera with no command after it holds its
                # position until the heartbeat would have been due (or until now)
                last = row.sample
                if last is not None and not last.moving and min(self._now, last.at + MAX_GAP) >= high:
                    return chosen
                return None
            gap = nxt.at - row.at
            if row.kind == "command" or (row.sample is not None and row.sample.moving):
                if gap > s.stale_seconds:
                    return None  # a move whose path nobody read in time
            elif gap > MAX_GAP:
                return None
            i += 1
