"""Incremental RTP depacketizer for H.264 (RFC 6184) and H.265 (RFC 7798): RTP packets in,
complete Annex B access units out.

Pure protocol code: no sockets, nothing of the app. An access unit is complete when the
packet carrying the RTP marker bit arrives (a picture is released the moment its last
packet is in, not when the next picture starts, as FFmpeg's parser does); for cameras that
never set the marker, a change of RTP timestamp completes the previous access unit. All
slices of one picture share one timestamp, so a sliced keyframe is one access unit.

Understood: single NAL unit packets, STAP-A and FU-A (H.264), AP and FU (H.265). Packets
that arrive late (sequence number behind the newest) are dropped; a gap in the sequence
drops the fragmented NAL unit it broke, and the access unit is marked damaged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.media.h26x import START_CODE
from gateway.rtsp.rtp import H264_FU_A, H264_STAP_A, HEVC_AP, HEVC_FU, parse_rtp

logger = logging.getLogger(__name__)

_WRAP = 1 << 32
_HALF = 1 << 31
#: The largest access unit we assemble. A 4K keyframe is a few MB; a camera that never ends a
#: picture (no marker, one timestamp, fragments for ever) must not grow our memory without end.
MAX_ACCESS_UNIT = 16 * 1024 * 1024


class OversizedAccessUnit(Exception):
    """A picture grew beyond ``MAX_ACCESS_UNIT`` bytes before it ended."""


@dataclass(frozen=True, slots=True)
class AccessUnit:
    data: bytes  #: Annex B
    timestamp: int  #: the RTP timestamp, unwrapped (monotonic across 2**32 wraps)
    #: A packet of it was lost: some NAL unit is missing or was dropped.
    damaged: bool = False
    #: Completed by the marker bit (False: by the next picture's timestamp, or flushed).
    marked: bool = True


class TimestampUnwrapper:
    """Extends 32-bit RTP timestamps to a monotonic integer across wraps (every 13.3 h at
    90 kHz). A camera whose clock restarts shows up as a large jump, which
    ``gateway.media.timestamps.TimestampSanitizer`` treats as a reset."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._extended = 0

    def __call__(self, timestamp: int) -> int:
        if self._last is None:
            self._extended = timestamp
        else:
            delta = (timestamp - self._last) % _WRAP
            if delta >= _HALF:
                delta -= _WRAP
            self._extended += delta
        self._last = timestamp
        return self._extended


class Depacketizer:
    """Assembles the RTP packets of one stream (one SSRC, one payload type) into access units."""

    def __init__(self, codec: str, payload_type: int | None = None) -> None:
        if codec not in ("h264", "hevc"):
            raise ValueError(f"cannot depacketize codec {codec!r}")
        self.codec = codec
        self.payload_type = payload_type
        self._unwrap = TimestampUnwrapper()
        self._nals: list[bytes] = []
        self._timestamp: int | None = None
        self._fragment: bytearray | None = None
        self._damaged = False
        self._bytes = 0  #: of the access unit in progress (an upper bound)
        self._next_seq: int | None = None
        self.packets = 0
        self.ignored = 0  #: packets of another payload type
        self.lost = 0
        self.late = 0
        self._warned: set[int] = set()

    def push(self, packet: bytes) -> list[AccessUnit]:
        """Feed one RTP packet; returns the access units it completed (zero, one or two)."""
        payload_type, marker, seq, timestamp, _ssrc, payload = parse_rtp(packet)
        if self.payload_type is not None and payload_type != self.payload_type:
            self.ignored += 1
            return []
        self.packets += 1
        if self._next_seq is not None:
            gap = (seq - self._next_seq) & 0xFFFF
            if gap >= 0x8000:  # behind the newest: a late or duplicated packet
                self.late += 1
                return []
            if gap:
                self.lost += gap
                self._fragment = None  # the NAL unit it was part of cannot be completed
                self._damaged = True
        self._next_seq = (seq + 1) & 0xFFFF
        done: list[AccessUnit] = []
        if self._timestamp is not None and timestamp != self._timestamp and (self._nals or self._fragment):
            # The camera did not mark the end of the previous picture: its timestamp ended it.
            unit = self._complete(marked=False)
            if unit is not None:
                done.append(unit)
        self._timestamp = timestamp
        self._add(payload)
        self._bytes += len(payload)
        if self._bytes > MAX_ACCESS_UNIT:
            raise OversizedAccessUnit(
                f"the camera sent a picture larger than {MAX_ACCESS_UNIT // (1024 * 1024)} MiB without ending it "
                "(no RTP marker bit, no new timestamp)"
            )
        if marker:
            unit = self._complete(marked=True)
            if unit is not None:
                done.append(unit)
        return done

    def flush(self) -> AccessUnit | None:
        """The access unit in progress, if any (at the end of a stream)."""
        return self._complete(marked=False) if self._timestamp is not None else None

    def _complete(self, *, marked: bool) -> AccessUnit | None:
        nals, self._nals = self._nals, []
        self._bytes = 0
        damaged = self._damaged or self._fragment is not None
        self._fragment = None
        self._damaged = False
        assert self._timestamp is not None
        if not nals:
            return None
        data = b"".join(START_CODE + nal for nal in nals)
        return AccessUnit(data, self._unwrap(self._timestamp), damaged, marked)

    def _add(self, payload: bytes) -> None:
        if not payload:
            return
        if self.codec == "hevc":
            if len(payload) < 2:
                return
            kind = (payload[0] >> 1) & 0x3F
            if kind == HEVC_FU:
                if len(payload) < 3:
                    return
                self._fu(payload[2], bytes([(payload[0] & 0x81) | ((payload[2] & 0x3F) << 1), payload[1]]), payload[3:])
            elif kind == HEVC_AP:
                self._aggregate(payload, 2)
            elif kind < 48:
                self._nals.append(payload)
            else:
                self._unsupported(kind)
        else:
            kind = payload[0] & 0x1F
            if kind == H264_FU_A:
                if len(payload) < 2:
                    return
                self._fu(payload[1], bytes([(payload[0] & 0xE0) | (payload[1] & 0x1F)]), payload[2:])
            elif kind == H264_STAP_A:
                self._aggregate(payload, 1)
            elif 1 <= kind <= 23:
                self._nals.append(payload)
            else:
                self._unsupported(kind)

    def _fu(self, fu_header: int, nal_header: bytes, body: bytes) -> None:
        if fu_header & 0x80:  # start
            if self._fragment is not None:
                self._damaged = True  # the previous fragmented NAL never ended
            self._fragment = bytearray(nal_header)
        elif self._fragment is None:
            self._damaged = True  # its start was lost
            return
        self._fragment += body
        if fu_header & 0x40:  # end
            self._nals.append(bytes(self._fragment))
            self._fragment = None

    def _aggregate(self, payload: bytes, header_size: int) -> None:
        i = header_size
        n = len(payload)
        while i + 2 <= n:
            size = int.from_bytes(payload[i : i + 2], "big")
            i += 2
            if size == 0 or i + size > n:
                self._damaged = True
                return
            self._nals.append(payload[i : i + size])
            i += size

    def _unsupported(self, kind: int) -> None:
        self._damaged = True
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning("rtp %s: payload structure %d is not supported; dropped", self.codec, kind)
