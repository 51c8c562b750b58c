"""Stream hub: one writer, many readers, a GOP cache, and readers that never block the writer.

The source publishes every packet once; each reader has its own bounded queue of
references to the shared, immutable packets. A reader that falls behind does not slow
anyone down: its queue is emptied and it resumes at the next keyframe, so its picture
recovers cleanly instead of smearing. A *lossless* reader (the recorder) gets a deep
queue instead, and an alarm if even that overflows.

Everything here runs on the event loop thread; sources in worker threads hand packets
over with ``loop.call_soon_threadsafe(hub.publish, packet)``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import StreamClosed
from gateway.media.packet import MediaPacket, StreamInfo

logger = logging.getLogger(__name__)

#: A live viewer may lag at most this many packets (about 4 s at 25 fps) before skipping.
DEFAULT_READER_PACKETS = 100
DEFAULT_READER_BYTES = 16 * 1024 * 1024
#: The recorder's deep buffer: about 60 s at 25 fps.
LOSSLESS_READER_PACKETS = 1500
LOSSLESS_READER_BYTES = 256 * 1024 * 1024
#: A GOP longer than this is not cached; new readers then wait for the next keyframe.
GOP_CACHE_PACKETS = 600
GOP_CACHE_BYTES = 48 * 1024 * 1024
STATS_WINDOW = 5.0


@dataclass(frozen=True, slots=True)
class HubStats:
    packets: int
    bytes: int
    fps: float
    bitrate: float  #: bits per second over the last few seconds
    readers: int
    last_packet_at: float | None  #: wall clock


class HubReader:
    """One consumer's view of a hub. Use ``async for packet in reader`` or ``await recv()``."""

    def __init__(
        self,
        hub: StreamHub,
        *,
        name: str,
        max_packets: int,
        max_bytes: int,
        lossless: bool,
        on_overflow: Callable[[HubReader], None] | None,
    ) -> None:
        self.hub = hub
        self.name = name
        self.lossless = lossless
        self._max_packets = max_packets
        self._max_bytes = max_bytes
        self._on_overflow = on_overflow
        self._queue: deque[MediaPacket] = deque()
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._need_keyframe = True
        self._closed = False
        #: The preloaded cached GOP still queued: not lag, so not counted against the limits
        #: (a camera with a 10 s GOP preloads 250 packets into a 100-packet queue).
        self._preloaded = 0
        self._preloaded_bytes = 0
        #: Packets this reader never saw because it fell behind.
        self.skipped = 0
        #: Times this reader fell behind and was moved on to the next keyframe.
        self.overflows = 0
        self.delivered = 0
        #: Set by ``listen``: packets go straight to it instead of the queue.
        self._listener: Callable[[MediaPacket], None] | None = None
        self._on_close: Callable[[], None] | None = None

    # -- writer side (called by the hub) ---------------------------------------------
    def _offer(self, packet: MediaPacket) -> None:
        if self._need_keyframe:
            if not packet.keyframe:
                self.skipped += 1
                return
            self._need_keyframe = False
        listener = self._listener
        if listener is not None:
            self.delivered += 1
            listener(packet)
            return
        if (
            len(self._queue) >= self._max_packets + self._preloaded
            or self._queued_bytes + packet.size > self._max_bytes + self._preloaded_bytes
        ):
            self._overflow()
            if not packet.keyframe:
                self.skipped += 1
                return
            self._need_keyframe = False
        self._queue.append(packet)
        self._queued_bytes += packet.size
        self._wake()

    def _overflow(self) -> None:
        self.overflows += 1
        self.skipped += len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        self._preloaded = self._preloaded_bytes = 0
        self._need_keyframe = True
        if self.lossless:
            logger.warning("hub %s: lossless reader %s fell behind; packets lost", self.hub.name, self.name)
        if self._on_overflow is not None:
            try:
                self._on_overflow(self)
            except Exception:  # an alarm handler must never break the writer
                logger.exception("hub %s: overflow handler of %s failed", self.hub.name, self.name)

    def _preload(self, packets: list[MediaPacket]) -> None:
        if packets:
            self._need_keyframe = False
            self._queue.extend(packets)
            self._queued_bytes = sum(p.size for p in packets)
            self._preloaded = len(packets)
            self._preloaded_bytes = self._queued_bytes

    def listen(self, on_packet: Callable[[MediaPacket], None], on_close: Callable[[], None]) -> None:
        """Hand every packet to ``on_packet`` as it is published instead of queueing it: for
        a consumer whose work per packet is short and never waits (the WebRTC fan-out), which
        then costs no task switch per packet. It runs inside the hub's ``publish``, on the
        event loop, so it must not close readers of this hub itself (schedule that). Packets
        already queued (the preloaded GOP) are handed over first; ``on_close`` is called once,
        when the reader or the hub closes."""
        self._on_close = on_close
        while self._queue:
            packet = self.get_nowait()
            if packet is not None:
                on_packet(packet)
        self._listener = on_packet

    def skip_to_keyframe(self) -> int:
        """Drop what is queued and resume at the next keyframe; returns packets dropped.

        Not an overflow: no alarm, no ``on_overflow`` call (the hub forgetting its GOP)."""
        dropped = len(self._queue)
        self.skipped += dropped
        self._queue.clear()
        self._queued_bytes = 0
        self._preloaded = self._preloaded_bytes = 0
        self._need_keyframe = True
        return dropped

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reader side -------------------------------------------------------------------
    @property
    def info(self) -> StreamInfo | None:
        return self.hub.info

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        return len(self._queue)

    def get_nowait(self) -> MediaPacket | None:
        if not self._queue:
            return None
        packet = self._queue.popleft()
        self._queued_bytes -= packet.size
        self.delivered += 1
        if self._preloaded:
            self._preloaded -= 1
            self._preloaded_bytes = max(0, self._preloaded_bytes - packet.size)
        return packet

    async def recv(self) -> MediaPacket:
        """Return the next packet; raise ``StreamClosed`` once the reader or hub is closed."""
        while not self._queue:
            if self._closed:
                raise StreamClosed(f"stream {self.hub.name} closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        packet = self._queue.popleft()
        self._queued_bytes -= packet.size
        self.delivered += 1
        if self._preloaded:
            self._preloaded -= 1
            self._preloaded_bytes = max(0, self._preloaded_bytes - packet.size)
        return packet

    def __aiter__(self) -> HubReader:
        return self

    async def __anext__(self) -> MediaPacket:
        try:
            return await self.recv()
        except StreamClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop reading. Idempotent; packets still queued are discarded."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self._preloaded = self._preloaded_bytes = 0
        self._listener = None
        self.hub._detach(self)
        self._wake()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    async def __aenter__(self) -> HubReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class StreamHub:
    """Fans the packets of one stream out to any number of readers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.info: StreamInfo | None = None
        self._readers: list[HubReader] = []
        self._gop: list[MediaPacket] = []
        self._gop_bytes = 0
        self._gop_valid = False
        self._closed = False
        self._listeners: list[Callable[[StreamInfo], None]] = []
        self._forget_listeners: list[Callable[[], None]] = []
        #: Times the GOP cache was forgotten (a mask added: nothing from before it is served).
        self.forgotten = 0
        self.packets = 0
        self.bytes = 0
        self.last_packet_at: float | None = None
        self._window: deque[tuple[float, int]] = deque()

    # -- writer ----------------------------------------------------------------------
    def publish(self, packet: MediaPacket) -> None:
        if self._closed:
            return
        if packet.info is not self.info:
            self.info = packet.info
            self._gop.clear()
            self._gop_bytes = 0
            self._gop_valid = False
            for listener in list(self._listeners):
                listener(packet.info)
        self._cache(packet)
        now = time.monotonic()
        self.packets += 1
        self.bytes += packet.size
        self.last_packet_at = packet.wallclock
        window = self._window
        window.append((now, packet.size))
        while window and now - window[0][0] > STATS_WINDOW:
            window.popleft()
        for reader in self._readers:
            reader._offer(packet)

    def _cache(self, packet: MediaPacket) -> None:
        if packet.keyframe:
            self._gop = [packet]
            self._gop_bytes = packet.size
            self._gop_valid = True
        elif self._gop_valid:
            if len(self._gop) >= GOP_CACHE_PACKETS or self._gop_bytes + packet.size > GOP_CACHE_BYTES:
                self._gop = []
                self._gop_bytes = 0
                self._gop_valid = False
            else:
                self._gop.append(packet)
                self._gop_bytes += packet.size

    def forget_gop(self) -> None:
        """Forget the cached GOP and latest keyframe, at once: readers opened from now on and
        snapshots wait for the next keyframe; every live reader (not the lossless recorder,
        which keeps what was recorded before) drops what it has queued and resumes there;
        listeners (the LL-HLS window) drop what they made. For a privacy mask that was just
        added: the writer must publish nothing from before the mask after this call."""
        self._gop = []
        self._gop_bytes = 0
        self._gop_valid = False
        self.forgotten += 1
        for reader in list(self._readers):
            if not reader.lossless:
                reader.skip_to_keyframe()
        for listener in list(self._forget_listeners):
            try:
                listener()
            except Exception:  # one broken listener must not keep old pictures in the others
                logger.exception("hub %s: a forget-GOP listener failed", self.name)

    def add_forget_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the loop) whenever ``forget_gop`` runs; returns a remover."""
        self._forget_listeners.append(listener)
        return lambda: self._forget_listeners.remove(listener) if listener in self._forget_listeners else None

    async def next_keyframe(self, timeout: float) -> MediaPacket | None:
        """The cached keyframe, else the next one published within ``timeout`` seconds."""
        cached = self.latest_keyframe()
        if cached is not None or self._closed:
            return cached
        reader = self.open_reader("keyframe waiter", max_packets=2)
        try:
            return await asyncio.wait_for(reader.recv(), timeout)
        except (TimeoutError, StreamClosed):
            return None
        finally:
            reader.close()

    def close(self) -> None:
        """End the stream for good: every reader's ``recv`` raises ``StreamClosed``."""
        if self._closed:
            return
        self._closed = True
        for reader in list(self._readers):
            reader.close()
        self._gop = []

    # -- readers ---------------------------------------------------------------------
    def open_reader(
        self,
        name: str = "reader",
        *,
        lossless: bool = False,
        max_packets: int | None = None,
        max_bytes: int | None = None,
        from_keyframe: bool = True,
        on_overflow: Callable[[HubReader], None] | None = None,
    ) -> HubReader:
        """Attach a reader. It starts at the cached keyframe, so it has a picture at once.

        With ``from_keyframe=False`` it starts with the next packet published after the
        next keyframe instead (for readers that must not replay the cached GOP).
        """
        if self._closed:
            raise StreamClosed(f"stream {self.name} closed")
        reader = HubReader(
            self,
            name=name,
            max_packets=max_packets or (LOSSLESS_READER_PACKETS if lossless else DEFAULT_READER_PACKETS),
            max_bytes=max_bytes or (LOSSLESS_READER_BYTES if lossless else DEFAULT_READER_BYTES),
            lossless=lossless,
            on_overflow=on_overflow,
        )
        if from_keyframe and self._gop_valid:
            reader._preload(list(self._gop))
        self._readers.append(reader)
        return reader

    def _detach(self, reader: HubReader) -> None:
        try:
            self._readers.remove(reader)
        except ValueError:
            pass

    def add_info_listener(self, listener: Callable[[StreamInfo], None]) -> Callable[[], None]:
        """Call ``listener`` whenever the stream parameters change; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    @property
    def readers(self) -> int:
        return len(self._readers)

    @property
    def closed(self) -> bool:
        return self._closed

    def latest_keyframe(self) -> MediaPacket | None:
        return self._gop[0] if self._gop_valid and self._gop else None

    def cached_gop(self) -> list[MediaPacket]:
        return list(self._gop) if self._gop_valid else []

    def stats(self) -> HubStats:
        window = self._window
        now = time.monotonic()
        while window and now - window[0][0] > STATS_WINDOW:
            window.popleft()
        fps = bitrate = 0.0
        if len(window) >= 2:
            span = max(window[-1][0] - window[0][0], 1e-3)
            fps = (len(window) - 1) / span
            bitrate = sum(size for _, size in list(window)[1:]) * 8 / span
        return HubStats(
            packets=self.packets,
            bytes=self.bytes,
            fps=round(fps, 2),
            bitrate=round(bitrate),
            readers=len(self._readers),
            last_packet_at=self.last_packet_at,
        )
