"""Where a PTZ camera pointed when each picture was taken, as far as it can be known.

A ``PoseTracker`` per PTZ camera polls the vendor's position (ONVIF ``GetStatus``; the demo
dome reads its own head): fast while the camera moves or settles after a command, slowly
while it stands still. The PTZ service tells it about every command, so it never relies on
a position read before the camera was told to move.

The mask stage asks, from its worker thread, for the positions a picture may have been
taken at: a picture that reached the gateway at ``t`` was captured some time before
(``capture-latency``), and a position read at ``s`` may describe the camera slightly
before or after ``s`` (``position-latency``). The tracker answers with the positions on
the path through that window — never a guess beyond what it has read:

* the camera is still and no command is pending: the newest position holds;
* it moves, or a command was sent since the newest reading: the picture waits (in the
  worker) until a reading later than the window arrives, at most ``stale-seconds``;
* nothing read yet, or no reading for ``stale-seconds`` while it may move: ``None`` —
  the stage then blacks the whole picture ("privacy mask: position unknown").
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.interfaces import PtzStatus

logger = logging.getLogger(__name__)

#: Readings kept (about a minute while moving at the fast poll rate).
HISTORY = 600


@dataclass(frozen=True, slots=True)
class PoseSample:
    at: float  #: wall clock of the reading (when the answer arrived)
    pan: float
    tilt: float
    zoom: float
    moving: bool

    def same_place(self, other: PoseSample, tolerance: float = 1e-4) -> bool:
        return (
            abs(self.pan - other.pan) <= tolerance
            and abs(self.tilt - other.tilt) <= tolerance
            and abs(self.zoom - other.zoom) <= tolerance
        )


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    poll_moving: float = 0.1  #: seconds between readings while moving or settling
    poll_idle: float = 1.0  #: seconds between readings while still
    settle_seconds: float = 2.0  #: fast polling this long after a command
    stale_seconds: float = 1.0  #: no reading this long while it may move: position unknown
    capture_latency: float = 0.25  #: a picture may have been captured this long before it arrived
    position_latency: float = 0.1  #: a reading may describe the camera this long before/after it arrived
    request_timeout: float = 2.0


class PoseTracker:
    """Positions of one PTZ camera over time; polled on the loop, read from any thread."""

    def __init__(
        self,
        name: str,
        read: Callable[[], Awaitable[PtzStatus | None]],
        settings: TrackingSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_command: Callable[[float], None] | None = None,
        on_reading: Callable[[PoseSample], None] | None = None,
    ) -> None:
        self.name = name
        #: Told of every command and reading (the position log), on the event loop.
        self._on_command = on_command
        self._on_reading = on_reading
        self.settings = settings or TrackingSettings()
        self._read = read
        self._clock = clock
        self._times: list[float] = []
        self._samples: list[PoseSample] = []
        self._cond = threading.Condition()
        #: Wall time of the oldest command not yet followed by a reading started after it.
        self._pending_since: float | None = None
        self._commands = 0  #: bumped by every command; a reading started before a bump is stale
        self._last_command = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.supported = True  #: False once the vendor said it cannot report positions
        self.failures = 0

    # -- lifecycle (event loop) -----------------------------------------------------------
    async def __aenter__(self) -> PoseTracker:
        self._task = asyncio.create_task(self._run(), name=f"ptz-position:{self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with self._cond:
            self._cond.notify_all()

    # -- from the PTZ service (event loop) ------------------------------------------------
    def command_started(self) -> None:
        """A command goes to the camera: positions read before it no longer hold."""
        now = self._clock()
        with self._cond:
            if self._pending_since is None:
                self._pending_since = now
            self._commands += 1
            self._last_command = now
        if self._on_command is not None:
            self._on_command(now)

    def command_done(self) -> None:
        """The camera took the command: read where it is now."""
        with self._cond:
            self._commands += 1
            self._last_command = self._clock()
        self._wake.set()

    # -- readings -------------------------------------------------------------------------
    async def _run(self) -> None:
        s = self.settings
        while True:
            await self.read_once()
            if not self.supported:
                return
            newest = self.newest()
            fast = (
                newest is None
                or newest.moving
                or self._pending_since is not None
                or self._clock() - self._last_command < s.settle_seconds
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), s.poll_moving if fast else s.poll_idle)

    async def read_once(self) -> PoseSample | None:
        """Read the position now and add it; None if the camera did not answer."""
        with self._cond:
            generation = self._commands
        try:
            status = await asyncio.wait_for(self._read(), self.settings.request_timeout)
        except NotImplementedError:
            status = None
        except Exception as exc:  # a camera that does not answer leaves the position stale
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 100 == 0:
                logger.warning("camera %s: reading the PTZ position failed (%d times): %s", self.name, self.failures, exc)
            return None
        if status is None:
            self.supported = False
            logger.info("camera %s: the vendor cannot report PTZ positions", self.name)
            return None
        sample = PoseSample(self._clock(), status.pan, status.tilt, status.zoom, status.moving)
        self.add(sample, generation=generation)
        if self._on_reading is not None:
            self._on_reading(sample)
        return sample

    def add(self, sample: PoseSample, *, generation: int | None = None) -> None:
        """Add a reading; ``generation`` is the command count when it was asked for."""
        with self._cond:
            previous = self._samples[-1] if self._samples else None
            if previous is not None and sample.at < previous.at:
                return
            if (
                previous is not None
                and not previous.moving
                and self._pending_since is None
                and not previous.same_place(sample)
            ):
                logger.warning(
                    "camera %s: moved without a command through the gateway (between %.2f and %.2f); "
                    "scene masks were placed from the older position meanwhile", self.name, previous.at, sample.at,
                )
            self._times.append(sample.at)
            self._samples.append(sample)
            if len(self._samples) > HISTORY:
                del self._times[: len(self._samples) - HISTORY]
                del self._samples[: len(self._samples) - HISTORY]
            if generation is None or generation == self._commands:
                self._pending_since = None
            self._cond.notify_all()

    def newest(self) -> PoseSample | None:
        with self._cond:
            return self._samples[-1] if self._samples else None

    def known_until(self) -> float:
        """Up to when the position is known (inf while still with no command pending)."""
        with self._cond:
            return self._known_until()

    def _known_until(self) -> float:
        if not self._samples:
            return float("-inf")
        if self._pending_since is not None:
            return min(self._pending_since, self._samples[-1].at)
        newest = self._samples[-1]
        return newest.at if newest.moving else float("inf")

    # -- for the mask stage (any thread) --------------------------------------------------
    def samples_for(self, arrived: float, *, wait: bool = True) -> list[PoseSample] | None:
        """The readings that bound where the camera was for a picture that arrived at
        ``arrived``: the path through them covers the picture's position. ``None`` when
        unknown or stale (fail closed). May block up to ``stale-seconds`` waiting for a
        reading (never on the event loop: pass ``wait=False`` there)."""
        s = self.settings
        low = arrived - s.capture_latency - s.position_latency
        high = arrived + s.position_latency
        with self._cond:
            while self._known_until() < high:
                newest_at = self._samples[-1].at if self._samples else None
                since = self._pending_since if self._pending_since is not None else newest_at
                if since is None or not wait or self._clock() - since >= s.stale_seconds:
                    return None
                self._cond.wait(timeout=max(0.01, s.stale_seconds - (self._clock() - since)))
            first = bisect.bisect_right(self._times, low) - 1
            if first < 0:
                return None  # nothing known from before the picture: its position is unknown
            last = bisect.bisect_left(self._times, high)
            chosen = self._samples[first : last + 1]
        return chosen
