"""A small jitter/reorder buffer for RTP over UDP (RFC 3550 sequence arithmetic).

Pure protocol code: no sockets, no clock of its own (the caller passes ``now``), nothing of
the app. Over UDP a camera's packets may arrive swapped or twice; the depacketizer wants them
in order. The buffer releases every packet that continues the sequence at once (no added
latency in the common case), holds packets behind a gap for at most ``max_delay`` seconds or
``max_packets`` packets, then gives the missing ones up as lost and goes on. Duplicates and
packets that come after their place was given up are dropped. The first packets of a stream
wait ``max_delay`` (the first may not be the first sent). A large jump of the sequence
number (a camera that restarted its sender) or a new SSRC resynchronises: what is held goes
out in order, the new sequence starts. Over TCP nothing is reordered: do not use it there.
"""

from __future__ import annotations

import logging
import struct

logger = logging.getLogger(__name__)

#: RFC 3550 A.1: a packet further ahead than this, or further behind than ``MAX_MISORDER``,
#: is not part of the current sequence (until a second one in a row confirms a new one).
MAX_DROPOUT = 3000
MAX_MISORDER = 100


def seq_delta(seq: int, ref: int) -> int:
    """``seq - ref`` in 16-bit sequence arithmetic: -32768..32767 (positive: ``seq`` is newer)."""
    d = (seq - ref) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


class ReorderBuffer:
    """Puts the RTP packets of one UDP stream back in sequence order.

    ``push(packet, now)`` returns the packets it released, in order; ``poll(now)`` releases
    what waited too long behind a gap; ``deadline()`` says when ``poll`` is due next (None:
    nothing is held). ``flush()`` releases everything held, in order.
    """

    def __init__(self, *, max_packets: int = 32, max_delay: float = 0.02, name: str = "rtp") -> None:
        if max_packets < 1 or max_delay < 0:
            raise ValueError("max_packets must be >= 1 and max_delay >= 0")
        self.max_packets = max_packets
        self.max_delay = max_delay
        self.name = name
        self._next: int | None = None  #: the sequence number we release next
        self._ssrc: int | None = None
        self._held: dict[int, tuple[bytes, float]] = {}  #: seq -> (packet, arrival)
        self._probe: int | None = None  #: the seq after a packet outside the window
        self._starting: float | None = None  #: arrival of the first packet, while it waits
        self.received = 0
        self.reordered = 0  #: packets that arrived ahead of a gap and waited
        self.duplicates = 0
        self.late = 0  #: packets that came after their place had been given up
        self.lost = 0
        self.resyncs = 0

    def __len__(self) -> int:
        return len(self._held)

    def push(self, packet: bytes, now: float) -> list[bytes]:
        if len(packet) < 12:
            return [packet]  # not RTP: the depacketizer counts it as malformed
        seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
        self.received += 1
        if self._next is None or ssrc != self._ssrc:
            out = self._resync(seq, ssrc) if self._next is not None else []
            self._next, self._ssrc, self._starting = seq, ssrc, now
            self._held[seq] = (packet, now)
            return out
        if self._starting is not None:
            # The start of a stream: the first packet to arrive need not be the first sent.
            d = seq_delta(seq, self._next)
            if -MAX_MISORDER <= d < MAX_DROPOUT:
                if seq in self._held:
                    self.duplicates += 1
                else:
                    self._held[seq] = (packet, now)
                    if d < 0:
                        self._next = seq
                        self.reordered += 1
            return self._started(now)
        d = seq_delta(seq, self._next)
        if d < -MAX_MISORDER or d >= MAX_DROPOUT:
            # Not this sequence: a restart of the sender, or a stray packet. Two in a row
            # (RFC 3550 A.1's probation) start the new sequence.
            if self._probe is not None and seq == self._probe:
                self._probe = None
                out = self._resync(seq, ssrc)
                self._next = seq
                return out + self._accept(seq, packet, now)
            self._probe = (seq + 1) & 0xFFFF
            return []
        self._probe = None
        if d < 0:
            self.late += 1  # its place was given up (or a duplicate of a released packet)
            return []
        return self._accept(seq, packet, now)

    def _accept(self, seq: int, packet: bytes, now: float) -> list[bytes]:
        if seq == self._next:
            out = [packet]
            self._next = (seq + 1) & 0xFFFF
            return self._drain(out)
        if seq in self._held:
            self.duplicates += 1
            return []
        self._held[seq] = (packet, now)
        self.reordered += 1
        if len(self._held) > self.max_packets:
            return self._skip()
        return []

    def _drain(self, out: list[bytes]) -> list[bytes]:
        held = self._held
        while held:
            item = held.pop(self._next, None)  # type: ignore[arg-type]
            if item is None:
                break
            out.append(item[0])
            self._next = (self._next + 1) & 0xFFFF  # type: ignore[operator]
        return out

    def _skip(self) -> list[bytes]:
        """Give up the gap in front of the oldest held packet."""
        assert self._next is not None
        first = min(self._held, key=lambda s: seq_delta(s, self._next))  # type: ignore[arg-type]
        gap = seq_delta(first, self._next)
        self.lost += gap
        self._log_loss(gap)
        self._next = first
        return self._drain([])

    def _log_loss(self, gap: int) -> None:
        lost = self.lost
        level = logging.WARNING if lost == gap or lost // 1000 != (lost - gap) // 1000 else logging.DEBUG
        logger.log(level, "%s: %d RTP packet(s) lost (%d in all, %d reordered)", self.name, gap, lost, self.reordered)

    def _resync(self, seq: int, ssrc: int) -> list[bytes]:
        self.resyncs += 1
        logger.info("%s: sequence restarted at %d (ssrc %08x); %d held packet(s) released", self.name, seq, ssrc, len(self._held))
        return self.flush()

    def _started(self, now: float) -> list[bytes]:
        if self._starting is None or now - self._starting < self.max_delay:
            return []
        self._starting = None
        out = self._drain([])
        if len(self._held) > self.max_packets:
            out += self._skip()
        return out

    def poll(self, now: float) -> list[bytes]:
        out = self._started(now)
        if self._starting is not None:
            return out
        while self._held and now - min(t for _, t in self._held.values()) >= self.max_delay:
            out += self._skip()
        return out

    def deadline(self) -> float | None:
        if self._starting is not None:
            return self._starting + self.max_delay
        if not self._held:
            return None
        return min(t for _, t in self._held.values()) + self.max_delay

    def flush(self) -> list[bytes]:
        self._starting = None
        out: list[bytes] = []
        while self._held:
            out += self._skip()
        return out
