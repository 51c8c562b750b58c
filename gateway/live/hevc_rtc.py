"""H.265 for aiortc: codec registration, an RFC 7798 payloader and a depayloader/decoder.

aiortc 1.16 knows VP8 and H.264 only, and has no public way to add a codec. ``install()``
adds ``video/H265`` (clock rate 90000, with RTX, no fmtp) to aiortc's codec table and wraps
the three functions aiortc uses to turn a negotiated codec into code:

- ``get_encoder``: the sender's payloader; ours packs Annex B access units (``av.Packet``s)
  into single NAL unit / FU packets. The gateway's own viewers do not use it (the fan-out,
  ``gateway.live.rtp_fanout``, packetizes once per camera with the same fragmentation); it
  is there for any aiortc sender of H.265. It cannot encode frames: the gateway never
  re-encodes.
- ``get_decoder``: the receiver's decoder (PyAV's ``hevc``), for aiortc viewers (tests).
- ``depayload``: the receiver's per-packet depayloader (aiortc returns an unknown codec's
  payload as is, which no decoder could use).

The fragmentation is ``gateway.rtsp.rtp.fragment_access_unit``, the one our RTSP server uses.

The H265 entry carries no fmtp, which RFC 7798 and libwebrtc read as Main profile, main
tier, level 3.1, tx-mode SRST; libwebrtc decodes higher levels anyway. A Main 10 camera is
still sent (its SPS is in-band), but a viewer that insists on ``profile-id=2`` would not match.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, cast

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
from aiortc.codecs.base import Decoder, Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from av.frame import Frame

from gateway.media.h26x import START_CODE
from gateway.rtsp.rtp import HEVC_FU, depacketize, fragment_access_unit

logger = logging.getLogger(__name__)

MIME_TYPE = "video/H265"
CLOCK_RATE = 90000
#: RTP payload bytes per packet; aiortc's H.264 payloader uses the same limit.
PACKET_MAX = 1300

#: aiortc's functions we wrap, and the modules that imported each by name.
PATCHED: dict[str, tuple[str, ...]] = {
    "get_encoder": ("aiortc.codecs", "aiortc.rtcrtpsender"),
    "get_decoder": ("aiortc.codecs", "aiortc.rtcrtpreceiver"),
    "depayload": ("aiortc.codecs", "aiortc.rtcrtpreceiver"),
}
_MODULES = {m.__name__: m for m in (aiortc.codecs, aiortc.rtcrtpsender, aiortc.rtcrtpreceiver)}


def is_hevc(codec: Any) -> bool:
    return str(codec.mimeType).lower() == MIME_TYPE.lower()


class HevcEncoder(Encoder):
    """Packs H.265 access units into RTP payloads (RFC 7798); never encodes."""

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise NotImplementedError("the gateway forwards camera H.265 packets; it does not encode H.265")

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        payloads = fragment_access_unit("hevc", bytes(packet), PACKET_MAX)
        timestamp = convert_timebase(packet.pts, packet.time_base, VIDEO_TIME_BASE)
        return payloads, timestamp


def hevc_depayload(payload: bytes) -> bytes:
    """One RTP payload as Annex B: a NAL unit with its start code, or an FU's share of one.

    The receiver's jitter buffer joins the payloads of one timestamp, in sequence order.
    """
    if len(payload) < 3:
        raise ValueError("H.265 RTP payload too short")
    if (payload[0] >> 1) & 0x3F == HEVC_FU:
        fu = payload[2]
        if fu & 0x80:  # first fragment: rebuild the NAL unit header
            return START_CODE + bytes([(payload[0] & 0x81) | ((fu & 0x3F) << 1), payload[1]]) + payload[3:]
        return payload[3:]
    return depacketize("hevc", [payload])  # a single NAL unit, or an aggregation packet


class HevcDecoder(Decoder):
    """Decodes reassembled H.265 access units with PyAV (FFmpeg's ``hevc``)."""

    def __init__(self) -> None:
        self.codec = av.CodecContext.create("hevc", "r")

    def decode(self, encoded_frame: JitterFrame) -> list[Frame]:
        packet = av.Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = VIDEO_TIME_BASE
        return cast(list[Frame], self.codec.decode(packet))


def check_aiortc_shape() -> None:
    """Raise ``RuntimeError`` unless aiortc still has the internals ``install()`` relies on."""
    problems = []
    video = getattr(aiortc.codecs, "CODECS", {}).get("video")
    if not isinstance(video, list) or not all(isinstance(c, RTCRtpCodecParameters) for c in video):
        problems.append("aiortc.codecs.CODECS['video'] is no longer a list of RTCRtpCodecParameters")
    for name, modules in PATCHED.items():
        functions = {getattr(_MODULES[m], name, None) for m in modules}
        if None in functions or len(functions) != 1 or not callable(functions.pop()):
            problems.append(f"{name} is no longer one function imported by name into {', '.join(modules)}")
    if problems:
        raise RuntimeError(
            f"aiortc {getattr(aiortc, '__version__', '?')} changed shape; H.265 cannot be installed: "
            + "; ".join(problems)
        )


def installed() -> bool:
    return any(is_hevc(c) for c in aiortc.codecs.CODECS["video"])


def install() -> None:
    """Teach this process's aiortc H.265. Idempotent; call once, before any peer exists.

    Why this is safe: it only *adds*. The codec table gains one H265 entry and its RTX entry
    at the end, on payload types no other entry uses, so aiortc's default offers keep their
    order and every existing preference (``setCodecPreferences`` with H.264) still selects
    the same codecs. The wrapped functions handle ``video/H265`` and hand every other codec
    to aiortc's own function unchanged. Negotiation needs no patch: aiortc matches codecs
    other than H.264 by MIME type and clock rate alone.

    The patch is process-wide state, which this project otherwise avoids: aiortc keeps its
    codec table in module globals, so there is nowhere else to put it.

    What an aiortc upgrade can break (``check_aiortc_shape`` and
    ``tests/test_webrtc_hevc.py`` fail loudly on each): ``CODECS`` renamed or reshaped;
    ``get_encoder`` / ``get_decoder`` / ``depayload`` renamed, or no longer imported by name
    into ``rtcrtpsender`` / ``rtcrtpreceiver`` (our wrapper would then be bypassed and
    H.265 would fail with "No encoder found"); ``Encoder.pack`` / ``Decoder.decode``
    signatures changed. If aiortc gains H.265 itself, ``install()`` sees the entry and does
    nothing.
    """
    if installed():
        return
    check_aiortc_shape()
    video = aiortc.codecs.CODECS["video"]
    payload_type = max(c.payloadType for c in video) + 1 if video else 97
    if payload_type + 1 > 127:
        raise RuntimeError("aiortc's dynamic RTP payload types are exhausted; cannot add H.265")
    video += [
        RTCRtpCodecParameters(
            mimeType=MIME_TYPE,
            clockRate=CLOCK_RATE,
            payloadType=payload_type,
            rtcpFeedback=[
                RTCRtcpFeedback(type="nack"),
                RTCRtcpFeedback(type="nack", parameter="pli"),
                RTCRtcpFeedback(type="goog-remb"),
            ],
        ),
        RTCRtpCodecParameters(
            mimeType="video/rtx", clockRate=CLOCK_RATE, payloadType=payload_type + 1, parameters={"apt": payload_type}
        ),
    ]
    _wrap("get_encoder", lambda original, codec: HevcEncoder() if is_hevc(codec) else original(codec))
    _wrap("get_decoder", lambda original, codec: HevcDecoder() if is_hevc(codec) else original(codec))
    _wrap(
        "depayload",
        lambda original, codec, payload: hevc_depayload(payload) if is_hevc(codec) else original(codec, payload),
    )
    logger.info(
        "H.265 added to aiortc %s (payload type %d, RTX %d)", aiortc.__version__, payload_type, payload_type + 1
    )


def _wrap(name: str, handler: Callable[..., Any]) -> None:
    modules = [_MODULES[m] for m in PATCHED[name]]
    original = getattr(modules[0], name)

    @functools.wraps(original)
    def wrapper(*args: Any) -> Any:
        return handler(original, *args)

    for module in modules:
        setattr(module, name, wrapper)
