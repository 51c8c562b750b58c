"""Reads of recorded video: audited, and capped per session and hour.

The playlist request says which range a user looks at; the segment requests are what
actually leaves the gateway. Each segment read is therefore audited too, merged the way
HLS live views are: the reads of one session on one camera collect into time ranges, and
one ``playback.segments`` entry (ranges, segments, seconds of video, bytes) is written when
the session has read nothing of that camera for ``idle`` seconds, after at most
``max_open`` seconds of reading, and at shutdown.

Outside an approved export (which reads storage itself, never through these routes) one
session may pull at most ``recording.max-playback-seconds-per-hour`` seconds of recorded
video per hour (a sliding hour; each segment counted once per session, however many range
requests fetch it). A read beyond that is refused with 429 and the reason, audited as
``playback.segments`` with outcome ``refused``, and raises the alarm event
``playback.alarm`` once per session until the hour frees up again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.access.audit import AuditLog
from gateway.access.guard import Principal
from gateway.appkeys import AUDIT, CONFIG, EVENTS, PLAYBACK_READS
from gateway.errors import TooManyRequests
from gateway.events import EventBus
from gateway.recording.index import CONTIGUOUS, Segment
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

ACTION = "playback.segments"
ALARM = "playback.alarm"
#: The cap's window.
HOUR = 3600.0
#: A session's reads of a camera end this long after its last segment request (players
#: fetch one segment per segment length, 60 s by default, so this is longer).
IDLE = 90.0
#: ... and are written at least this often while they go on.
MAX_OPEN = 300.0


@dataclass(slots=True)
class _Reads:
    """One session's segment reads of one camera since its last audit entry."""

    user: str
    client: str
    camera: str
    first_at: float
    last_at: float
    ranges: list[list[float]] = field(default_factory=list)
    segment_ids: set[int] = field(default_factory=set)
    seconds: float = 0.0
    bytes: int = 0

    def add(self, seg: Segment, now: float) -> None:
        self.last_at = now
        if seg.id in self.segment_ids:
            return
        self.segment_ids.add(seg.id)
        self.seconds += seg.duration
        self.bytes += seg.bytes
        _merge(self.ranges, seg.start, seg.end)


def _merge(ranges: list[list[float]], start: float, end: float) -> None:
    """Insert ``[start, end]`` into sorted, disjoint ``ranges``, joining what touches."""
    i = 0
    while i < len(ranges) and ranges[i][1] < start - CONTIGUOUS:
        i += 1
    j = i
    while j < len(ranges) and ranges[j][0] <= end + CONTIGUOUS:
        start, end = min(start, ranges[j][0]), max(end, ranges[j][1])
        j += 1
    ranges[i:j] = [[start, end]]


@dataclass(slots=True)
class _Budget:
    """What one session pulled in the last hour."""

    counted: deque[tuple[float, int, float]] = field(default_factory=deque)  #: (when, segment id, seconds)
    ids: set[int] = field(default_factory=set)
    used: float = 0.0
    alarmed: bool = False

    def expire(self, now: float) -> None:
        while self.counted and self.counted[0][0] <= now - HOUR:
            _, seg_id, seconds = self.counted.popleft()
            self.ids.discard(seg_id)
            self.used -= seconds
        if not self.counted:
            self.used = 0.0  # no float dust

    def free_in(self, needed: float, limit: float, now: float) -> float:
        """Seconds until ``needed`` more fits under ``limit``."""
        used = self.used
        if used + needed <= limit:
            return 0.0
        for at, _, seconds in self.counted:  # oldest first: the order they leave the hour
            used -= seconds
            if used + needed <= limit:
                return max(0.0, at + HOUR - now)
        return HOUR  # more than the whole limit at once


class PlaybackReads:
    def __init__(
        self,
        audit: AuditLog,
        events: EventBus,
        *,
        max_seconds_per_hour: float,
        idle: float = IDLE,
        max_open: float = MAX_OPEN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audit = audit
        self.events = events
        self.limit = max_seconds_per_hour
        self.idle = idle
        self.max_open = max_open
        self.clock = clock
        self._reads: dict[tuple[str, str], _Reads] = {}
        self._budgets: dict[str, _Budget] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PlaybackReads:
        self._task = asyncio.create_task(self._sweep_forever(), name="playback-reads")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        await self.flush()

    def used(self, session_id: str) -> float:
        """Seconds of video the session pulled in the last hour."""
        budget = self._budgets.get(session_id)
        if budget is None:
            return 0.0
        budget.expire(self.clock())
        return budget.used

    # -- the two requests ----------------------------------------------------------------
    async def admit_playlist(self, who: Principal, client: str, camera: str) -> None:
        """A playlist is refused only once the session has used up its hour: it serves no
        video itself, and the segments it lists are counted as they are fetched."""
        budget = self._budgets.get(who.session_id)
        if budget is None:
            return
        now = self.clock()
        budget.expire(now)
        if budget.used >= self.limit:
            await self._refuse(who, client, camera, budget, now, wait=budget.free_in(1.0, self.limit, now), detail={"request": "playlist"})

    async def admit_segment(self, who: Principal, client: str, seg: Segment) -> None:
        """Count the segment against the session's hour (once) and add it to the session's
        reads of the camera; raises TooManyRequests (audited, alarmed) beyond the cap."""
        now = self.clock()
        budget = self._budgets.setdefault(who.session_id, _Budget())
        budget.expire(now)
        if seg.id not in budget.ids:
            if budget.used + seg.duration > self.limit:
                wait = budget.free_in(seg.duration, self.limit, now)
                await self._refuse(who, client, seg.camera, budget, now, wait=wait, detail={"request": "segment", "segment": seg.id})
            budget.counted.append((now, seg.id, seg.duration))
            budget.ids.add(seg.id)
            budget.used += seg.duration
            budget.alarmed = False
        key = (who.session_id, seg.camera)
        reads = self._reads.get(key)
        if reads is None:
            reads = self._reads[key] = _Reads(who.username, client, seg.camera, now, now)
        reads.add(seg, now)

    async def _refuse(
        self, who: Principal, client: str, camera: str, budget: _Budget, now: float, *, wait: float, detail: dict[str, Any]
    ) -> None:
        reason = (
            f"recorded video limit reached: this session has pulled {budget.used / 60:.0f} min of recordings in the "
            f"last hour, at most {self.limit / 60:.0f} min are allowed (recording.max-playback-seconds-per-hour); "
            f"more leaves only through an approved export request. Try again in {max(1, round(wait / 60))} min"
        )
        await self.audit.record(
            ACTION, outcome="refused", user=who.username, client=client, camera=camera,
            detail={"reason": reason, "used_seconds": round(budget.used, 3), "limit_seconds": self.limit, **detail},
        )
        if not budget.alarmed:
            budget.alarmed = True
            logger.warning("playback: %s from %s reached the limit of %.0f s per hour (camera %s)", who.username, client, self.limit, camera)
            self.events.emit(
                ALARM, camera=camera, user=who.username, client=client, reason="playback limit reached",
                used_seconds=round(budget.used, 3), limit_seconds=self.limit,
            )
        raise TooManyRequests(reason)

    # -- writing the merged reads ------------------------------------------------------------
    async def flush(self) -> None:
        """Write every open read now (at shutdown)."""
        for key in list(self._reads):
            await self._write(key)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle))
            await self.sweep()

    async def sweep(self) -> None:
        now = self.clock()
        for key, reads in list(self._reads.items()):
            if now - reads.last_at >= self.idle or now - reads.first_at >= self.max_open:
                try:
                    await self._write(key)
                except Exception:
                    logger.exception("playback: auditing the reads of %s on camera %s failed", reads.user, reads.camera)
        for session_id, budget in list(self._budgets.items()):
            budget.expire(now)
            if not budget.counted:
                del self._budgets[session_id]

    async def _write(self, key: tuple[str, str]) -> None:
        reads = self._reads.pop(key, None)
        if reads is None or not reads.ranges:
            return
        await self.audit.record(
            ACTION, user=reads.user, client=reads.client, camera=reads.camera,
            range_from=reads.ranges[0][0], range_to=reads.ranges[-1][1],
            detail={
                "ranges": [[round(s, 3), round(e, 3)] for s, e in reads.ranges],
                "segments": len(reads.segment_ids),
                "seconds": round(reads.seconds, 3),
                "bytes": reads.bytes,
            },
        )


async def playback_reads_ctx(app: Any) -> AsyncIterator[None]:
    """aiohttp cleanup context: ``app.cleanup_ctx.append(playback_reads_ctx)``, after the
    security core (it writes to the audit log until it stops)."""
    limit = app[CONFIG].recording.max_playback_seconds_per_hour
    async with PlaybackReads(app[AUDIT], app[EVENTS], max_seconds_per_hour=limit) as reads:
        app[PLAYBACK_READS] = reads
        yield
