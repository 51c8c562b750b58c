"""Fragmented MP4 (CMAF) for live HLS: init segments and ``moof``+``mdat`` fragments.

Written by hand instead of through PyAV's mp4 muxer. The boxes a live video track needs
are few and fixed (``ftyp``, ``moov`` with one ``avc1``/``hvc1`` sample entry and ``mvex``;
per fragment ``moof``/``mfhd``/``traf``/``tfhd``/``tfdt``/``trun`` and ``mdat``), so a
fragment costs a few microseconds of struct packing plus one copy of the picture data, with
no FFmpeg state to flush, no interleaving queue holding samples back, and byte-identical
output for identical input. That makes each LL-HLS part exactly the samples we choose —
cut where we decide, never where a muxer's ``frag_duration`` heuristics do — and the
cost small enough that it runs on the event loop: measured ≈ 50 µs per packet, 0.12 % of a
core for a 640x360 25 fps 1.5 Mbit/s camera (FFmpeg's CLI muxing the same to fMP4 HLS costs
≈ 0.2 % on top of its demux), where a hop to a worker thread would cost more than the work.

``Fragmenter`` turns hub packets into LL-HLS parts: segments start on keyframes, parts
stay within the part target, a new stream epoch starts a new init segment.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.media.h26x import (
    H264_AUD,
    H264_PPS,
    H264_SPS,
    HEVC_AUD,
    HEVC_PPS,
    HEVC_SPS,
    HEVC_VPS,
    iter_nals,
    nal_type,
)
from gateway.media.packet import CLOCK_RATE, MediaPacket, StreamInfo

TIMESCALE = CLOCK_RATE
#: A gap between two packets longer than this is a hole (a reader that skipped ahead),
#: not a long frame: the fragmenter closes the segment and marks a discontinuity.
MAX_SAMPLE_TICKS = 5 * CLOCK_RATE

_SAMPLE_KEY = 0x02000000  # sample_depends_on = 2 (I picture)
_SAMPLE_NON_KEY = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


# --------------------------------------------------------------------------------------
# boxes


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


# --------------------------------------------------------------------------------------
# parameter sets


class _Bits:
    """MSB-first bit reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, nal_payload: bytes) -> None:
        self.data = nal_payload.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3] if (self.pos >> 3) < len(self.data) else 0
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)


def _split_parameter_sets(info: StreamInfo) -> dict[int, list[bytes]]:
    sets: dict[int, list[bytes]] = {}
    for nal in iter_nals(info.parameter_sets):
        sets.setdefault(nal_type(info.codec, nal), []).append(nal)
    return sets


@dataclass(frozen=True, slots=True)
class HevcProfile:
    profile_space: int
    tier: int
    profile_idc: int
    compat_flags: int  #: 32 bits
    constraint_flags: int  #: 48 bits
    level_idc: int
    max_sub_layers: int
    temporal_id_nested: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int


def parse_hevc_sps(sps: bytes) -> HevcProfile:
    r = _Bits(sps[2:])  # skip the two-byte NAL header
    r.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    nested = r.u(1)
    space, tier, profile_idc = r.u(2), r.u(1), r.u(5)
    compat = r.u(32)
    constraint = r.u(48)
    level = r.u(8)
    sub_profile = [(r.u(1), r.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.u(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in sub_profile:
        if profile_present:
            r.u(88)
        if level_present:
            r.u(8)
    r.ue()  # sps_seq_parameter_set_id
    chroma = r.ue()
    if chroma == 3:
        r.u(1)
    r.ue(), r.ue()  # width, height
    if r.u(1):  # conformance window
        r.ue(), r.ue(), r.ue(), r.ue()
    luma, chroma_depth = r.ue() + 8, r.ue() + 8
    return HevcProfile(
        space, tier, profile_idc, compat, constraint, level, max_sub_layers_minus1 + 1, nested, chroma, luma, chroma_depth
    )


def _h264_high_fields(sps: bytes) -> tuple[int, int, int] | None:
    """(chroma_format_idc, bit_depth_luma, bit_depth_chroma) for High profiles, else None."""
    if sps[1] not in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        return None
    r = _Bits(sps[4:])
    r.ue()  # seq_parameter_set_id
    chroma = r.ue()
    if chroma == 3:
        r.u(1)
    return chroma, r.ue() + 8, r.ue() + 8


def codec_string(info: StreamInfo) -> str:
    """RFC 6381 codec string for playlists: ``avc1.PPCCLL`` or ``hvc1.…``."""
    sets = _split_parameter_sets(info)
    if info.codec == "hevc":
        sps = sets.get(HEVC_SPS)
        if not sps:
            return "hvc1"
        p = parse_hevc_sps(sps[0])
        compat = int(f"{p.compat_flags:032b}"[::-1], 2)  # bits in reverse order
        constraint = p.constraint_flags.to_bytes(6, "big").rstrip(b"\x00")
        parts = [
            "hvc1",
            ("", "A", "B", "C")[p.profile_space] + str(p.profile_idc),
            f"{compat:X}",
            ("L", "H")[p.tier] + str(p.level_idc),
        ]
        parts += [f"{b:X}" for b in constraint]
        return ".".join(parts)
    sps = sets.get(H264_SPS)
    if not sps or len(sps[0]) < 4:
        return "avc1"
    return "avc1." + sps[0][1:4].hex()


def _avcc(info: StreamInfo) -> bytes:
    sets = _split_parameter_sets(info)
    spss, ppss = sets.get(H264_SPS, []), sets.get(H264_PPS, [])
    if not spss or not ppss:
        raise ValueError("H.264 stream without SPS/PPS")
    sps = spss[0]
    out = bytearray(struct.pack(">5B", 1, sps[1], sps[2], sps[3], 0xFF))  # 4-byte NAL lengths
    out.append(0xE0 | len(spss))
    for nal in spss:
        out += struct.pack(">H", len(nal)) + nal
    out.append(len(ppss))
    for nal in ppss:
        out += struct.pack(">H", len(nal)) + nal
    high = _h264_high_fields(sps)
    if high is not None:
        chroma, luma, chroma_depth = high
        out += bytes((0xFC | chroma, 0xF8 | (luma - 8), 0xF8 | (chroma_depth - 8), 0))
    return box(b"avcC", bytes(out))


def _hvcc(info: StreamInfo) -> bytes:
    sets = _split_parameter_sets(info)
    if not sets.get(HEVC_SPS) or not sets.get(HEVC_PPS) or not sets.get(HEVC_VPS):
        raise ValueError("H.265 stream without VPS/SPS/PPS")
    p = parse_hevc_sps(sets[HEVC_SPS][0])
    out = bytearray()
    out.append(1)
    out.append((p.profile_space << 6) | (p.tier << 5) | p.profile_idc)
    out += struct.pack(">I", p.compat_flags) + p.constraint_flags.to_bytes(6, "big")
    out.append(p.level_idc)
    depths = (0xF8 | (p.bit_depth_luma - 8), 0xF8 | (p.bit_depth_chroma - 8))
    # min_spatial_segmentation 0, parallelismType 0, chroma format, bit depths, avgFrameRate 0
    out += struct.pack(">HBBBBH", 0xF000, 0xFC, 0xFC | p.chroma_format_idc, *depths, 0)
    out.append((min(p.max_sub_layers, 7) << 3) | (p.temporal_id_nested << 2) | 3)
    kinds = (HEVC_VPS, HEVC_SPS, HEVC_PPS)
    out.append(len(kinds))
    for kind in kinds:
        nals = sets[kind]
        out += struct.pack(">BH", 0x80 | kind, len(nals))  # array_completeness = 1
        for nal in nals:
            out += struct.pack(">H", len(nal)) + nal
    return box(b"hvcC", bytes(out))


# --------------------------------------------------------------------------------------
# init segment


def init_segment(info: StreamInfo) -> bytes:
    """``ftyp`` + ``moov`` for one video track on the 90 kHz clock (``hvc1`` for H.265)."""
    hevc = info.codec == "hevc"
    entry_kind, config = (b"hvc1", _hvcc(info)) if hevc else (b"avc1", _avcc(info))
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcisommp41" + (b"hvc1" if hevc else b"avc1"))
    w, h = info.width, info.height
    mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIIIIH10x", 0, 0, 1000, 0, 0x10000, 0x100), _MATRIX, bytes(24), struct.pack(">I", 2))
    # tkhd v0: creation, modification, track_ID, reserved, duration, reserved[2], layer,
    # alternate_group, volume, reserved, matrix, width and height in 16.16 fixed point.
    tkhd = full_box(b"tkhd", 0, 3, struct.pack(">IIIII8xhhh2x", 0, 0, 1, 0, 0, 0, 0, 0), _MATRIX, struct.pack(">II", w << 16, h << 16))
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, 0, 0x55C4, 0))  # language "und"
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\x00")
    vmhd = full_box(b"vmhd", 0, 1, bytes(8))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    sample_entry = box(
        entry_kind,
        bytes(6),
        struct.pack(">H", 1),  # data_reference_index
        bytes(16),
        struct.pack(">HHIIIH", w, h, 0x480000, 0x480000, 0, 1),
        bytes(32),  # compressorname
        struct.pack(">Hh", 0x18, -1),
        config,
    )
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", vmhd, dinf, stbl)))
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 0, 0, 0)))
    return ftyp + box(b"moov", mvhd, trak, mvex)


# --------------------------------------------------------------------------------------
# fragments


@dataclass(frozen=True, slots=True)
class Sample:
    data: bytes  #: length-prefixed NAL units
    duration: int  #: ticks
    cts: int  #: pts - dts, ticks
    keyframe: bool


def to_length_prefixed(codec: str, annexb: bytes) -> bytes:
    """Annex B access unit → 4-byte length-prefixed NAL units (AUDs dropped)."""
    aud = HEVC_AUD if codec == "hevc" else H264_AUD
    return b"".join(len(nal).to_bytes(4, "big") + nal for nal in iter_nals(annexb) if nal_type(codec, nal) != aud)


def fragment(sequence: int, base_dts: int, samples: Iterable[Sample]) -> bytes:
    """One CMAF chunk: ``moof`` + ``mdat`` for consecutive samples starting at ``base_dts``."""
    samples = list(samples)
    entries = b"".join(
        struct.pack(">IIIi", s.duration, len(s.data), _SAMPLE_KEY if s.keyframe else _SAMPLE_NON_KEY, s.cts) for s in samples
    )
    # trun: data-offset, sample duration, size, flags and composition offset present.
    trun_flags = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
    trun_size = 12 + 8 + len(entries)
    # moof = 8 + mfhd 16 + traf(8 + tfhd 16 + tfdt 20 + trun)
    moof_size = 8 + 16 + 8 + 16 + 20 + trun_size
    moof = box(
        b"moof",
        full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)),
        box(
            b"traf",
            full_box(b"tfhd", 0, 0x020000, struct.pack(">I", 1)),  # default-base-is-moof
            full_box(b"tfdt", 1, 0, struct.pack(">Q", max(0, base_dts))),
            full_box(b"trun", 1, trun_flags, struct.pack(">Ii", len(samples), moof_size + 8), entries),
        ),
    )
    assert len(moof) == moof_size
    payload = b"".join(s.data for s in samples)
    return moof + struct.pack(">I4s", 8 + len(payload), b"mdat") + payload


# --------------------------------------------------------------------------------------
# packets → parts


@dataclass(frozen=True, slots=True)
class InitSegment:
    number: int  #: 0, 1, … for each stream epoch seen by one fragmenter
    data: bytes
    info: StreamInfo
    codecs: str


@dataclass(frozen=True, slots=True)
class Part:
    """One LL-HLS partial segment; the parts of a segment, joined, are the segment."""

    msn: int  #: media sequence number of the parent segment
    index: int  #: position in the parent segment
    data: bytes
    duration: int  #: ticks
    independent: bool  #: starts with a keyframe
    final: bool  #: the last part of its segment
    init: InitSegment
    discontinuity: bool  #: the parent segment follows a discontinuity
    start_time: float  #: wall-clock time of its first sample (program date time)


@dataclass(slots=True)
class _Open:
    """The segment being built."""

    msn: int
    start_dts: int
    discontinuity: bool
    parts: int = 0
    samples: list[Sample] = field(default_factory=list)
    part_dts: int = 0
    part_ticks: int = 0


class Fragmenter:
    """Cuts a packet stream into segments and parts. Pure and synchronous.

    A sample's duration is the distance to the next packet, so each packet is held until
    the next one arrives; the decision to end a part or a segment is made in that same
    step, which keeps the preload hint (the next part of the open segment) always right.
    Segments are cut at the first keyframe at least ``segment_ticks`` after the segment
    start; a part ends before it would exceed ``part_ticks``.
    """

    def __init__(self, segment_ticks: int, part_ticks: int, *, first_msn: int = 0, wallclock_timeline: bool = False) -> None:
        self.segment_ticks = segment_ticks
        self.part_ticks = part_ticks
        #: Media time is the wall clock (``tfdt`` = epoch seconds x 90 kHz, anchored at the
        #: first keyframe and carried on by the stream's own clock): recordings from any
        #: run of the gateway line up on one increasing timeline, gaps included, so a
        #: player or an export can join stored segments without rewriting timestamps.
        #: Otherwise the hub's timeline (live HLS).
        self.wallclock_timeline = wallclock_timeline
        self._offset: int | None = None if wallclock_timeline else 0
        self.next_msn = first_msn
        self.init: InitSegment | None = None
        self._info: StreamInfo | None = None
        #: The last packet, as (packet, length-prefixed data), until its duration is known.
        self._held: tuple[MediaPacket, bytes] | None = None
        self._open: _Open | None = None
        self._sequence = 0
        self._last_duration = CLOCK_RATE // 25
        self._anchor = (0, 0.0)  # (dts, wallclock) of the epoch's first packet
        self._gap = False
        self._skipped_discontinuity = False
        self._inits = 0

    @property
    def open_msn(self) -> int | None:
        """The segment the next part belongs to, once a keyframe started one."""
        return self._open.msn if self._open else None

    @property
    def open_parts(self) -> int:
        return self._open.parts if self._open else 0

    def push(self, packet: MediaPacket) -> list[Part]:
        out: list[Part] = []
        data = to_length_prefixed(packet.info.codec, packet.data)
        if not data:
            # Nothing but delimiters: no picture, and an empty MP4 sample breaks demuxers.
            # The previous picture simply lasts until the next real one.
            self._skipped_discontinuity |= packet.discontinuity
            return out
        held = self._held[0] if self._held is not None else None
        new_epoch = packet.info is not self._info or packet.discontinuity or self._skipped_discontinuity
        self._skipped_discontinuity = False
        if held is not None and not new_epoch and 0 < packet.dts - held.dts <= MAX_SAMPLE_TICKS:
            duration = packet.dts - held.dts
            self._append(self._held, duration, out)
            self._last_duration = duration
            if packet.keyframe and packet.dts - self._open.start_dts >= self.segment_ticks:
                self._flush(out, final=True)
                self._start(packet, discontinuity=False)
            elif self._open.part_ticks + duration > self.part_ticks:
                self._flush(out, final=False)
            self._held = (packet, data)
            return out
        # Start, a new stream epoch, or a hole in the timeline: close what is open.
        if self._held is not None:
            self._append(self._held, self._last_duration, out)
            self._flush(out, final=True)
            self._held = None
            self._gap = True
        if new_epoch and packet.info is not self._info:
            self._info = packet.info
            self.init = None
        if not packet.keyframe:
            return out  # wait for a picture that decodes on its own
        if self.init is None:
            self.init = InitSegment(self._inits, init_segment(packet.info), packet.info, codec_string(packet.info))
            self._inits += 1
        self._anchor = (packet.dts, packet.wallclock)
        if self._offset is None:
            self._offset = round(packet.wallclock * CLOCK_RATE) - packet.dts
        self._start(packet, discontinuity=self._gap)
        self._gap = False
        self._held = (packet, data)
        return out

    def flush(self) -> list[Part]:
        """End of stream: emit the held packet and close the open segment."""
        out: list[Part] = []
        if self._held is not None:
            self._append(self._held, self._last_duration, out)
            self._flush(out, final=True)
            self._held = None
            self._gap = True
        return out

    # -- internals ---------------------------------------------------------------------
    def _start(self, packet: MediaPacket, *, discontinuity: bool) -> None:
        self._open = _Open(self.next_msn, packet.dts, discontinuity, part_dts=packet.dts)
        self.next_msn += 1

    def _append(self, held: tuple[MediaPacket, bytes], duration: int, out: list[Part]) -> None:
        packet, data = held
        seg = self._open
        assert seg is not None
        if seg.samples and seg.part_ticks + duration > self.part_ticks:
            self._flush(out, final=False)  # the frame was longer than expected
        if not seg.samples:
            seg.part_dts = packet.dts
        seg.samples.append(Sample(data, duration, packet.pts - packet.dts, packet.keyframe))
        seg.part_ticks += duration

    def _flush(self, out: list[Part], *, final: bool) -> None:
        seg = self._open
        assert seg is not None and self.init is not None
        if not seg.samples:
            return
        self._sequence += 1
        anchor_dts, anchor_wall = self._anchor
        out.append(
            Part(
                msn=seg.msn,
                index=seg.parts,
                data=fragment(self._sequence, seg.part_dts + (self._offset or 0), seg.samples),
                duration=seg.part_ticks,
                independent=seg.samples[0].keyframe,
                final=final,
                init=self.init,
                discontinuity=seg.discontinuity,
                start_time=anchor_wall + (seg.part_dts - anchor_dts) / CLOCK_RATE,
            )
        )
        seg.parts += 1
        seg.samples = []
        seg.part_ticks = 0
        if final:
            self._open = None
