"""Real H.264/H.265 packets for unit tests, encoded with PyAV (no canned bytes)."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np

from gateway.media.h26x import ParameterSetKeeper
from gateway.media.packet import MediaPacket, StreamInfo


def encode_frames(count: int = 50, *, codec: str = "libx264", width: int = 320, height: int = 240, gop: int = 10) -> list[bytes]:
    """Encode ``count`` frames of a moving gradient; returns Annex B access units."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25, 1)
    ctx.gop_size = gop
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    if codec == "libx264":
        ctx.options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0:repeat-headers=1"
    else:
        ctx.options["x265-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0:repeat-headers=1:log-level=error"
    out: list[bytes] = []
    ramp = np.tile(np.arange(width, dtype=np.int32) % 256, (height, 1))
    for i in range(count):
        img = np.stack([(ramp + i * 4) % 256, ramp[::-1], np.full_like(ramp, 128)], axis=-1).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


def make_packets(count: int = 50, *, gop: int = 10, codec: str = "h264") -> list[MediaPacket]:
    units = encode_frames(count, gop=gop, codec="libx264" if codec == "h264" else "libx265")
    keeper = ParameterSetKeeper(codec)
    packets: list[MediaPacket] = []
    info: StreamInfo | None = None
    for i, unit in enumerate(units):
        data, key = keeper.process(unit)
        if info is None:
            info = StreamInfo(codec=codec, width=320, height=240, parameter_sets=keeper.parameter_sets)
        packets.append(MediaPacket(data=data, pts=i * 3600, dts=i * 3600, keyframe=key, wallclock=time.time(), info=info))
    return packets
