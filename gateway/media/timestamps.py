"""Timestamp sanitation for camera packets.

Real cameras send a first packet with no timestamp, repeat timestamps (FFmpeg emits a
keyframe made of several slices as two packets with one timestamp), jump backwards, or
restart their clock. Downstream (WebRTC pacing, MP4 muxing, HLS) needs timestamps on the
90 kHz clock that strictly increase for the whole life of a hub, across reconnects.
"""

from __future__ import annotations

from gateway.media.packet import CLOCK_RATE

#: A jump larger than this (either way) is a clock reset, not a real gap.
MAX_JUMP = 10 * CLOCK_RATE
#: A step back larger than this is a clock reset too (B-frame reordering stays far below it).
#: Before, a 3 s step back gave the next 3 s of pictures one tick each: a frozen picture.
MAX_BACKWARD = CLOCK_RATE
#: With arrival times: a step forward longer than the time between the two arrivals plus this
#: is a clock jump, not a pause (a 5 s step between pictures 40 ms apart put the recording's
#: timeline 5 s ahead of the wall clock).
FORWARD_SLACK = CLOCK_RATE
DEFAULT_FRAME_TICKS = CLOCK_RATE // 25


class TimestampSanitizer:
    """Maps raw timestamps of one connection onto the hub's continuous timeline.

    Create one per hub; call ``new_epoch(gap_seconds)`` at every reconnect so the new
    connection's timeline continues after the old one with the real-time gap between them.
    """

    def __init__(self) -> None:
        self._last_out: int | None = None
        self._last_raw: int | None = None
        self._last_arrival: float | None = None
        self._offset = 0
        self._frame_ticks = DEFAULT_FRAME_TICKS
        #: Clock jumps re-based so far, and the last one's size in ticks (for the log).
        self.jumps = 0
        self.last_jump = 0

    def new_epoch(self, gap_seconds: float = 0.0) -> None:
        self._last_raw = None
        self._last_arrival = None
        if self._last_out is not None:
            self._gap = max(1, int(gap_seconds * CLOCK_RATE))
        else:
            self._gap = 0

    _gap = 0

    def __call__(self, raw: int | None, arrival: float | None = None) -> int:
        """Return the sanitised 90 kHz timestamp for a raw one (None if the camera gave none).

        ``arrival``: when the packet arrived, in seconds of a monotonic clock; with it, a step
        forward that the arrival times do not explain is a jump too."""
        previous_arrival, self._last_arrival = self._last_arrival, arrival
        if self._last_raw is None:
            # First packet of an epoch: anchor it right after the previous epoch.
            start = 0 if self._last_out is None else self._last_out + self._gap
            base = raw if raw is not None else 0
            self._offset = start - base
            out = start
            self._last_raw = base
        else:
            if raw is None:
                raw = self._last_raw + self._frame_ticks
            delta = raw - self._last_raw
            forward = MAX_JUMP
            if arrival is not None and previous_arrival is not None:
                forward = min(MAX_JUMP, max(0, int((arrival - previous_arrival) * CLOCK_RATE)) + FORWARD_SLACK)
            if delta > forward or delta < -MAX_BACKWARD:
                # The camera's clock restarted or jumped: continue one frame after the last output.
                self._offset = (self._last_out or 0) + self._frame_ticks - raw
                self.jumps += 1
                self.last_jump = delta
            elif 0 < delta < MAX_JUMP:
                self._frame_ticks = max(1, min(delta, CLOCK_RATE))
            out = raw + self._offset
            self._last_raw = raw
        if self._last_out is not None and out <= self._last_out:
            out = self._last_out + 1
        self._last_out = out
        return out
