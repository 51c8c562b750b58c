"""Decoding a hub's packets in a worker thread: what the mask stage and the analytics runner
share.

- ``forward`` (event loop): moves packet references from a hub reader into a bounded inbox;
  when the worker falls so far behind that the inbox is full, the inbox is emptied and
  packets are skipped up to the next keyframe (a slow worker never blocks the hub).
- ``serve`` (worker thread): takes packets from the inbox until ``STOP`` and hands each to
  the worker's step; a step that raises is logged and the worker carries on (its decoder
  restarts at the next keyframe).
- ``FrameDecoder`` (worker thread): a PyAV decoder per stream epoch (started afresh at the
  first keyframe of a new stream or after a discontinuity), each picture returned with its
  pts and the wall clock of the packet it came in.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import av

from gateway.media.hub import HubReader
from gateway.media.packet import TIME_BASE, MediaPacket, StreamInfo

#: Put into an inbox to end its worker.
STOP = object()


def drain(inbox: queue.Queue[Any]) -> None:
    """Empty ``inbox`` without waiting."""
    while True:
        try:
            inbox.get_nowait()
        except queue.Empty:
            return


async def forward(
    reader: HubReader,
    inbox: queue.Queue[Any],
    *,
    skipped: Callable[[], None],
    behind: Callable[[], None],
    until: Callable[[MediaPacket], bool] | None = None,
) -> None:
    """Move packets from ``reader`` to ``inbox`` until the reader is closed (StreamClosed is
    raised to the caller) or ``until(packet)`` is true (that packet is not forwarded).

    ``skipped()`` is called for every packet left out; ``behind()`` when the inbox was full
    and emptied (the worker falls behind: the packets up to the next keyframe are left out).
    """
    need_keyframe = False
    while True:
        packet = await reader.recv()
        if until is not None and until(packet):
            return
        if need_keyframe and not packet.keyframe:
            skipped()
            continue
        need_keyframe = False
        try:
            inbox.put_nowait(packet)
        except queue.Full:
            drain(inbox)
            skipped()
            need_keyframe = True
            behind()


def serve(inbox: queue.Queue[Any], step: Callable[[MediaPacket], None], failed: Callable[[], None],
          logger: logging.Logger, what: str) -> None:
    """The worker thread's loop: ``step(packet)`` for every packet until ``STOP``. A step that
    raises is logged ("<what> failed on a picture") and ``failed()`` is called (restart the
    decoder at the next keyframe): one bad picture must not end the worker."""
    while True:
        packet = inbox.get()
        if packet is STOP:
            return
        try:
            step(packet)
        except Exception:
            logger.exception("%s failed on a picture; restarting the decoder", what)
            failed()


class FrameDecoder:
    """Decodes the packets of one stream (in a worker thread), a fresh decoder per epoch.

    ``decode(packet)`` returns the pictures it completes as (frame, pts, wallclock), or None
    when the packet cannot be decoded: the first packet of a new stream (its info changed)
    or after a discontinuity is not a keyframe. ``reset()`` makes the next keyframe start a
    fresh decoder. ``started`` counts the decoders started (a caller compares it to know a
    new epoch began).
    """

    def __init__(self) -> None:
        self.info: StreamInfo | None = None
        self.started = 0
        self.cpu_seconds = 0.0  #: thread CPU of decoding
        self._decoder: Any = None
        self._wallclocks: dict[int, float] = {}

    def reset(self) -> None:
        self.info = None

    def decode(self, packet: MediaPacket) -> list[tuple[av.VideoFrame, int, float]] | None:
        if packet.info is not self.info or packet.discontinuity:
            if not packet.keyframe:
                return None
            self.info = packet.info
            self._decoder = av.CodecContext.create(packet.info.codec, "r")
            self._decoder.thread_count = 1  # frame threads would hold pictures back
            self.started += 1
        t0 = time.thread_time()
        av_packet = av.Packet(packet.data)
        av_packet.pts = av_packet.dts = packet.pts
        av_packet.time_base = TIME_BASE
        self._wallclocks[packet.pts] = packet.wallclock
        frames = self._decoder.decode(av_packet)
        self.cpu_seconds += time.thread_time() - t0
        out = []
        for frame in frames:
            pts = frame.pts if frame.pts is not None else packet.pts
            out.append((frame, pts, self._wallclocks.pop(pts, packet.wallclock)))
        if len(self._wallclocks) > 64:
            self._wallclocks.clear()
        return out
