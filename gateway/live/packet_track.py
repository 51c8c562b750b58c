"""A video track that hands aiortc the camera's encoded packets, so nothing is re-encoded.

aiortc's sender calls ``recv()``; when it gets an ``av.Packet`` (not a frame) it only
splits the Annex B access unit into NAL units and packetizes them (``H264Encoder.pack``, or
``gateway.live.hevc_rtc.HevcEncoder.pack`` for H.265),
with the RTP timestamp ``convert_timebase(pts, time_base, 1/90000)`` plus a random origin.
It adds no pacing of its own: packets leave as fast as ``recv()`` returns them, which is as
fast as the camera delivers them.
"""

from __future__ import annotations

import logging
import time

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.errors import StreamClosed
from gateway.media.hub import HubReader
from gateway.media.packet import TIME_BASE

logger = logging.getLogger(__name__)

#: RTP timestamp step (90 kHz ticks, 1 ms) between the packets of the start-up burst.
BURST_STEP = 90


class PacketTrack(MediaStreamTrack):
    """Forwards the access units of one hub reader, in ``codec``, as ``av.Packet``s.

    The reader starts at the hub's cached keyframe, so the first ``recv()`` returns at once
    with a decodable picture. The packets already queued at that moment (the cached GOP and
    whatever arrived while the peer connected) are old: sent with their real timestamps, a
    browser would play them at their original pace and stay that far behind live for good.
    Their timestamps are therefore squeezed to 1 ms apart, so the viewer decodes them at
    once and shows the live picture; from the first live packet on, timestamps advance by
    the camera's own spacing.
    """

    kind = "video"

    def __init__(self, reader: HubReader, label: str, codec: str = "h264") -> None:
        super().__init__()
        self._reader = reader
        self._codec = codec
        self._label = label
        self._burst_left: int | None = None
        self._last_pts = 0
        self._out_pts = 0
        #: ``time.time()`` when the last packet was handed to the sender (0 before the first).
        self.last_delivered = 0.0
        self.delivered = 0
        #: Why the track ended on its own (camera side), or None.
        self.end_reason: str | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            media = await self._reader.recv()
        except StreamClosed:
            self._end("camera stream ended")
            raise MediaStreamError from None
        if media.info.codec != self._codec:
            logger.warning("%s: stream changed from %s to %s", self._label, self._codec, media.info.codec)
            self._end(f"camera stream changed to {media.info.codec}")
            raise MediaStreamError
        if self._burst_left is None:
            self._burst_left = self._reader.pending()
            self._out_pts = 0
        elif self._burst_left > 0:
            self._burst_left -= 1
            self._out_pts += BURST_STEP
        else:
            self._out_pts += max(media.pts - self._last_pts, 1)
        self._last_pts = media.pts

        packet = av.Packet(media.data)
        packet.pts = packet.dts = self._out_pts
        packet.time_base = TIME_BASE
        packet.is_keyframe = media.keyframe
        self.delivered += 1
        self.last_delivered = time.time()
        return packet

    def _end(self, reason: str) -> None:
        if self.end_reason is None and self.readyState == "live":
            self.end_reason = reason
        self.stop()

    def stop(self) -> None:
        """End the track and release the hub reader. Idempotent."""
        super().stop()
        self._reader.close()
