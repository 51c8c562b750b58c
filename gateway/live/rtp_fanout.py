"""Packetize once per camera: one hub reader per stream turns each access unit into RTP
payloads once, for every WebRTC viewer of that stream.

A ``CameraFanout`` reads one hub (a camera's main or sub stream) and keeps:

- the payloads of each access unit as an ``RtpFrame`` (single NAL units and FU-A / FU
  fragments, RFC 6184 / RFC 7798; the marker bit is on the last payload), numbered with the
  fanout's own *canonical* sequence numbers;
- the packetized GOP cache: the frames since the last keyframe, which a new viewer (and a
  viewer that reports picture loss) is sent first, so it has a picture at once;
- the packet history: the frames of the last canonical sequence numbers, for retransmissions.

What is the viewer's own (SSRC, sequence number, timestamp, payload type) is written per
viewer by ``gateway.live.srtp_sender.ViewerSender``, which also encrypts. The fanout knows
nothing of aiortc; it holds no state outside its instance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.errors import StreamClosed
from gateway.media.hub import HubReader
from gateway.media.packet import MediaPacket
from gateway.live.rtp_payloads import Packetizer, payload_ends

logger = logging.getLogger(__name__)

#: RTP payload bytes per packet (aiortc's payloaders use the same limit): with the RTP
#: header, the SRTP tag and IPv6/UDP headers it stays under a 1280-byte path MTU.
MAX_PAYLOAD = 1200
#: Canonical packets kept for retransmission (at least): about 10 s at 2 Mbit/s.
HISTORY_PACKETS = 4096
#: A GOP longer than this many packets is not kept packetized (the hub caches up to 600 frames).
GOP_CACHE_PACKETS = 20000
#: At most one keyframe request to the camera per this many seconds, whatever the viewers say.
KEYFRAME_REQUEST_INTERVAL = 2.0


class RtpFrame:
    """One access unit as RTP payloads, shared by every viewer of the stream (read-only).

    A plain class with slots, not a dataclass: made once per camera frame, where each Python
    operation counts (``gateway.live.rtp_payloads`` says why)."""

    __slots__ = ("index", "first_seq", "pts", "keyframe", "blob", "count", "ends_at")

    def __init__(self, index: int, first_seq: int, pts: int, keyframe: bool, blob: bytes, count: int) -> None:
        #: Frames of this fanout counted from 0 (the viewers' timestamp memory is keyed by it).
        self.index = index
        #: Canonical sequence number of the first payload (grows without wrapping).
        self.first_seq = first_seq
        #: The camera's pts on the 90 kHz clock.
        self.pts = pts
        self.keyframe = keyframe
        #: The payloads and where each ends (``gateway.live.rtp_payloads``); ``count`` of them.
        self.blob = blob
        self.count = count
        self.ends_at = len(blob) - 4 * count

    def __repr__(self) -> str:
        return f"<RtpFrame {self.index} seq {self.first_seq}+{self.count}{' key' if self.keyframe else ''}>"

    @property
    def ends(self) -> memoryview:
        return payload_ends(self.blob, self.count)

    @property
    def size(self) -> int:
        """Payload bytes."""
        return self.ends[-1] if self.count else 0

    def payload(self, i: int) -> memoryview:
        ends = self.ends
        return memoryview(self.blob)[ends[i - 1] if i else 0 : ends[i]]

    @property
    def payloads(self) -> tuple[memoryview, ...]:
        return tuple(self.payload(i) for i in range(self.count))


class FanoutViewer(Protocol):
    """What the fanout needs of a viewer (``gateway.live.srtp_sender.ViewerSender``)."""

    def start(self, gop: list[RtpFrame]) -> None: ...
    def send_frame(self, frame: RtpFrame) -> None: ...
    def end(self, reason: str) -> None: ...


class PacketHistory:
    """The frames of the last ``size`` canonical packets (at least), for retransmissions.

    Kept by frame, not by packet: one append per camera frame. A lookup (a NACK, rare) finds
    the frame by binary search on the frames' first sequence numbers."""

    def __init__(self, size: int = HISTORY_PACKETS) -> None:
        self._size = size
        self._frames: deque[RtpFrame] = deque()
        self._packets = 0

    def add(self, frame: RtpFrame) -> None:
        frames = self._frames
        frames.append(frame)
        self._packets += frame.count
        while self._packets - frames[0].count >= self._size:
            self._packets -= frames.popleft().count

    def get(self, seq: int) -> tuple[memoryview, RtpFrame] | None:
        """The payload and frame of canonical packet ``seq``, or None once forgotten."""
        frames = self._frames
        if not frames or seq < frames[0].first_seq or seq >= frames[-1].first_seq + frames[-1].count:
            return None
        low, high = 0, len(frames) - 1  # the last frame that starts at or before seq
        while low < high:
            middle = (low + high + 1) // 2
            if frames[middle].first_seq <= seq:
                low = middle
            else:
                high = middle - 1
        frame = frames[low]
        if seq - frame.first_seq >= frame.count:
            return None
        return frame.payload(seq - frame.first_seq), frame


class CameraFanout:
    """One camera stream, packetized once, sent to every viewer attached to it.

    Viewers are *members* from negotiation on (they keep the fanout alive) and *receive*
    once their DTLS transport is up (``start``): the packetized GOP first, then every frame.
    The fanout ends every viewer when the stream ends or changes codec.
    """

    def __init__(
        self,
        key: tuple[str, str],
        reader: HubReader,
        codec: str,
        *,
        request_keyframe: Callable[[], Awaitable[bool]] | None = None,
        on_empty: Callable[[CameraFanout], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.label = f"camera {key[0]} ({key[1]})"
        self.codec = codec
        self._reader = reader
        self._request_keyframe = request_keyframe
        self._on_empty = on_empty
        self._clock = clock
        self.history = PacketHistory()
        self._packetizer = Packetizer(codec, MAX_PAYLOAD)
        self._gop: list[RtpFrame] = []
        self._gop_packets = 0
        self._gop_valid = False
        self._next_seq = 0
        self._next_index = 0
        self._members: set[FanoutViewer] = set()
        self._receiving: list[FanoutViewer] = []
        self._listening = False
        self._closing = False
        self._remove_listener = reader.hub.add_forget_listener(self.forget_gop)
        self._keyframe_task: asyncio.Task[None] | None = None
        self._last_keyframe_request = float("-inf")
        self.ended: str | None = None
        #: Counters for tests and the benchmark.
        self.frames = 0
        self.packets = 0
        self.keyframe_requests = 0

    def __repr__(self) -> str:
        return f"<CameraFanout {self.label} viewers={len(self._receiving)}/{len(self._members)}>"

    # -- membership -----------------------------------------------------------------------
    def join(self, viewer: FanoutViewer) -> None:
        """Count ``viewer`` as a member (it keeps the fanout open until it leaves)."""
        if self.ended is not None:
            raise StreamClosed(f"{self.label}: {self.ended}")
        self._members.add(viewer)
        if not self._listening:
            self._listening = True
            self._reader.listen(self._on_media, self._on_stream_closed)

    def start(self, viewer: FanoutViewer) -> None:
        """Begin sending to a member: the packetized GOP at once, then every new frame."""
        if self.ended is not None:
            viewer.end(self.ended)
            return
        if viewer in self._receiving:
            return
        self._receiving.append(viewer)
        viewer.start(self.cached_gop())
        if not self._gop_valid:
            self.ask_for_keyframe()

    def leave(self, viewer: FanoutViewer) -> None:
        """Stop sending to ``viewer``; the last member to leave closes the fanout."""
        self._members.discard(viewer)
        if viewer in self._receiving:
            self._receiving.remove(viewer)
        if not self._members and self.ended is None:
            self.close("no viewers left")

    @property
    def viewers(self) -> int:
        return len(self._receiving)

    # -- GOP cache --------------------------------------------------------------------------
    def cached_gop(self) -> list[RtpFrame]:
        return list(self._gop) if self._gop_valid else []

    def forget_gop(self) -> None:
        """The hub forgot its GOP (a privacy mask was added): so does the packetized cache."""
        self._gop = []
        self._gop_packets = 0
        self._gop_valid = False

    def ask_for_keyframe(self) -> None:
        """Ask the camera for a keyframe, at most once per ``KEYFRAME_REQUEST_INTERVAL``."""
        if self._request_keyframe is None or self.ended is not None:
            return
        now = self._clock()
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        if self._keyframe_task is not None and not self._keyframe_task.done():
            return
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        self._keyframe_task = asyncio.get_running_loop().create_task(
            self._keyframe_request(), name=f"keyframe request {self.label}"
        )

    async def _keyframe_request(self) -> None:
        assert self._request_keyframe is not None
        try:
            granted = await asyncio.wait_for(self._request_keyframe(), 5.0)
        except Exception as exc:  # the camera's next keyframe comes anyway, later
            logger.info("%s: asking the camera for a keyframe failed: %r", self.label, exc)
            return
        logger.info("%s: asked the camera for a keyframe for viewers (%s)", self.label, "granted" if granted else "refused")

    # -- packetizing ------------------------------------------------------------------------
    def packetize(self, media: MediaPacket) -> RtpFrame:
        """Turn one access unit into an ``RtpFrame``; update the GOP cache and history."""
        count, blob = self._packetizer.packetize(media.data)
        frame = RtpFrame(self._next_index, self._next_seq, media.pts, media.keyframe, blob, count)
        self._next_index += 1
        self._next_seq += count
        self.history.add(frame)
        if frame.keyframe:
            self._gop = [frame]
            self._gop_packets = count
            self._gop_valid = True
        elif self._gop_valid:
            self._gop_packets += count
            if self._gop_packets > GOP_CACHE_PACKETS:
                self.forget_gop()
            else:
                self._gop.append(frame)
        self.frames += 1
        self.packets += count
        return frame

    def _on_media(self, media: MediaPacket) -> None:
        """Each access unit, as the hub publishes it (on the event loop, no task switch):
        packetized once, then sent to every receiving viewer."""
        if self._closing or self.ended is not None:
            return
        try:
            if media.info.codec != self.codec:
                logger.warning("%s: stream changed from %s to %s", self.label, self.codec, media.info.codec)
                self._close_soon(f"camera stream changed to {media.info.codec}")
                return
            if not media.data:
                return
            frame = self.packetize(media)
            if frame.count:  # (an access unit of delimiters only has nothing to send)
                for viewer in self._receiving:
                    viewer.send_frame(frame)
        except Exception:
            logger.exception("%s: fan-out failed", self.label)
            self._close_soon("media sender failed")

    def _on_stream_closed(self) -> None:
        self.close("camera stream ended")

    def _close_soon(self, reason: str) -> None:
        # Not inside the hub's publish, which is going through its readers (ours among them).
        self._closing = True
        asyncio.get_running_loop().call_soon(self.close, reason)

    def close(self, reason: str) -> None:
        """End the stream for every viewer; release the hub reader. Idempotent."""
        if self.ended is not None:
            return
        self.ended = reason
        self._remove_listener()
        self._reader.close()
        members = list(self._members)
        self._members.clear()
        self._receiving.clear()
        for viewer in members:
            viewer.end(reason)
        if self._on_empty is not None:
            self._on_empty(self)


class Fanouts:
    """The open fanouts of one gateway, one per (camera, stream profile)."""

    def __init__(self) -> None:
        self._fanouts: dict[tuple[str, str], CameraFanout] = {}

    def __len__(self) -> int:
        return len(self._fanouts)

    def get(self, camera_id: str, profile: str) -> CameraFanout | None:
        return self._fanouts.get((camera_id, profile))

    def attach(
        self,
        camera_id: str,
        profile: str,
        reader: HubReader,
        codec: str,
        request_keyframe: Callable[[], Awaitable[bool]] | None = None,
    ) -> CameraFanout:
        """The fanout of this stream; ``reader`` becomes its reader if none is open, else
        it is closed (the open fanout already reads the same hub)."""
        key = (camera_id, str(profile))
        fanout = self._fanouts.get(key)
        if fanout is not None and fanout.ended is None and fanout.codec == codec and not reader.hub.closed:
            if fanout._reader.hub is reader.hub:
                reader.close()
                return fanout
            fanout.close("camera stream restarted")  # a new hub (on-demand stream restarted)
        fanout = CameraFanout(key, reader, codec, request_keyframe=request_keyframe, on_empty=self._forget)
        self._fanouts[key] = fanout
        return fanout

    def _forget(self, fanout: CameraFanout) -> None:
        if self._fanouts.get(fanout.key) is fanout:
            del self._fanouts[fanout.key]

    def close_all(self, reason: str) -> None:
        for fanout in list(self._fanouts.values()):
            fanout.close(reason)
