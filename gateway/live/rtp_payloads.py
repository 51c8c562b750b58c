"""An access unit as the RTP payloads every viewer of a camera stream is sent: one ``bytes``
blob holding the payloads back to back, and where each one ends (``FramePayloads``).

Made once per camera frame (``gateway.live.rtp_fanout``): in C where ``gateway.live._rtpsend``
was built (start codes found with ``memchr``, FU-A / FU fragments written straight into one
buffer), else by ``gateway.rtsp.rtp.fragment_access_unit``. Both give the same payloads
(tests/test_rtp_payloads.py). The C path also keeps the ends as a C array, which every
viewer's C sender call then reads without any conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.live.srtp_out import NATIVE_UNAVAILABLE, _rtpsend
from gateway.rtsp.rtp import fragment_access_unit


@dataclass(frozen=True, slots=True)
class FramePayloads:
    blob: bytes
    #: Where payload i ends in ``blob``.
    ends: tuple[int, ...]
    #: ``ends`` as a C ``uint32_t[]`` for the C sender; None where it was not built.
    native_ends: object


def join_payloads(payloads: Sequence[bytes | memoryview]) -> FramePayloads:
    """Payloads made elsewhere (the Python path, tests) as one ``FramePayloads``."""
    ends, total = [], 0
    for payload in payloads:
        total += len(payload)
        ends.append(total)
    native = _rtpsend.ffi.new("uint32_t[]", ends) if NATIVE_UNAVAILABLE is None else None
    return FramePayloads(b"".join(payloads), tuple(ends), native)


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

    def packetize(self, data: bytes) -> FramePayloads:
        if NATIVE_UNAVAILABLE is not None:
            return join_payloads(fragment_access_unit(self.codec, data, self.max_payload))
        ffi, lib = _rtpsend.ffi, _rtpsend.lib
        n = len(data)
        # Room for the worst case: every fragment adds a 3-byte header; a NAL unit takes at
        # least 4 bytes of the access unit (a start code and its header byte).
        out_cap = n + 3 * (n // (self.max_payload - 3) + 1) + 16
        ends_cap = n // 4 + n // (self.max_payload - 3) + 2
        if out_cap > self._out_cap:
            self._out, self._out_cap = ffi.new("char[]", out_cap), out_cap
        if ends_cap > self._ends_cap:
            self._ends, self._ends_cap = ffi.new("uint32_t[]", ends_cap), ends_cap
        count = lib.cg_packetize(self._hevc, data, n, self.max_payload, self._out, self._out_cap, self._ends, self._ends_cap)
        if count < 0:  # cannot happen with the room above; never lose a frame over it
            return join_payloads(fragment_access_unit(self.codec, data, self.max_payload))
        if count == 0:
            return FramePayloads(b"", (), None)
        native_ends = ffi.new("uint32_t[]", count)
        ffi.memmove(native_ends, self._ends, 4 * count)
        return FramePayloads(ffi.buffer(self._out, native_ends[count - 1])[:], tuple(ffi.unpack(native_ends, count)), native_ends)
