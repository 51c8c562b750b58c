"""Still pictures: decode a camera's latest keyframe to JPEG, off the event loop."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av

from gateway.media.packet import MediaPacket


def keyframe_to_jpeg(packet: MediaPacket, *, max_width: int | None = None, quality: int = 80) -> bytes:
    """Decode one keyframe (which carries its parameter sets) and encode it as JPEG.

    Blocking: call through ``snapshot_jpeg``.
    """
    decoder = av.CodecContext.create(packet.info.codec, "r")
    frames = decoder.decode(av.Packet(packet.data)) + decoder.decode(None)
    if not frames:
        raise ValueError("the keyframe did not decode to a picture")
    frame = frames[0]
    width, height = frame.width, frame.height
    if max_width and width > max_width:
        height = max(2, round(height * max_width / width / 2) * 2)
        width = max_width
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    # mjpeg's qscale: 2 (best) .. 31; map quality 0..100 onto it.
    qscale = max(2, min(31, round(31 - quality * 29 / 100)))
    encoder.options = {"qmin": str(qscale), "qmax": str(qscale)}
    picture = frame.reformat(width=width, height=height, format="yuvj420p")
    picture.pts = 0
    return b"".join(bytes(p) for p in encoder.encode(picture) + encoder.encode(None))


async def snapshot_jpeg(packet: MediaPacket, *, max_width: int | None = None) -> bytes:
    return await asyncio.to_thread(keyframe_to_jpeg, packet, max_width=max_width)
