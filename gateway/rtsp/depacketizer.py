"""Incremental RTP depacketizer for H.264 (RFC 6184) and H.265 (RFC 7798): RTP packets in,
complete Annex B access units out.

Pure protocol code: no sockets, nothing of the app. An access unit is complete when the
packet carrying the RTP marker bit arrives (a picture is released the moment its last
packet is in, not when the next picture starts, as FFmpeg's parser does); for cameras that
never set the marker, a change of RTP timestamp completes the previous access unit. All
slices of one picture share one timestamp, so a sliced keyframe is one access unit.

Understood: single NAL unit packets, STAP-A and FU-A (H.264), AP and FU (H.265), and H.264's
interleaved mode (packetization-mode=2: STAP-B, MTAP16, MTAP24, FU-B), whose NAL units are put
back in decoding order by their DON (RFC 6184 5.5 and 13: a deinterleaving buffer of
``sprop-interleaving-depth`` VCL NAL units), and H.265 with DONL/DOND fields
(``sprop-max-don-diff`` > 0, RFC 7798 6: a buffer of ``sprop-depack-buf-nalus`` NAL units);
such an access unit completes when the next one starts in decoding order. Packets that arrive late (sequence number a little behind
the newest) are dropped: over UDP, ``gateway.rtsp.reorder.ReorderBuffer`` puts them in order
first. A gap in the sequence drops the fragmented NAL unit it broke, and the access unit is
marked damaged. A new SSRC, or a sequence number far behind (a camera that restarted its
sender), starts over.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass

from gateway.media.h26x import START_CODE
from gateway.rtsp.reorder import MAX_MISORDER, seq_delta
from gateway.rtsp.rtp import H264_FU_A, H264_STAP_A, HEVC_AP, HEVC_FU, parse_rtp

logger = logging.getLogger(__name__)

_WRAP = 1 << 32
_HALF = 1 << 31
#: The largest access unit we assemble. A 4K keyframe is a few MB; a camera that never ends a
#: picture (no marker, one timestamp, fragments for ever) must not grow our memory without end.
MAX_ACCESS_UNIT = 16 * 1024 * 1024
#: H.264 interleaved mode (RFC 6184): packets that carry a decoding order number (DON).
H264_STAP_B = 25
H264_MTAP16 = 26
H264_MTAP24 = 27
H264_FU_B = 29
_INTERLEAVED = (H264_STAP_B, H264_MTAP16, H264_MTAP24, H264_FU_B)
#: The deinterleaving depth assumed when the SDP gives none, and the largest one we accept.
DEFAULT_INTERLEAVING_DEPTH = 8
MAX_INTERLEAVING_DEPTH = 64
#: NAL units (of any kind) the deinterleaving buffer holds at most, whatever the depth says.
MAX_DEINTERLEAVE = 1024


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
    """Assembles the RTP packets of one stream (one SSRC, one payload type) into access units.

    ``interleaved``: the SDP says ``packetization-mode=2`` (H.264; a stream that sends STAP-B,
    MTAP or FU-B switches to it by itself) or ``sprop-max-don-diff`` > 0 (H.265: every packet
    carries DONL/DOND fields); ``interleaving_depth``: its ``sprop-interleaving-depth`` (H.264,
    VCL NAL units) or ``sprop-depack-buf-nalus`` (H.265, NAL units).
    """

    def __init__(
        self, codec: str, payload_type: int | None = None, *, interleaved: bool = False, interleaving_depth: int | None = None
    ) -> None:
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
        self._ssrc: int | None = None
        self.packets = 0
        self.ignored = 0  #: packets of another payload type
        self.lost = 0
        self.late = 0
        self.resyncs = 0  #: new SSRC or sequence (the camera restarted its sender)
        self._warned: set[int] = set()
        # interleaved mode (H.264 packetization-mode=2)
        self.interleaved = False
        depth = DEFAULT_INTERLEAVING_DEPTH if interleaving_depth is None else interleaving_depth
        self.interleaving_depth = max(0, min(depth, MAX_INTERLEAVING_DEPTH))
        self._heap: list[tuple[int, int, int, bytes]] = []  #: (extended DON, arrival, timestamp, NAL)
        self._arrivals = 0
        self._vcl = 0  #: VCL NAL units in the heap
        self._heap_bytes = 0
        self._don: int | None = None  #: the newest DON received, extended
        self._don_out: int | None = None  #: the DON last handed on, extended
        self._ifragment: tuple[int, int, bytearray] | None = None  #: (DON, timestamp, NAL so far)
        self.late_nals = 0  #: NAL units whose place in decoding order had passed
        if interleaved:
            self._start_interleaving()

    def push(self, packet: bytes) -> list[AccessUnit]:
        """Feed one RTP packet; returns the access units it completed (zero, one or two)."""
        payload_type, marker, seq, timestamp, ssrc, payload = parse_rtp(packet)
        if self.payload_type is not None and payload_type != self.payload_type:
            self.ignored += 1
            return []
        self.packets += 1
        done: list[AccessUnit] = []
        if self._next_seq is not None:
            delta = seq_delta(seq, self._next_seq)
            if ssrc != self._ssrc or delta < -MAX_MISORDER:
                # A new sender (SSRC) or a sequence restarted far behind ours: the camera
                # restarted its encoder or sender. What was in progress cannot complete.
                self.resyncs += 1
                logger.info("rtp %s: the sequence restarted at %d (ssrc %08x)", self.codec, seq, ssrc)
                done += self._restart()
            elif delta < 0:  # behind the newest: a late or duplicated packet
                self.late += 1
                return []
            elif delta:
                self.lost += delta
                self._fragment = None  # the NAL unit it was part of cannot be completed
                self._ifragment = None
                self._damaged = True
        self._next_seq = (seq + 1) & 0xFFFF
        self._ssrc = ssrc
        if self.codec == "h264" and not self.interleaved and payload and payload[0] & 0x1F in _INTERLEAVED:
            logger.info("rtp h264: the camera sends interleaved packets (packetization-mode=2); ordering by DON")
            if self._nals or self._fragment:
                unit = self._complete(marked=False)
                if unit is not None:
                    done.append(unit)
            self._start_interleaving()
        if self.interleaved:
            self._add_interleaved(payload, timestamp)
            done += self._deinterleave(flush=False)
            return done
        if self._timestamp is not None and timestamp != self._timestamp and (self._nals or self._fragment):
            # The camera did not mark the end of the previous picture: its timestamp ended it.
            unit = self._complete(marked=False)
            if unit is not None:
                done.append(unit)
        self._timestamp = timestamp
        self._add(payload)
        self._grew(len(payload))
        if marker:
            unit = self._complete(marked=True)
            if unit is not None:
                done.append(unit)
        return done

    def flush(self) -> AccessUnit | None:
        """The access unit in progress, if any (at the end of a stream). In interleaved mode,
        more may wait for their turn: ``flush_all``."""
        units = self.flush_all()
        assert len(units) <= 1 or self.interleaved
        return units[-1] if units else None

    def flush_all(self) -> list[AccessUnit]:
        """Every access unit still in progress or waiting, in decoding order."""
        units = self._deinterleave(flush=True) if self.interleaved else []
        unit = self._complete(marked=False) if self._timestamp is not None else None
        return units + ([unit] if unit is not None else [])

    def _grew(self, size: int) -> None:
        self._bytes += size
        if self._bytes > MAX_ACCESS_UNIT:
            raise OversizedAccessUnit(
                f"the camera sent a picture larger than {MAX_ACCESS_UNIT // (1024 * 1024)} MiB without ending it "
                "(no RTP marker bit, no new timestamp)"
            )

    def _restart(self) -> list[AccessUnit]:
        """A new sequence: hand on what is complete in decoding order, drop the rest."""
        done: list[AccessUnit] = []
        if self.interleaved:
            done += self._deinterleave(flush=True)
            self._don = self._don_out = None
        self._fragment = None
        self._ifragment = None
        if self._nals:
            self._damaged = True
            unit = self._complete(marked=False)
            if unit is not None:
                done.append(unit)
        self._timestamp = None
        return done

    def _complete(self, *, marked: bool) -> AccessUnit | None:
        nals, self._nals = self._nals, []
        self._bytes = 0
        damaged = self._damaged or self._fragment is not None
        self._fragment = None
        self._damaged = False
        if not nals or self._timestamp is None:
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

    # -- interleaved mode (RFC 6184, packetization-mode=2) ---------------------------------------
    def _start_interleaving(self) -> None:
        self.interleaved = True
        self._timestamp = None

    def _extend_don(self, don: int) -> int:
        """The DON on a line that does not wrap (RFC 6184's don_diff against the newest)."""
        ext = don if self._don is None else self._don + seq_delta(don, self._don & 0xFFFF)
        self._don = ext
        return ext

    def _next_don(self) -> int:
        """A NAL unit that carries no DON (not allowed in mode 2): right after the newest."""
        return self._extend_don(((self._don if self._don is not None else -1) + 1) & 0xFFFF)

    def _add_donl(self, payload: bytes, timestamp: int) -> None:
        """H.265 with decoding order numbers (RFC 7798 4.4): DONL after the payload header of a
        single NAL unit, a fragmentation unit's start and an aggregation packet's first NAL
        unit; DOND (DON minus the previous one's, minus 1) before the others of an AP."""
        n = len(payload)
        if n < 4:
            self._damaged = True
            return
        kind = (payload[0] >> 1) & 0x3F
        if kind == HEVC_AP:
            i = 2
            don: int | None = None
            while i < n:
                if don is None:
                    if i + 2 > n:
                        break
                    don = int.from_bytes(payload[i : i + 2], "big")
                    i += 2
                else:
                    don = (don + payload[i] + 1) & 0xFFFF
                    i += 1
                if i + 2 > n:
                    self._damaged = True
                    return
                size = int.from_bytes(payload[i : i + 2], "big")
                i += 2
                if size < 2 or i + size > n:
                    self._damaged = True
                    return
                self._hold(self._extend_don(don), timestamp, payload[i : i + size])
                i += size
        elif kind == HEVC_FU:
            fu = payload[2]
            header = bytes([(payload[0] & 0x81) | ((fu & 0x3F) << 1), payload[1]])
            if fu & 0x80:
                if n < 5:
                    self._damaged = True
                    return
                if self._ifragment is not None:
                    self._damaged = True
                self._ifragment = (self._extend_don(int.from_bytes(payload[3:5], "big")), timestamp, bytearray(header))
                body = payload[5:]
            elif self._ifragment is None:
                self._damaged = True  # its start was lost
                return
            else:
                body = payload[3:]
            self._continue_fragment(body, last=bool(fu & 0x40))
        elif kind < 48:
            self._hold(self._extend_don(int.from_bytes(payload[2:4], "big")), timestamp, payload[:2] + payload[4:])
        else:
            self._unsupported(kind)

    def _continue_fragment(self, body: bytes, *, last: bool) -> None:
        """Add ``body`` to the fragmented NAL unit begun (H.264 FU-B, H.265 FU with DONL);
        held for decoding order once its ``last`` fragment came."""
        assert self._ifragment is not None
        don, ts, fragment = self._ifragment
        fragment += body
        if len(fragment) > MAX_ACCESS_UNIT:
            raise OversizedAccessUnit(
                f"the camera sent a NAL unit larger than {MAX_ACCESS_UNIT // (1024 * 1024)} MiB without ending it"
            )
        if last:
            self._ifragment = None
            self._hold(don, ts, bytes(fragment))

    def _add_interleaved(self, payload: bytes, timestamp: int) -> None:
        if not payload:
            return
        if self.codec == "hevc":
            self._add_donl(payload, timestamp)
            return
        kind = payload[0] & 0x1F
        n = len(payload)
        if kind == H264_STAP_B:  # NAL header, DON, then (size, NAL) ...; DONs follow one by one
            if n < 3:
                self._damaged = True
                return
            don = int.from_bytes(payload[1:3], "big")
            i = 3
            while i + 2 <= n:
                size = int.from_bytes(payload[i : i + 2], "big")
                i += 2
                if size == 0 or i + size > n:
                    self._damaged = True
                    return
                self._hold(self._extend_don(don), timestamp, payload[i : i + size])
                don = (don + 1) & 0xFFFF
                i += size
        elif kind in (H264_MTAP16, H264_MTAP24):  # NAL header, DONB, then (size, DOND, TS offset, NAL) ...
            if n < 3:
                self._damaged = True
                return
            donb = int.from_bytes(payload[1:3], "big")
            offset_size = 2 if kind == H264_MTAP16 else 3
            i = 3
            while i + 3 + offset_size <= n:
                size = int.from_bytes(payload[i : i + 2], "big")
                dond = payload[i + 2]
                ts_offset = int.from_bytes(payload[i + 3 : i + 3 + offset_size], "big")
                i += 3 + offset_size
                nal_size = size - 1 - offset_size  # the size counts DOND and the offset too
                if nal_size <= 0 or i + nal_size > n:
                    self._damaged = True
                    return
                self._hold(self._extend_don((donb + dond) & 0xFFFF), (timestamp + ts_offset) & 0xFFFFFFFF, payload[i : i + nal_size])
                i += nal_size
        elif kind in (H264_FU_B, H264_FU_A):
            if n < 2 or (kind == H264_FU_B and n < 4):
                self._damaged = True
                return
            fu = payload[1]
            if fu & 0x80:  # start: FU-B carries the DON (an FU-A start is not allowed in mode 2)
                if self._ifragment is not None:
                    self._damaged = True
                don = self._extend_don(int.from_bytes(payload[2:4], "big")) if kind == H264_FU_B else self._next_don()
                body = payload[4:] if kind == H264_FU_B else payload[2:]
                self._ifragment = (don, timestamp, bytearray([(payload[0] & 0xE0) | (fu & 0x1F)]))
            elif self._ifragment is None or kind == H264_FU_B:
                self._damaged = True  # its start was lost (FU-B must start a NAL unit)
                return
            else:
                body = payload[2:]
            self._continue_fragment(body, last=bool(fu & 0x40))
        elif kind == H264_STAP_A:
            i = 1
            while i + 2 <= n:
                size = int.from_bytes(payload[i : i + 2], "big")
                i += 2
                if size == 0 or i + size > n:
                    self._damaged = True
                    return
                self._hold(self._next_don(), timestamp, payload[i : i + size])
                i += size
        elif 1 <= kind <= 23:
            self._hold(self._next_don(), timestamp, payload)
        else:
            self._unsupported(kind)

    def _hold(self, don: int, timestamp: int, nal: bytes) -> None:
        if self._don_out is not None and don < self._don_out:
            self.late_nals += 1  # its turn in decoding order has passed: the decoder cannot use it
            self._damaged = True
            return
        self._arrivals += 1
        heapq.heappush(self._heap, (don, self._arrivals, timestamp, nal))
        self._heap_bytes += len(nal)
        if self._counted(nal):
            self._vcl += 1

    def _counted(self, nal: bytes) -> bool:
        """Counts against the depth: H.264's VCL NAL units; every NAL unit of H.265."""
        return self.codec == "hevc" or 1 <= nal[0] & 0x1F <= 5

    def _deinterleave(self, *, flush: bool) -> list[AccessUnit]:
        """Hand NAL units on in DON order while more VCL NAL units wait than the depth."""
        done: list[AccessUnit] = []
        heap = self._heap
        while heap and (
            flush or self._vcl > self.interleaving_depth or len(heap) > MAX_DEINTERLEAVE or self._heap_bytes > MAX_ACCESS_UNIT
        ):
            don, _, timestamp, nal = heapq.heappop(heap)
            self._heap_bytes -= len(nal)
            if self._counted(nal):
                self._vcl -= 1
            self._don_out = don
            if self._timestamp is not None and timestamp != self._timestamp and self._nals:
                unit = self._complete(marked=False)  # the next picture in decoding order began
                if unit is not None:
                    done.append(unit)
            self._timestamp = timestamp
            self._nals.append(nal)
            self._grew(len(nal))
        return done
