"""An access unit as the RTP payloads every viewer of a camera stream is sent, in one ``bytes``
object, the frame's *blob*: the payloads back to back, zeros up to a multiple of 4 bytes,
then where each payload ends (one native ``uint32`` per payload).

One object per frame because every Python operation on the per-frame path costs ten times
its textbook price there: a camera frame comes every 40 ms, and by then the caches hold
other processes' data. The C packetizer writes the blob in one call and cffi copies it out in
one more; each viewer's C sender reads it as it is. Python reads the ends only for
retransmissions (``payload_ends``).

Made once per camera frame (``gateway.live.rtp_fanout``): in C where ``gateway.live._rtpsend``
was built (start codes found with ``memchr``, FU-A / FU fragments written straight into one
buffer), else by ``gateway.rtsp.rtp.fragment_access_unit``. Both give the same blob
(tests/test_rtp_payloads.py).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from gateway.live.srtp_out import NATIVE_UNAVAILABLE, _rtpsend
from gateway.rtsp.rtp import fragment_access_unit

_END = "I"  # a native unsigned int, as C's uint32_t
if array(_END).itemsize != 4:  # pragma: no cover (every platform Python supports today)
    raise ImportError("the frame blob's payload ends need a 4-byte unsigned int")


def ends_at(blob: bytes, count: int) -> int:
    """Where the payload ends of a blob of ``count`` payloads begin."""
    return len(blob) - 4 * count


def payload_ends(blob: bytes, count: int) -> memoryview:
    """Where each of the blob's ``count`` payloads ends (a sequence of ints)."""
    return memoryview(blob)[ends_at(blob, count) :].cast(_END)


def join_payloads(payloads: Sequence[bytes | memoryview]) -> tuple[int, bytes]:
    """Payloads made elsewhere (the Python packetizer, tests) as (count, blob)."""
    ends, total = array(_END), 0
    for payload in payloads:
        total += len(payload)
        ends.append(total)
    padding = bytes(-total % 4)
    return len(ends), b"".join([*payloads, padding, ends.tobytes()])


class Packetizer:
    """Splits one stream's access units into RTP payloads of at most ``max_payload`` bytes
    (single NAL units, FU-A / FU fragments; delimiters dropped). One per camera stream; its
    scratch buffers are reused from frame to frame, on the event loop thread only."""

    def __init__(self, codec: str, max_payload: int) -> None:
        self.codec = codec
        self.max_payload = max_payload
        self._hevc = 1 if codec == "hevc" else 0
        self._out_cap = self._ends_cap = 0
        self._out = self._ends = None

    def packetize(self, data: bytes) -> tuple[int, bytes]:
        """The access unit ``data`` (Annex B) as (payload count, blob)."""
        if NATIVE_UNAVAILABLE is not None:
            return join_payloads(fragment_access_unit(self.codec, data, self.max_payload))
        n = len(data)
        if n > self._out_cap // 2 - 64:  # a larger frame than ever: grow the scratch buffers
            self._grow(n)
        packed = _rtpsend.lib.cg_packetize_frame(
            self._hevc, data, n, self.max_payload, self._out, self._out_cap, self._ends, self._ends_cap
        )
        if packed < 0:  # cannot happen with the room _grow makes; never lose a frame over it
            return join_payloads(fragment_access_unit(self.codec, data, self.max_payload))
        return packed >> 32, _rtpsend.ffi.unpack(self._out, packed & 0xFFFFFFFF)

    def _grow(self, n: int) -> None:
        # Room for the worst case: the payloads are the frame plus a 3-byte header per
        # fragment (under twice the frame, which ``packetize`` checks against), and each
        # payload's end takes 4 bytes more; a NAL unit takes at least 4 bytes of the access
        # unit (a start code and its header byte), so there are at most ``ends_cap`` of them.
        ffi = _rtpsend.ffi
        ends_cap = n // 4 + n // (self.max_payload - 3) + 2
        out_cap = 2 * (n + 64) + 4 * ends_cap
        self._out, self._out_cap = ffi.new("char[]", out_cap), out_cap
        self._ends, self._ends_cap = ffi.new("uint32_t[]", ends_cap), ends_cap
