"""Camera runtimes: each camera owns its vendor, its source and its hub.

This is the seam the architecture asks for: nothing outside a ``Camera`` touches its hub
directly; readers are opened through ``Camera.open_reader``. When cameras move to worker
processes or other nodes, this is the class that becomes a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gateway.config import CameraConfig, Config, IngestConfig
from gateway.errors import CameraUnavailable, NotFound
from gateway.events import EventBus
from gateway.interfaces import CameraVendor, PtzCapabilities, StreamProfile
from gateway.media.hub import HubReader, HubStats, StreamHub
from gateway.media.packet import MediaPacket, StreamInfo
from gateway.media.source import RtspSource, SourceState, SourceStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CameraSnapshot:
    """A camera's state at one instant, for the API."""

    config: CameraConfig
    status: SourceStatus
    info: StreamInfo | None
    stats: HubStats
    ptz: PtzCapabilities


class Camera:
    def __init__(self, config: CameraConfig, vendor_cls: type[CameraVendor], ingest: IngestConfig, events: EventBus) -> None:
        self.config = config
        self.id = config.id
        self.vendor = vendor_cls(config, config.options)
        self.hub = StreamHub(config.id)
        self._events = events
        self._ingest = ingest
        self._stack = contextlib.AsyncExitStack()
        self._failed: SourceStatus | None = None
        self.source = RtspSource(config.id, self.hub, lambda: self.vendor.stream_url(StreamProfile.MAIN), ingest)
        self.source.add_listener(self._on_status)

    def _on_status(self, status: SourceStatus) -> None:
        if status.state in (SourceState.ONLINE, SourceState.OFFLINE):
            self._events.emit(f"camera.{status.state}", camera=self.id, error=status.last_error)

    async def start(self) -> None:
        try:
            await self._stack.enter_async_context(self.vendor)
        except Exception as exc:  # one broken vendor must not stop the others
            logger.exception("camera %s: vendor %s failed to start", self.id, self.config.vendor)
            self._failed = SourceStatus(SourceState.OFFLINE, time.time(), f"vendor failed to start: {exc}")
            self._events.emit("camera.offline", camera=self.id, error=self._failed.last_error)
            return
        await self._stack.enter_async_context(self.source)

    async def stop(self) -> None:
        self.hub.close()
        await self._stack.aclose()

    @property
    def status(self) -> SourceStatus:
        return self._failed or self.source.status

    def snapshot(self) -> CameraSnapshot:
        return CameraSnapshot(
            config=self.config,
            status=self.status,
            info=self.hub.info,
            stats=self.hub.stats(),
            ptz=self.vendor.ptz_capabilities(),
        )

    def latest_keyframe(self) -> MediaPacket | None:
        """The newest keyframe of the main stream (for snapshots), if any."""
        return self.hub.latest_keyframe()

    def open_reader(
        self, name: str, *, lossless: bool = False, on_overflow: Callable[[HubReader], None] | None = None
    ) -> HubReader:
        """Open a reader on the camera's main stream. Raises if the camera has no picture.

        ``on_overflow`` is called (on the loop) each time the reader falls behind and skips.
        """
        if self.hub.info is None:
            raise CameraUnavailable(f"camera {self.id} has no picture yet ({self.status.state})")
        return self.hub.open_reader(name, lossless=lossless, on_overflow=on_overflow)


class CameraManager:
    """Owns every configured camera; started and stopped as one async context."""

    def __init__(self, config: Config, vendors: dict[str, type[CameraVendor]], events: EventBus) -> None:
        self._cameras = {
            c.id: Camera(c, vendors[c.vendor], config.ingest, events) for c in config.cameras if c.enabled
        }

    async def __aenter__(self) -> CameraManager:
        await asyncio.gather(*(camera.start() for camera in self._cameras.values()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        results = await asyncio.gather(*(camera.stop() for camera in self._cameras.values()), return_exceptions=True)
        for camera, result in zip(self._cameras.values(), results):
            if isinstance(result, BaseException):
                logger.error("camera %s: failed to stop cleanly: %s", camera.id, result)

    def __iter__(self) -> Iterator[Camera]:
        return iter(self._cameras.values())

    def __len__(self) -> int:
        return len(self._cameras)

    def get(self, camera_id: str) -> Camera:
        camera = self._cameras.get(camera_id)
        if camera is None:
            raise NotFound(f"no camera {camera_id!r}")
        return camera
