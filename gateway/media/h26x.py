"""Just enough H.264/H.265 bitstream handling for passthrough.

No decoding: we only split access units into NAL units, recognise parameter sets and
keyframes, convert length-prefixed (AVCC/HVCC) data to Annex B, and put parameter sets in
front of keyframes that lack them (cameras that send SPS/PPS only in the SDP).
"""

from __future__ import annotations

from collections.abc import Iterator

START_CODE = b"\x00\x00\x00\x01"

# H.264 NAL unit types (ITU-T H.264 table 7-1)
H264_IDR = 5
H264_SEI = 6
H264_SPS = 7
H264_PPS = 8
H264_AUD = 9

# H.265 NAL unit types (ITU-T H.265 table 7-1)
HEVC_IRAP_FIRST = 16  # BLA_W_LP
HEVC_IRAP_LAST = 23  # RSV_IRAP_VCL23
HEVC_VPS = 32
HEVC_SPS = 33
HEVC_PPS = 34
HEVC_AUD = 35


def iter_nals(data: bytes) -> Iterator[bytes]:
    """Yield the NAL units of an Annex B byte string, without start codes."""
    n = len(data)
    i = data.find(b"\x00\x00\x01")
    if i < 0:
        if data:
            yield data
        return
    start = i + 3
    while True:
        j = data.find(b"\x00\x00\x01", start)
        if j < 0:
            nal = data[start:n]
            if nal:
                yield nal.rstrip(b"\x00") if nal.endswith(b"\x00\x00") else nal
            return
        end = j
        # A 4-byte start code leaves one zero byte that belongs to it, not to the NAL.
        if end > start and data[end - 1] == 0:
            end -= 1
        if end > start:
            yield data[start:end]
        start = j + 3


def nal_type(codec: str, nal: bytes) -> int:
    if not nal:
        return -1
    if codec == "hevc":
        return (nal[0] >> 1) & 0x3F
    return nal[0] & 0x1F


def is_parameter_set(codec: str, kind: int) -> bool:
    if codec == "hevc":
        return kind in (HEVC_VPS, HEVC_SPS, HEVC_PPS)
    return kind in (H264_SPS, H264_PPS)


def is_keyframe_nal(codec: str, kind: int) -> bool:
    if codec == "hevc":
        return HEVC_IRAP_FIRST <= kind <= HEVC_IRAP_LAST
    return kind == H264_IDR


def has_picture(codec: str, data: bytes) -> bool:
    """Does the access unit carry a coded picture (a VCL NAL), not just AUD/SEI/parameters?"""
    for nal in iter_nals(data):
        kind = nal_type(codec, nal)
        if (codec == "hevc" and 0 <= kind <= 31) or (codec != "hevc" and 1 <= kind <= 5):
            return True
    return False


def is_annexb(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")


def length_prefixed_to_annexb(data: bytes, length_size: int = 4) -> bytes:
    """Convert AVCC/HVCC sample data (big-endian NAL lengths) to Annex B."""
    out = bytearray()
    i = 0
    n = len(data)
    while i + length_size <= n:
        size = int.from_bytes(data[i : i + length_size], "big")
        i += length_size
        if size <= 0 or i + size > n:
            raise ValueError("truncated length-prefixed NAL unit")
        out += START_CODE
        out += data[i : i + size]
        i += size
    return bytes(out)


def parameter_sets_from_extradata(codec: str, extradata: bytes | None) -> bytes:
    """Return the parameter sets in codec extradata as Annex B (empty if there are none).

    Extradata comes either as Annex B already (RTSP's sprop-parameter-sets) or as an
    ``avcC``/``hvcC`` configuration record (MP4, some demuxers).
    """
    if not extradata:
        return b""
    if is_annexb(extradata):
        return b"".join(START_CODE + nal for nal in iter_nals(extradata) if is_parameter_set(codec, nal_type(codec, nal)))
    if codec == "hevc":
        return _hvcc_parameter_sets(extradata)
    return _avcc_parameter_sets(extradata)


def _avcc_parameter_sets(rec: bytes) -> bytes:
    if len(rec) < 7 or rec[0] != 1:
        return b""
    out = bytearray()
    i = 5
    count = rec[i] & 0x1F
    i += 1
    for _ in range(count):
        size = int.from_bytes(rec[i : i + 2], "big")
        out += START_CODE + rec[i + 2 : i + 2 + size]
        i += 2 + size
    count = rec[i]
    i += 1
    for _ in range(count):
        size = int.from_bytes(rec[i : i + 2], "big")
        out += START_CODE + rec[i + 2 : i + 2 + size]
        i += 2 + size
    return bytes(out)


def _hvcc_parameter_sets(rec: bytes) -> bytes:
    if len(rec) < 23:
        return b""
    out = bytearray()
    i = 22
    arrays = rec[i]
    i += 1
    for _ in range(arrays):
        kind = rec[i] & 0x3F
        count = int.from_bytes(rec[i + 1 : i + 3], "big")
        i += 3
        for _ in range(count):
            size = int.from_bytes(rec[i : i + 2], "big")
            if is_parameter_set("hevc", kind):
                out += START_CODE + rec[i + 2 : i + 2 + size]
            i += 2 + size
    return bytes(out)


class ParameterSetKeeper:
    """Remembers a stream's latest parameter sets and puts them in front of keyframes.

    Cameras differ: some repeat SPS/PPS before every IDR, some send them once, some only
    in the SDP. Downstream every keyframe must be decodable on its own, so each keyframe
    leaves here carrying the parameter sets, and in-band updates replace the stored ones.
    """

    def __init__(self, codec: str, initial: bytes = b"") -> None:
        self.codec = codec
        self._sets: dict[int, bytes] = {}
        if initial:
            self._remember(list(iter_nals(initial)))

    @property
    def parameter_sets(self) -> bytes:
        return b"".join(START_CODE + nal for _, nal in sorted(self._sets.items()))

    def _remember(self, nals: list[bytes]) -> None:
        for nal in nals:
            kind = nal_type(self.codec, nal)
            if is_parameter_set(self.codec, kind):
                self._sets[kind] = nal

    def process(self, data: bytes) -> tuple[bytes, bool]:
        """Return ``(annexb_data, keyframe)`` with parameter sets ensured on keyframes."""
        nals = list(iter_nals(data))
        kinds = [nal_type(self.codec, n) for n in nals]
        keyframe = any(is_keyframe_nal(self.codec, k) for k in kinds)
        self._remember(nals)
        if not keyframe:
            return data, False
        present = {k for k in kinds if is_parameter_set(self.codec, k)}
        wanted = (HEVC_VPS, HEVC_SPS, HEVC_PPS) if self.codec == "hevc" else (H264_SPS, H264_PPS)
        if all(k in present for k in wanted) or not self._sets:
            return data, True
        # Rebuild: AUD first if present, then parameter sets, then everything else.
        aud = HEVC_AUD if self.codec == "hevc" else H264_AUD
        head = [n for n, k in zip(nals, kinds) if k == aud]
        rest = [n for n, k in zip(nals, kinds) if k != aud and not is_parameter_set(self.codec, k)]
        ps = [self._sets[k] for k in sorted(self._sets)]
        return b"".join(START_CODE + n for n in head + ps + rest), True
