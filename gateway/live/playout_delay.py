"""The playout-delay RTP header extension (webrtc.org's, used by Chromium): the sender tells
the receiver the smallest and largest delay it may add before showing a picture. Both 0
makes Chromium show each picture as soon as it is decoded (its low-latency renderer) instead
of smoothing playout behind a buffer; a monitoring room wants the picture now.

``install()`` adds the extension to those aiortc negotiates for video, so an answer to an
offer that lists it (Chromium's does) lists it too; ``extension_block`` is the header
extension block (RFC 8285, one-byte form) the viewer's sender then writes after every
RTP header, or nothing when the viewer did not offer it.
"""

from __future__ import annotations

import aiortc.codecs
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpSendParameters

URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
#: The id we offer with (aiortc's own video extensions take 1 and 3); answers use the offer's.
OFFER_ID = 6
#: Bytes ``extension_block`` adds after an RTP header.
BLOCK_BYTES = 8


def install() -> None:
    video = aiortc.codecs.HEADER_EXTENSIONS["video"]
    if not any(extension.uri == URI for extension in video):
        video.append(RTCRtpHeaderExtensionParameters(id=OFFER_ID, uri=URI))


def extension_block(parameters: RTCRtpSendParameters, min_ms: int = 0, max_ms: int = 0) -> bytes:
    """The header extension block asking for a playout delay of ``min_ms``..``max_ms`` (10 ms
    steps), for the id the viewer negotiated; b"" when it did not negotiate the extension."""
    for extension in parameters.headerExtensions:
        if extension.uri == URI and 1 <= extension.id <= 14:
            low, high = min(min_ms // 10, 0xFFF), min(max_ms // 10, 0xFFF)
            element = bytes([(extension.id << 4) | 2, low >> 4, ((low & 0xF) << 4) | (high >> 8), high & 0xFF])
            return b"\xbe\xde\x00\x01" + element
    return b""
