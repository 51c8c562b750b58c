"""RTP packetization of H.264 (RFC 6184) and H.265 (RFC 7798) access units, and SDP fmtp.

Pure protocol code: no sockets, no event loop, nothing of the app. A packetizer turns one
Annex B access unit into RTP packets (single NAL unit packets, or fragmentation units for
NAL units larger than the payload limit), with the marker bit on the last packet of the
access unit. ``depacketize`` is the inverse, for clients and tests.
"""

from __future__ import annotations

import base64
import secrets
import struct
from collections.abc import Iterable

from gateway.media.h26x import (
    H264_AUD,
    H264_PPS,
    H264_SPS,
    HEVC_AUD,
    HEVC_PPS,
    HEVC_SPS,
    HEVC_VPS,
    START_CODE,
    iter_nals,
    nal_type,
)

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
#: Payload bytes per RTP packet; keeps packets under a 1500-byte MTU with room for headers.
DEFAULT_MAX_PAYLOAD = 1400
DEFAULT_PAYLOAD_TYPE = 96

H264_FU_A = 28
H264_STAP_A = 24
HEVC_FU = 49
HEVC_AP = 48

_HEADER = struct.Struct("!BBHII")

#: The ``a=rtpmap`` encoding name of each codec we packetize.
ENCODING_NAMES = {"h264": "H264", "hevc": "H265"}


class RtpPacketizer:
    """Packetizes the access units of one stream for one receiver (one SSRC).

    Sequence number, SSRC and timestamp offset start random, as RFC 3550 asks. The RTP
    timestamp is the packet's 90 kHz ``pts`` plus the offset, modulo 2**32.
    """

    def __init__(
        self,
        codec: str,
        *,
        payload_type: int = DEFAULT_PAYLOAD_TYPE,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp_offset: int | None = None,
    ) -> None:
        if codec not in ENCODING_NAMES:
            raise ValueError(f"cannot packetize codec {codec!r}; supported: {', '.join(ENCODING_NAMES)}")
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} out of range 0..127")
        if max_payload < 16:
            raise ValueError(f"max payload {max_payload} too small")
        self.codec = codec
        self.payload_type = payload_type
        self.max_payload = max_payload
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        #: The sequence number the next packet will carry.
        self.sequence = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        self.timestamp_offset = secrets.randbits(32) if timestamp_offset is None else timestamp_offset & 0xFFFFFFFF
        self.packets_sent = 0
        self.octets_sent = 0  #: payload octets, for RTCP sender reports

    def rtp_timestamp(self, pts: int) -> int:
        return (pts + self.timestamp_offset) & 0xFFFFFFFF

    def packetize(self, data: bytes, pts: int) -> list[bytes]:
        """Return the RTP packets of one Annex B access unit, marker bit on the last one."""
        payloads = fragment_access_unit(self.codec, data, self.max_payload)
        timestamp = self.rtp_timestamp(pts)
        first_byte = RTP_VERSION << 6
        last = len(payloads) - 1
        seq = self.sequence
        packets = []
        for i, payload in enumerate(payloads):
            second_byte = self.payload_type | (0x80 if i == last else 0)
            packets.append(_HEADER.pack(first_byte, second_byte, seq, timestamp, self.ssrc) + payload)
            self.octets_sent += len(payload)
            seq = (seq + 1) & 0xFFFF
        self.sequence = seq
        self.packets_sent += len(packets)
        return packets


def fragment_access_unit(codec: str, data: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> list[bytes]:
    """Split an Annex B access unit into RTP payloads (single NAL units and FU-A / FU).

    Access unit delimiters are dropped: the marker bit delimits access units in RTP.
    """
    aud = HEVC_AUD if codec == "hevc" else H264_AUD
    payloads: list[bytes] = []
    for nal in iter_nals(data):
        if nal_type(codec, nal) == aud:
            continue
        if len(nal) <= max_payload:
            payloads.append(nal)
        elif codec == "hevc":
            payloads.extend(_fragment_hevc(nal, max_payload))
        else:
            payloads.extend(_fragment_h264(nal, max_payload))
    return payloads


def _fragment_h264(nal: bytes, max_payload: int) -> list[bytes]:
    indicator = bytes([(nal[0] & 0xE0) | H264_FU_A])
    kind = nal[0] & 0x1F
    body = memoryview(nal)[1:]
    step = max_payload - 2
    out = []
    for start in range(0, len(body), step):
        header = kind
        if start == 0:
            header |= 0x80
        if start + step >= len(body):
            header |= 0x40
        out.append(indicator + bytes([header]) + body[start : start + step])
    return out


def _fragment_hevc(nal: bytes, max_payload: int) -> list[bytes]:
    # PayloadHdr: F and LayerId high bit from the NAL header, type 49, LayerId low/TID kept.
    payload_header = bytes([(nal[0] & 0x81) | (HEVC_FU << 1), nal[1]])
    kind = (nal[0] >> 1) & 0x3F
    body = memoryview(nal)[2:]
    step = max_payload - 3
    out = []
    for start in range(0, len(body), step):
        header = kind
        if start == 0:
            header |= 0x80
        if start + step >= len(body):
            header |= 0x40
        out.append(payload_header + bytes([header]) + body[start : start + step])
    return out


# --- RTCP --------------------------------------------------------------------------------

#: Seconds between the NTP epoch (1900) and the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800
RTCP_SR = 200


def sender_report(packetizer: RtpPacketizer, *, wallclock: float, pts: int) -> bytes:
    """An RTCP sender report (RFC 3550 6.4.1) mapping ``pts`` to the wall clock ``wallclock``."""
    ntp = wallclock + NTP_UNIX_OFFSET
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack(
        "!BBHIIIIII",
        RTP_VERSION << 6,
        RTCP_SR,
        6,  # length in 32-bit words, minus one
        packetizer.ssrc,
        seconds & 0xFFFFFFFF,
        fraction,
        packetizer.rtp_timestamp(pts),
        packetizer.packets_sent & 0xFFFFFFFF,
        packetizer.octets_sent & 0xFFFFFFFF,
    )


# --- receiving side ------------------------------------------------------------------------


def parse_rtp(packet: bytes) -> tuple[int, bool, int, int, int, bytes]:
    """Return ``(payload_type, marker, sequence, timestamp, ssrc, payload)`` of an RTP packet."""
    if len(packet) < RTP_HEADER_SIZE or packet[0] >> 6 != RTP_VERSION:
        raise ValueError("not an RTP version 2 packet")
    first, second, seq, timestamp, ssrc = _HEADER.unpack_from(packet)
    offset = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if len(packet) < offset + 4:
            raise ValueError("truncated RTP header extension")
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    end = len(packet)
    if first & 0x20:  # padding
        end -= packet[-1]
    if offset > end:
        raise ValueError("truncated RTP packet")
    return second & 0x7F, bool(second & 0x80), seq, timestamp, ssrc, packet[offset:end]


def depacketize(codec: str, payloads: Iterable[bytes]) -> bytes:
    """Reassemble the RTP payloads of one access unit (in order) into Annex B.

    Understands single NAL unit packets, FU-A / FU, and STAP-A / AP aggregation packets.
    Raises ``ValueError`` on a fragment sequence that does not start or end properly.
    """
    out = bytearray()
    fragment: bytearray | None = None
    for payload in payloads:
        if not payload:
            continue
        if codec == "hevc":
            kind = (payload[0] >> 1) & 0x3F
            if kind == HEVC_FU:
                fu = payload[2]
                if fu & 0x80:
                    header = bytes([(payload[0] & 0x81) | ((fu & 0x3F) << 1), payload[1]])
                    fragment = bytearray(header)
                elif fragment is None:
                    raise ValueError("H.265 FU continuation without a start fragment")
                fragment += payload[3:]
                if fu & 0x40:
                    out += START_CODE + fragment
                    fragment = None
            elif kind == HEVC_AP:
                out += _split_aggregate(payload, 2)
            else:
                out += START_CODE + payload
        else:
            kind = payload[0] & 0x1F
            if kind == H264_FU_A:
                fu = payload[1]
                if fu & 0x80:
                    fragment = bytearray([(payload[0] & 0xE0) | (fu & 0x1F)])
                elif fragment is None:
                    raise ValueError("H.264 FU-A continuation without a start fragment")
                fragment += payload[2:]
                if fu & 0x40:
                    out += START_CODE + fragment
                    fragment = None
            elif kind == H264_STAP_A:
                out += _split_aggregate(payload, 1)
            else:
                out += START_CODE + payload
    if fragment is not None:
        raise ValueError("access unit ends inside a fragmented NAL unit")
    return bytes(out)


def _split_aggregate(payload: bytes, header_size: int) -> bytes:
    out = bytearray()
    i = header_size
    while i + 2 <= len(payload):
        size = int.from_bytes(payload[i : i + 2], "big")
        i += 2
        out += START_CODE + payload[i : i + size]
        i += size
    return bytes(out)


# --- SDP ---------------------------------------------------------------------------------


def _sets_by_type(codec: str, parameter_sets: bytes) -> dict[int, bytes]:
    sets: dict[int, bytes] = {}
    for nal in iter_nals(parameter_sets):
        sets.setdefault(nal_type(codec, nal), nal)
    return sets


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def h264_fmtp(parameter_sets: bytes) -> str:
    """``a=fmtp`` parameters for H.264: packetization-mode, profile-level-id, sprop-parameter-sets."""
    sets = _sets_by_type("h264", parameter_sets)
    params = ["packetization-mode=1"]
    sps = sets.get(H264_SPS)
    if sps is not None and len(sps) >= 4:
        params.append(f"profile-level-id={sps[1:4].hex().upper()}")
    sprops = [_b64(nal) for kind in (H264_SPS, H264_PPS) if (nal := sets.get(kind)) is not None]
    if sprops:
        params.append("sprop-parameter-sets=" + ",".join(sprops))
    return ";".join(params)


def hevc_fmtp(parameter_sets: bytes) -> str:
    """``a=fmtp`` parameters for H.265: sprop-vps, sprop-sps, sprop-pps."""
    sets = _sets_by_type("hevc", parameter_sets)
    names = ((HEVC_VPS, "sprop-vps"), (HEVC_SPS, "sprop-sps"), (HEVC_PPS, "sprop-pps"))
    return ";".join(f"{name}={_b64(sets[kind])}" for kind, name in names if kind in sets)


def fmtp(codec: str, parameter_sets: bytes) -> str:
    if codec == "hevc":
        return hevc_fmtp(parameter_sets)
    if codec == "h264":
        return h264_fmtp(parameter_sets)
    raise ValueError(f"no SDP format parameters for codec {codec!r}")


def video_media_sdp(
    codec: str, parameter_sets: bytes, *, payload_type: int = DEFAULT_PAYLOAD_TYPE, control: str = "trackID=0"
) -> list[str]:
    """The SDP lines of one video media section (``m=`` to ``a=control``)."""
    if codec not in ENCODING_NAMES:
        raise ValueError(f"no RTP payload format for codec {codec!r}")
    lines = [
        f"m=video 0 RTP/AVP {payload_type}",
        "c=IN IP4 0.0.0.0",
        f"a=rtpmap:{payload_type} {ENCODING_NAMES[codec]}/90000",
    ]
    params = fmtp(codec, parameter_sets)
    if params:
        lines.append(f"a=fmtp:{payload_type} {params}")
    lines.append(f"a=control:{control}")
    return lines
