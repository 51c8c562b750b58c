"""The two value types that travel from a camera to every reader.

Packets are plain bytes plus timestamps rather than ``av.Packet`` objects: they are
immutable, shared by every reader without copying, safe to hand between threads, and
could cross a process boundary when cameras are owned by worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

#: Every video timestamp inside Citygate is on the 90 kHz RTP video clock.
CLOCK_RATE = 90_000
TIME_BASE = Fraction(1, CLOCK_RATE)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a reader needs to set up a decoder or muxer for one stream epoch.

    A new ``StreamInfo`` is made at every (re)connect of the source; readers compare by
    identity (``is``) to notice that the stream changed.
    """

    codec: str  #: FFmpeg codec name: "h264" or "hevc"
    width: int
    height: int
    #: Parameter sets (VPS/SPS/PPS) in Annex B form, as they were last seen.
    parameter_sets: bytes
    profile: str | None = None
    pix_fmt: str | None = None
    #: Nominal frame rate if the camera declared one, else None (measured rate is in hub stats).
    declared_fps: float | None = None
    epoch: int = 0

    @property
    def time_base(self) -> Fraction:
        return TIME_BASE


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One complete access unit (one picture) in Annex B form.

    Keyframes always begin with the stream's parameter sets, so any reader can start
    decoding at any keyframe. ``pts`` and ``dts`` are on the 90 kHz clock and strictly
    increase across the whole life of a hub, reconnects included.
    """

    data: bytes
    pts: int
    dts: int
    keyframe: bool
    #: Wall-clock time (``time.time()``) when the gateway received the packet.
    wallclock: float
    info: StreamInfo = field(repr=False)
    #: True on the first packet of a new stream epoch (after a reconnect or a change).
    discontinuity: bool = False

    @property
    def size(self) -> int:
        return len(self.data)
