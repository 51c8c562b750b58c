"""A camera's second stream, pulled only while someone watches it.

Grid tiles want a camera's low-resolution sub stream: a wall of sixteen 1080p streams costs
the browser sixteen full-HD decodes and the network sixteen main-stream bitrates. But nobody
should pull a hundred sub streams all day for the few that are on a wall, so the sub stream
starts with its first viewer, and stops ``linger`` seconds after its last one left (a tile
that reconnects or a page reload does not restart the camera's stream).

A viewer waits for the first keyframe (``open_reader``), at most ``timeout`` seconds; the
source asks the camera for one (``request_keyframe``) rather than wait out its GOP.
``close_viewers`` ends every reader at once: the camera uses it when privacy masks are
applied, since the sub stream is never masked and must not keep flowing past them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.config import IngestConfig
from gateway.errors import CameraUnavailable
from gateway.media.hub import HubReader, StreamHub
from gateway.media.packet import MediaPacket
from gateway.media.source import RtspSource, SourceState, SourceStatus
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

#: How often the idle check runs (seconds).
IDLE_CHECK = 1.0


class OnDemandStream:
    """A hub fed by an RTSP source that runs only while the hub has (or awaits) readers."""

    def __init__(
        self,
        name: str,
        url: Callable[[], Awaitable[str]],
        ingest: IngestConfig,
        *,
        request_keyframe: Callable[[], Awaitable[bool]] | None = None,
        linger: float = 30.0,
        allowed: Callable[[], bool] = lambda: True,
    ) -> None:
        self.name = name
        self._url = url
        self._request_keyframe = request_keyframe
        self._ingest = ingest
        self.linger = linger
        self._allowed = allowed
        self.hub = StreamHub(name)
        self._source: RtspSource | None = None
        self._idle: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._last_reader_at = time.monotonic()
        self._waiting = 0
        #: How many times the stream was started (for tests and the health page).
        self.starts = 0
        self._keyframe_requests = 0  #: by the sources of earlier starts

    @property
    def running(self) -> bool:
        return self._source is not None

    @property
    def keyframe_requests(self) -> int:
        """Keyframes the camera sent on request, over every start of the stream."""
        return self._keyframe_requests + (self._source.keyframe_requests if self._source is not None else 0)

    @property
    def status(self) -> SourceStatus:
        return self._source.status if self._source is not None else SourceStatus(SourceState.STOPPED, time.time())

    def publish(self, packet: MediaPacket) -> None:  # the source's sink
        if self._allowed():
            self.hub.publish(packet)

    async def open_reader(self, name: str, *, timeout: float) -> HubReader:
        """A reader on the stream; starts the stream if it is not running.

        Raises CameraUnavailable if no picture arrives within ``timeout``."""
        async with self._lock:
            if not self._allowed():
                raise CameraUnavailable(f"{self.name} is not available")
            if self.hub.closed:  # after close_viewers, or stopped when idle
                self.hub = StreamHub(self.name)
            if self._source is None:
                await self._start()
        deadline = time.monotonic() + timeout
        self._waiting += 1  # a viewer waiting for the first picture keeps the stream up
        try:
            while True:
                if not self._allowed() or self.hub.closed:  # masked meanwhile
                    raise CameraUnavailable(f"{self.name} is not available")
                if self.hub.info is not None:
                    return self.hub.open_reader(name)
                if time.monotonic() > deadline or self._source is None:
                    error = self.status.last_error
                    raise CameraUnavailable(f"{self.name}: no picture within {timeout:g}s{f' ({error})' if error else ''}")
                await asyncio.sleep(0.05)
        finally:
            self._waiting -= 1
            self._last_reader_at = time.monotonic()

    async def _start(self) -> None:
        self._source = RtspSource(self.name, self, self._url, self._ingest, self._request_keyframe)  # type: ignore[arg-type]
        await self._source.__aenter__()
        self._idle = asyncio.get_running_loop().create_task(self._stop_when_idle(), name=f"idle:{self.name}")
        self.starts += 1
        logger.info("%s: started for a viewer", self.name)

    async def _stop_when_idle(self) -> None:
        while True:
            await asyncio.sleep(min(IDLE_CHECK, max(self.linger, 0.05)))
            if self.hub.readers or self._waiting:
                self._last_reader_at = time.monotonic()
            elif time.monotonic() - self._last_reader_at >= self.linger:
                async with self._lock:
                    if not self.hub.readers and not self._waiting:
                        await self._stop_source()
                        logger.info("%s: stopped, nobody watched it for %gs", self.name, self.linger)
                        return

    async def _stop_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            await source.stop()
            self._keyframe_requests += source.keyframe_requests
        self.hub.close()

    def close_viewers(self) -> None:
        """End every reader now (they see the stream end); the stream stops when idle."""
        self.hub.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not asyncio.current_task():
            await cancel_and_wait(idle)
        with contextlib.suppress(Exception):
            async with self._lock:
                await self._stop_source()
