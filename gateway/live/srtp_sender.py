"""One WebRTC viewer's end of the fan-out: header rewrite, SRTP in C, RTCP.

aiortc negotiates (SDP, ICE, DTLS) as for any peer; the transceiver's ``RTCRtpSender``
never runs. ``take_over(sender, viewer)`` replaces its ``send``, which aiortc calls once
DTLS is connected with the negotiated parameters (payload types, RTX, CNAME): from there
this module sends. Per packet it only writes the viewer's own 12-byte RTP header (payload
type, marker, sequence number, timestamp, SSRC) before the shared payload of
``gateway.live.rtp_fanout`` in a C buffer, where the DTLS transport's SRTP context protects
it in place (libsrtp), and hands each access unit's packets to the ICE pair's UDP socket in
one ``sendmmsg`` (``gateway.live.srtp_out``) — no coroutine per packet, no ``RtpPacket``
objects, one system call per frame, and where the C sender was built one call into C per
viewer and frame, without the GIL. A full socket buffer drops the packet (the viewer's NACK
brings it back); nothing waits.

RTCP from the viewer reaches ``_handle_rtcp_packet`` through aiortc's router (we register
under the sender's SSRC): receiver reports feed the watchdog, NACK retransmits from the
camera's packet history (as RTX when negotiated, RFC 4588), PLI and FIR resend the
packetized GOP (or ask the camera for a keyframe when none is cached), REMB and transport-cc
feedback are read and counted but never slow a camera stream down (we cannot re-encode it).
Sender reports go out about once a second.

The aiortc internals this relies on are checked by ``find_datagram_path`` and the tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc.clock import current_ntp_time
from aiortc.codecs import is_rtx
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    unpack_remb_fci,
)

from gateway.live.playout_delay import BLOCK_BYTES as PLAYOUT_DELAY_BYTES
from gateway.live.playout_delay import extension_block
from gateway.live.rtp_fanout import MAX_PAYLOAD, CameraFanout, RtpFrame
from gateway.live.srtp_out import CAPACITY as SRTP_CAPACITY
from gateway.live.srtp_out import NativeSrtpOut, SrtpError, SrtpOut, open_srtp_out

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_RTX_OSN = struct.Struct("!H")
_RTP_HEADER_BYTES = _HEADER.size
if MAX_PAYLOAD + _RTP_HEADER_BYTES + PLAYOUT_DELAY_BYTES + _RTX_OSN.size > SRTP_CAPACITY:
    raise ImportError("the largest RTP packet (an RTX header and extension before the largest payload) must fit the SRTP buffer")
#: RTP timestamp step (90 kHz ticks, 1 ms) between the frames of a GOP burst: old pictures
#: are decoded at once instead of being played at their original pace, behind live.
BURST_STEP = 90
#: Bytes of a burst sent before the viewer's burst pauses for the loop (and the network).
BURST_CHUNK = 16_000
BURST_PAUSE = 0.002
#: Frames that may wait behind a burst before the viewer is restarted at the next GOP.
BACKLOG_FRAMES = 1000
FRAME_RING = 256
#: A picture-loss report this soon after a burst began is about the burst itself.
PLI_HOLDOFF = 1.0
#: transport-cc feedback (RFC 8888 draft): read, counted, never acted on.
RTCP_RTPFB_TWCC = 15


class DatagramPath:
    """The viewer's UDP socket (a duplicate of aioice's) and the nominated remote address."""

    def __init__(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        self.socket = sock
        self.address = address

    def close(self) -> None:
        self.socket.close()


def find_datagram_path(dtls: RTCDtlsTransport) -> DatagramPath:
    """The socket and address aioice sends this peer's media on (its nominated pair).

    Raises ``RuntimeError`` naming what is missing if aiortc/aioice changed shape."""
    connection = getattr(dtls.transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    pair = nominated.get(1) if isinstance(nominated, dict) else None
    transport = getattr(getattr(pair, "protocol", None), "transport", None)
    address = getattr(pair, "remote_addr", None)
    if transport is None or address is None:
        raise RuntimeError(
            "aiortc/aioice changed shape: no nominated candidate pair with a datagram transport "
            "(RTCIceTransport._connection._nominated[1].protocol.transport, .remote_addr)"
        )
    if transport.get_extra_info("peername") is not None:
        raise RuntimeError("aioice's media socket is connected; expected an unconnected UDP socket")
    raw = transport.get_extra_info("socket")
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    sock.setblocking(False)
    return DatagramPath(sock, address)


class ViewerSender:
    """Sends one fanout's frames to one viewer; answers the viewer's RTCP."""

    def __init__(
        self,
        fanout: CameraFanout,
        label: str,
        *,
        ssrc: int,
        rtx_ssrc: int,
        on_end: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fanout = fanout
        self.label = label
        #: aiortc's router finds RTCP recipients by this attribute.
        self._ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self._on_end = on_end
        self._clock = clock
        self.payload_type = 0
        self.rtx_payload_type: int | None = None
        self.cname = ""
        #: Ask the browser to show pictures at once (playout-delay 0/0) when it negotiated it.
        self.zero_playout_delay = True
        #: The RTP header extension block written after every header (b"": none).
        self.extension = b""
        self._dtls: RTCDtlsTransport | None = None
        self._path: DatagramPath | None = None
        self._out: SrtpOut | NativeSrtpOut | None = None
        self._send_frame: Callable[..., int] | None = None  # the out's send_frame (C, or Python)
        self._extension_length = 0
        self._seq = random.getrandbits(16) % 32768  # lower half: no early wrap (as aiortc)
        self._rtx_seq = random.getrandbits(16) % 32768
        self._last_ts = random.getrandbits(32)
        self._last_pts: int | None = None
        self._ts_offset: int | None = None
        self._frame_ts: list[tuple[int, int]] = [(-1, 0)] * FRAME_RING
        self._state = "idle"  # idle → burst | waiting → live; ended
        self._backlog: deque[RtpFrame] = deque()
        self._burst_task: asyncio.Task[None] | None = None
        self._burst_started = float("-inf")
        self._sr_task: asyncio.Task[None] | None = None
        # -- counters and times the session's watchdog and the tests read --------------------
        #: ``time.time()`` of the last packet sent, of the last receiver report (0: none yet).
        self.last_sent = 0.0
        self.last_report = 0.0
        self.frames_sent = 0
        self._final_counts = (0, 0)  # packets and octets sent, once the out is closed
        self.dropped = 0
        self.retransmitted = 0
        self.nacks = 0
        self.plis = 0
        self.bursts = 0
        self.remb_bitrate: int | None = None
        self.twcc_reports = 0
        self.fraction_lost = 0
        self.rtt: float | None = None
        self._lsr: int | None = None
        self._lsr_time = 0.0

    def __repr__(self) -> str:
        return f"<ViewerSender {self.label} {self._state}>"

    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def state(self) -> str:
        return self._state

    @property
    def packets_sent(self) -> int:
        """The frames' RTP packets sent (retransmissions not counted), for sender reports."""
        return self._out.packets if self._out is not None else self._final_counts[0]

    @property
    def octets_sent(self) -> int:
        """Their payload octets."""
        return self._out.octets if self._out is not None else self._final_counts[1]

    # -- aiortc hand-over ---------------------------------------------------------------
    async def begin(self, dtls: RTCDtlsTransport, parameters: RTCRtpSendParameters) -> None:
        """DTLS is connected: take the negotiated parameters and start receiving the fanout."""
        if self._state != "idle":
            return
        codec = parameters.codecs[0]
        self.payload_type = codec.payloadType
        for candidate in parameters.codecs:
            if is_rtx(candidate) and candidate.parameters.get("apt") == codec.payloadType:
                self.rtx_payload_type = candidate.payloadType
                break
        self.cname = parameters.rtcp.cname or ""
        self.extension = extension_block(parameters) if self.zero_playout_delay else b""
        self._dtls = dtls
        try:
            self._path = find_datagram_path(dtls)
            self._out = open_srtp_out(dtls._tx_srtp, self._path.socket, self._path.address)
            self._send_frame = self._out.send_frame
            self._extension_length = len(self.extension)
        except (RuntimeError, OSError) as exc:
            logger.error("%s: cannot send: %s", self.label, exc)
            self.end(f"media sender failed: {exc}")
            return
        dtls._register_rtp_sender(self, parameters)  # type: ignore[arg-type]
        self._sr_task = asyncio.get_running_loop().create_task(self._send_reports(), name=f"rtcp {self.label}")
        logger.debug("%s: sending %s pt %d rtx %s", self.label, codec.mimeType, self.payload_type, self.rtx_payload_type)
        self.fanout.start(self)

    # -- from the fanout ----------------------------------------------------------------
    def start(self, gop: list[RtpFrame]) -> None:
        if gop:
            self._begin_burst(gop)
        else:
            self._state = "waiting"

    def send_frame(self, frame: RtpFrame) -> None:
        state = self._state
        if state == "live":
            offset = self._ts_offset
            self._send(frame, frame.pts + offset if offset is not None else self._live_ts(frame))
        elif state == "burst":
            self._backlog.append(frame)
            if len(self._backlog) > BACKLOG_FRAMES:
                logger.warning("%s: fell %d frames behind during a burst; restarting at the next keyframe",
                               self.label, len(self._backlog))
                self._stop_burst()
                self._state = "waiting"
        elif state == "waiting" and frame.keyframe:
            self._state = "live"
            self._ts_offset = None
            self._send(frame, self._live_ts(frame))

    def end(self, reason: str) -> None:
        """The fanout ended (camera stream gone or changed): end the session."""
        if self._state == "ended":
            return
        self.close()
        self._on_end(reason)

    def close(self) -> None:
        """Stop sending; leave the fanout and the transport. Idempotent."""
        if self._state == "ended":
            return
        self._state = "ended"
        self._stop_burst()
        if self._sr_task is not None:
            self._sr_task.cancel()
            self._sr_task = None
        if self._dtls is not None:
            self._send_rtcp(bytes(RtcpByePacket(sources=[self._ssrc])))
            self._dtls._unregister_rtp_sender(self)  # type: ignore[arg-type]
        if self._out is not None:
            self._final_counts = (self._out.packets, self._out.octets)
        self._out = self._send_frame = None
        if self._path is not None:
            self._path.close()
            self._path = None
        self.fanout.leave(self)

    # -- sending --------------------------------------------------------------------------
    def _live_ts(self, frame: RtpFrame) -> int:
        if self._ts_offset is None:
            step = BURST_STEP if self._last_pts is None else max(frame.pts - self._last_pts, 1)
            self._ts_offset = self._last_ts + step - frame.pts
        return frame.pts + self._ts_offset

    def _send(self, frame: RtpFrame, ts: int) -> None:
        """The per-viewer hot path: the frame's packets behind this viewer's headers,
        SRTP-protected and sent in one call (in C where it was built: ``srtp_out``). Kept to
        a few Python operations: it runs once per viewer and camera frame."""
        send = self._send_frame
        if send is None:
            return
        ts &= 0xFFFFFFFF
        result = send(frame.blob, frame.ends_at, frame.count, frame.first_seq, self.payload_type, self._ssrc, ts,
                      self._seq, self.extension, self._extension_length)
        if result >= 0:
            self._seq = result & 0xFFFF
            if result > 0xFFFF:
                self.dropped += result >> 16
        else:
            error = self._out.error(result)  # type: ignore[union-attr]  (set with _send_frame)
            if isinstance(error, ValueError):
                raise error
            logger.debug("%s: send failed: %r", self.label, error)  # the watchdog ends the session
            self.dropped += frame.count
            self._seq = (self._seq + frame.count) & 0xFFFF
        self._frame_ts[frame.index % FRAME_RING] = (frame.index, ts)
        self._last_ts = ts
        self._last_pts = frame.pts
        self.last_sent = time.time()
        self.frames_sent += 1

    def _begin_burst(self, gop: list[RtpFrame]) -> None:
        self._stop_burst()
        self._state = "burst"
        self.bursts += 1
        self._burst_started = self._clock()
        self._backlog = deque(gop)
        self._burst_task = asyncio.get_running_loop().create_task(self._burst(), name=f"burst {self.label}")

    def _stop_burst(self) -> None:
        task, self._burst_task = self._burst_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._backlog.clear()

    async def _burst(self) -> None:
        """Send the cached GOP 1 ms apart in RTP time, paced in chunks, then whatever came
        meanwhile at the camera's own spacing; then go live."""
        backlog = self._backlog
        gop_left = len(backlog)
        budget = BURST_CHUNK
        while backlog and self._state == "burst":
            frame = backlog.popleft()
            if gop_left > 0:
                gop_left -= 1
                self._send(frame, self._last_ts + BURST_STEP)
                self._ts_offset = None
            else:
                self._send(frame, self._live_ts(frame))
            budget -= len(frame.blob)
            if budget <= 0 and backlog:
                budget = BURST_CHUNK
                await asyncio.sleep(BURST_PAUSE)
        if self._state == "burst":
            self._state = "live"
            self._burst_task = None

    def _send_rtcp(self, data: bytes) -> None:
        if self._dtls is None or self._path is None or self._dtls.state != "connected":
            return
        try:
            self._path.socket.sendto(self._dtls._tx_srtp.protect_rtcp(data), self._path.address)
        except OSError:
            pass

    async def _send_reports(self) -> None:
        """An RTCP sender report with SDES CNAME every 0.5-1.5 s (RFC 3550 6.2)."""
        while True:
            await asyncio.sleep(0.5 + random.random())
            if self.packets_sent == 0:
                continue
            ntp = current_ntp_time()
            rtp_ts = (self._last_ts + int((time.time() - self.last_sent) * 90000)) & 0xFFFFFFFF
            report = RtcpSrPacket(
                ssrc=self._ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp,
                    rtp_timestamp=rtp_ts,
                    packet_count=self.packets_sent & 0xFFFFFFFF,
                    octet_count=self.octets_sent & 0xFFFFFFFF,
                ),
            )
            self._lsr = (ntp >> 16) & 0xFFFFFFFF
            self._lsr_time = time.time()
            sdes = RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=self._ssrc, items=[(1, self.cname.encode())])])
            self._send_rtcp(bytes(report) + bytes(sdes))

    # -- RTCP from the viewer -------------------------------------------------------------
    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc != self._ssrc:
                    continue
                self.last_report = time.time()
                self.fraction_lost = report.fraction_lost
                if self._lsr is not None and report.lsr == self._lsr and report.dlsr:
                    self.rtt = time.time() - self._lsr_time - report.dlsr / 65536
        elif isinstance(packet, RtcpRtpfbPacket):
            if packet.fmt == RTCP_RTPFB_NACK:
                self.nacks += 1
                for seq in packet.lost:
                    self.retransmit(seq)
            elif packet.fmt == RTCP_RTPFB_TWCC:
                self.twcc_reports += 1
        elif isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self.picture_lost()
            elif packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    return
                if self._ssrc in ssrcs:
                    self.remb_bitrate = bitrate  # read, never obeyed: a camera stream cannot slow down

    def retransmit(self, seq: int) -> bool:
        """Send wire packet ``seq`` again from the camera's history; False if forgotten."""
        out = self._out
        canon = out.canon_of(seq) if out is not None else -1
        if canon < 0:
            return False
        entry = self.fanout.history.get(canon)
        if entry is None:
            return False
        payload, frame = entry
        index, ts = self._frame_ts[frame.index % FRAME_RING]
        if index != frame.index:
            return False
        marker = 0x80 if canon == frame.first_seq + frame.count - 1 else 0
        first = 0x90 if self.extension else 0x80
        if self.rtx_payload_type is not None:
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            head = _HEADER.pack(first, self.rtx_payload_type | marker, self._rtx_seq, ts & 0xFFFFFFFF, self.rtx_ssrc)
            head += self.extension + _RTX_OSN.pack(seq)
        else:
            head = _HEADER.pack(first, self.payload_type | marker, seq, ts & 0xFFFFFFFF, self._ssrc) + self.extension
        try:
            if not out.send_packet(head, payload):
                return False
        except (OSError, SrtpError):
            return False
        self.retransmitted += 1
        return True

    def picture_lost(self) -> None:
        """PLI or FIR: resend the packetized GOP, or ask the camera for a keyframe."""
        self.plis += 1
        if self._state in ("burst", "idle", "ended") or self._clock() - self._burst_started < PLI_HOLDOFF:
            return
        gop = self.fanout.cached_gop()
        if gop:
            logger.debug("%s: picture loss; resending the cached GOP (%d frames)", self.label, len(gop))
            self._begin_burst(gop)
        else:
            self.fanout.ask_for_keyframe()


def take_over(sender: RTCRtpSender, viewer: ViewerSender) -> None:
    """Make aiortc's ``sender`` hand its negotiated parameters to ``viewer`` instead of
    starting its own RTP and RTCP loops (it then never sends anything)."""
    transport = sender.transport

    async def send(parameters: RTCRtpSendParameters) -> None:
        await viewer.begin(transport, parameters)

    sender.send = send  # type: ignore[method-assign]
