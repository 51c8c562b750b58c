"""An independent LL-HLS checker for tests: fetches a live playlist and everything it names.

Checks what a player relies on, from the bytes served (never from the server's objects):

- the media playlist's tags (version, target duration, part target, server control, map);
- every segment and every INDEPENDENT part decodes from a keyframe (PyAV: the first
  picture of init + media is a key frame), and a part that starts with a keyframe is
  marked INDEPENDENT (``trun`` sample flags);
- part durations within PART-TARGET, segment durations within TARGETDURATION, and the
  durations the playlist states match the samples' durations in the ``trun`` boxes;
- a segment is exactly its parts, and ``tfdt`` runs on without holes inside a segment;
- across reloads the media sequence never goes back and PROGRAM-DATE-TIME increases.

Usable from the command line too: ``python -m tests.hls_validator URL [seconds]``, with an
API token in ``CITYGATE_TOKEN`` when the gateway asks for one.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import struct
import sys
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urljoin

import aiohttp
import av

#: Durations in a playlist are decimals: allow their rounding, nothing more.
ROUNDING = 0.001


@dataclass
class PartLine:
    uri: str
    duration: float
    independent: bool


@dataclass
class SegmentLine:
    msn: int
    uri: str | None  # None for the open segment (parts only)
    duration: float | None
    pdt: datetime | None
    discontinuity: bool
    map_uri: str | None
    parts: list[PartLine] = field(default_factory=list)


@dataclass
class Playlist:
    text: str
    version: int | None = None
    target_duration: int | None = None
    part_target: float | None = None
    part_hold_back: float | None = None
    can_block_reload: bool = False
    media_sequence: int = 0
    segments: list[SegmentLine] = field(default_factory=list)
    preload_hint: str | None = None


_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def _attrs(value: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTR.findall(value)}


def parse_media_playlist(text: str) -> Playlist:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise AssertionError("playlist does not start with #EXTM3U")
    pl = Playlist(text)
    pending = SegmentLine(msn=-1, uri=None, duration=None, pdt=None, discontinuity=False, map_uri=None)
    current_map: str | None = None
    for line in lines[1:]:
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-VERSION":
            pl.version = int(value)
        elif tag == "#EXT-X-TARGETDURATION":
            pl.target_duration = int(value)
        elif tag == "#EXT-X-PART-INF":
            pl.part_target = float(_attrs(value)["PART-TARGET"])
        elif tag == "#EXT-X-SERVER-CONTROL":
            a = _attrs(value)
            pl.can_block_reload = a.get("CAN-BLOCK-RELOAD") == "YES"
            pl.part_hold_back = float(a["PART-HOLD-BACK"]) if "PART-HOLD-BACK" in a else None
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            pl.media_sequence = int(value)
        elif tag == "#EXT-X-MAP":
            current_map = _attrs(value)["URI"]
        elif tag == "#EXT-X-DISCONTINUITY":
            pending.discontinuity = True
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            pending.pdt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif tag == "#EXT-X-PART":
            a = _attrs(value)
            pending.parts.append(PartLine(a["URI"], float(a["DURATION"]), a.get("INDEPENDENT") == "YES"))
        elif tag == "#EXTINF":
            pending.duration = float(value.split(",")[0])
        elif tag == "#EXT-X-PRELOAD-HINT":
            a = _attrs(value)
            assert a.get("TYPE") == "PART", f"preload hint of type {a.get('TYPE')}"
            pl.preload_hint = a["URI"]
        elif not line.startswith("#"):
            pending.uri = line
            pending.map_uri = current_map
            pending.msn = pl.media_sequence + len(pl.segments)
            pl.segments.append(pending)
            pending = SegmentLine(msn=-1, uri=None, duration=None, pdt=None, discontinuity=False, map_uri=None)
    if pending.parts:  # the open segment
        pending.map_uri = current_map
        pending.msn = pl.media_sequence + len(pl.segments)
        pl.segments.append(pending)
    return pl


# --------------------------------------------------------------------------------------
# MP4 boxes


def iter_boxes(data: bytes, offset: int = 0, end: int | None = None):
    end = len(data) if end is None else end
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        if size < header or offset + size > end:
            raise AssertionError(f"bad box {kind!r} of size {size} at {offset}")
        yield kind.decode("latin-1"), offset + header, offset + size
        offset += size


@dataclass
class Fragment:
    base_dts: int
    durations: list[int]
    keyframes: list[bool]

    @property
    def duration(self) -> int:
        return sum(self.durations)


def parse_fragments(data: bytes) -> list[Fragment]:
    """Every ``moof`` of a media segment or part: tfdt, sample durations and sync flags."""
    fragments: list[Fragment] = []
    kinds = [k for k, _, _ in iter_boxes(data)]
    assert kinds and kinds[0] in ("moof", "styp"), f"media data starts with {kinds[:1]}"
    for kind, start, end in iter_boxes(data):
        if kind != "moof":
            continue
        for k, s, e in iter_boxes(data, start, end):
            if k != "traf":
                continue
            base, trun = None, None
            default_duration, default_flags = 0, 0
            for k2, s2, e2 in iter_boxes(data, s, e):
                if k2 == "tfdt":
                    version = data[s2]
                    base = struct.unpack_from(">Q" if version == 1 else ">I", data, s2 + 4)[0]
                elif k2 == "tfhd":
                    flags = int.from_bytes(data[s2 + 1 : s2 + 4], "big")
                    pos = s2 + 8 + (8 if flags & 1 else 0) + (4 if flags & 2 else 0)
                    if flags & 0x8:
                        default_duration = struct.unpack_from(">I", data, pos)[0]
                        pos += 4
                    if flags & 0x10:
                        pos += 4
                    if flags & 0x20:
                        default_flags = struct.unpack_from(">I", data, pos)[0]
                elif k2 == "trun":
                    trun = (s2, e2)
            assert base is not None and trun is not None, "traf without tfdt or trun"
            s2 = trun[0]
            flags = int.from_bytes(data[s2 + 1 : s2 + 4], "big")
            count = struct.unpack_from(">I", data, s2 + 4)[0]
            pos = s2 + 8 + (4 if flags & 1 else 0)
            first_flags = None
            if flags & 4:
                first_flags = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            durations, keys = [], []
            for i in range(count):
                duration, sample_flags = default_duration, default_flags
                if flags & 0x100:
                    duration = struct.unpack_from(">I", data, pos)[0]
                    pos += 4
                if flags & 0x200:
                    pos += 4
                if flags & 0x400:
                    sample_flags = struct.unpack_from(">I", data, pos)[0]
                    pos += 4
                if flags & 0x800:
                    pos += 4
                if i == 0 and first_flags is not None:
                    sample_flags = first_flags
                durations.append(duration)
                keys.append(not (sample_flags >> 16) & 1)  # sample_is_non_sync_sample
            fragments.append(Fragment(base, durations, keys))
    return fragments


def timescale(init: bytes) -> int:
    def find(kind: str, start: int, end: int):
        for k, s, e in iter_boxes(init, start, end):
            if k == kind:
                return s, e
        raise AssertionError(f"init segment has no {kind}")

    moov = find("moov", 0, len(init))
    trak = find("trak", *moov)
    mdia = find("mdia", *trak)
    s, _ = find("mdhd", *mdia)
    version = init[s]
    return struct.unpack_from(">I", init, s + (20 if version == 1 else 12))[0]


def track_size(init: bytes) -> tuple[float, float]:
    """The track's width and height as the ``tkhd`` box states them (16.16 fixed point)."""
    for kind, start, end in iter_boxes(init):
        if kind == "moov":
            for k, s, e in iter_boxes(init, start, end):
                if k == "trak":
                    for k2, s2, e2 in iter_boxes(init, s, e):
                        if k2 == "tkhd":
                            size = (4 + 80) if init[s2] == 0 else (4 + 92)
                            assert e2 - s2 == size, f"tkhd is {e2 - s2} bytes, expected {size}"
                            w, h = struct.unpack_from(">II", init, e2 - 8)
                            return w / 65536, h / 65536
    raise AssertionError("init segment has no tkhd")


def first_picture_is_key(init: bytes, media: bytes) -> bool:
    """Decode the first picture of ``init + media`` with PyAV; True if it is a key frame."""
    with av.open(io.BytesIO(init + media), format="mp4") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            for frame in packet.decode():
                return bool(frame.key_frame)
            if not packet.is_keyframe:
                return False
        for frame in stream.codec_context.decode(None):
            return bool(frame.key_frame)
    return False


# --------------------------------------------------------------------------------------
# the check


@dataclass
class Report:
    reloads: int = 0
    segments: int = 0
    parts: int = 0
    problems: list[str] = field(default_factory=list)
    media_sequences: list[int] = field(default_factory=list)
    codecs: set[str] = field(default_factory=set)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)


class Validator:
    def __init__(self, session: aiohttp.ClientSession, playlist_url: str) -> None:
        self.session = session
        self.url = playlist_url
        self.report = Report()
        self._inits: dict[str, bytes] = {}
        self._checked_segments: set[int] = set()
        self._parts: dict[str, bytes] = {}  # by URI: each part is fetched once
        self._last_pdt: dict[int, datetime] = {}

    async def fetch(self, uri: str) -> bytes:
        async with self.session.get(urljoin(self.url, uri)) as resp:
            if resp.status != 200:
                raise AssertionError(f"GET {uri}: HTTP {resp.status}")
            return await resp.read()

    async def run(self, seconds: float) -> Report:
        """Reload the playlist for ``seconds`` (blocking reloads), checking everything new."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        query = ""
        while True:
            async with self.session.get(self.url + query) as resp:
                assert resp.status == 200, f"playlist: HTTP {resp.status}"
                assert resp.content_type == "application/vnd.apple.mpegurl", resp.content_type
                text = await resp.text()
            pl = parse_media_playlist(text)
            await self.check_playlist(pl)
            if loop.time() > deadline:
                return self.report
            nxt = pl.segments[-1]
            if nxt.uri is None:
                query = f"?_HLS_msn={nxt.msn}&_HLS_part={len(nxt.parts)}"
            else:
                query = f"?_HLS_msn={nxt.msn + 1}&_HLS_part=0"

    async def check_playlist(self, pl: Playlist) -> None:
        r = self.report
        r.reloads += 1
        r.check(pl.version is not None and pl.version >= 9, f"EXT-X-VERSION {pl.version}")
        r.check(pl.target_duration is not None, "no EXT-X-TARGETDURATION")
        r.check(pl.part_target is not None, "no EXT-X-PART-INF")
        r.check(pl.can_block_reload, "no CAN-BLOCK-RELOAD=YES")
        if pl.part_target and pl.part_hold_back is not None:
            r.check(pl.part_hold_back >= 2 * pl.part_target, f"PART-HOLD-BACK {pl.part_hold_back} < 2 x PART-TARGET")
        r.check(pl.preload_hint is not None, "no EXT-X-PRELOAD-HINT")
        if r.media_sequences:
            r.check(pl.media_sequence >= r.media_sequences[-1], f"media sequence went back: {r.media_sequences[-1]} -> {pl.media_sequence}")
        r.media_sequences.append(pl.media_sequence)
        previous_pdt: datetime | None = None
        for seg in pl.segments:
            r.check(seg.map_uri is not None, f"segment {seg.msn} without EXT-X-MAP")
            if seg.pdt is not None:
                if previous_pdt is not None:
                    r.check(seg.pdt > previous_pdt, f"PDT of segment {seg.msn} does not increase")
                seen = self._last_pdt.setdefault(seg.msn, seg.pdt)
                r.check(seen == seg.pdt, f"PDT of segment {seg.msn} changed between reloads")
                previous_pdt = seg.pdt
            else:
                r.check(False, f"segment {seg.msn} without EXT-X-PROGRAM-DATE-TIME")
            await self.check_segment(pl, seg)

    async def _init(self, uri: str) -> bytes:
        if uri not in self._inits:
            self._inits[uri] = await self.fetch(uri)
            with av.open(io.BytesIO(self._inits[uri]), format="mp4") as c:
                s = c.streams.video[0]
                self.report.codecs.add(f"{s.codec_context.name}/{s.codec_tag}")
                tkhd = track_size(self._inits[uri])
                self.report.check(
                    tkhd == (s.codec_context.width, s.codec_context.height), f"{uri}: tkhd says {tkhd}, the SPS {s.codec_context.width}x{s.codec_context.height}"
                )
        return self._inits[uri]

    async def check_segment(self, pl: Playlist, seg: SegmentLine) -> None:
        r = self.report
        assert seg.map_uri is not None
        init = await self._init(seg.map_uri)
        scale = timescale(init)
        part_bytes: list[bytes] = []
        for i, part in enumerate(seg.parts):
            key = part.uri
            if key in self._parts:
                part_bytes.append(self._parts[key])
                continue
            data = self._parts[key] = await self.fetch(part.uri)
            part_bytes.append(data)
            r.parts += 1
            frags = parse_fragments(data)
            actual = sum(f.duration for f in frags) / scale
            r.check(abs(actual - part.duration) <= ROUNDING, f"part {key}: playlist says {part.duration}s, samples {actual:.5f}s")
            if pl.part_target is not None:
                r.check(part.duration <= pl.part_target + ROUNDING, f"part {key}: {part.duration}s > PART-TARGET {pl.part_target}")
                final = seg.uri is not None and i == len(seg.parts) - 1
                if not final:  # only a segment's last part may be short
                    r.check(part.duration >= 0.85 * pl.part_target - ROUNDING, f"part {key}: {part.duration}s < 85% of PART-TARGET")
            starts_key = frags[0].keyframes[0]
            r.check(starts_key == part.independent, f"part {key}: starts with keyframe={starts_key} but INDEPENDENT={part.independent}")
            if part.independent:
                r.check(first_picture_is_key(init, data), f"part {key}: INDEPENDENT but its first picture is not a key frame")
        if seg.parts:
            r.check(seg.parts[0].independent, f"segment {seg.msn}: first part not INDEPENDENT")
        if seg.uri is None or seg.msn in self._checked_segments:
            return
        self._checked_segments.add(seg.msn)
        r.segments += 1
        data = await self.fetch(seg.uri)
        frags = parse_fragments(data)
        actual = sum(f.duration for f in frags) / scale
        assert seg.duration is not None
        r.check(abs(actual - seg.duration) <= ROUNDING, f"segment {seg.msn}: EXTINF {seg.duration}s, samples {actual:.5f}s")
        if pl.target_duration is not None:
            r.check(seg.duration <= pl.target_duration + ROUNDING, f"segment {seg.msn}: {seg.duration}s > TARGETDURATION {pl.target_duration}")
        r.check(frags[0].keyframes[0], f"segment {seg.msn}: first sample not a sync sample")
        r.check(first_picture_is_key(init, data), f"segment {seg.msn}: first picture is not a key frame")
        for a, b in zip(frags, frags[1:]):
            r.check(b.base_dts == a.base_dts + a.duration, f"segment {seg.msn}: tfdt hole {a.base_dts + a.duration} -> {b.base_dts}")
        if seg.parts:
            r.check(data == b"".join(part_bytes), f"segment {seg.msn} is not the concatenation of its parts")


async def validate(session: aiohttp.ClientSession, playlist_url: str, seconds: float = 3.0) -> Report:
    return await Validator(session, playlist_url).run(seconds)


async def _main(url: str, seconds: float) -> int:
    token = os.environ.get("CITYGATE_TOKEN")  # an API token, sent as a bearer header
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession(headers=headers) as session:
        report = await validate(session, url, seconds)
    print(f"{report.reloads} reloads, {report.segments} segments, {report.parts} parts, codecs {sorted(report.codecs)}")
    for problem in report.problems:
        print("PROBLEM:", problem)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 5.0)))
