"""LL-HLS playlists as pure functions of a snapshot of the live window (RFC 8216bis)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

MEDIA_TYPE = "application/vnd.apple.mpegurl"
VERSION = 9


@dataclass(frozen=True, slots=True)
class PartEntry:
    uri: str
    duration: float  #: seconds
    independent: bool


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """A segment of the window; ``uri`` is None while it is still being built (parts only)."""

    msn: int
    uri: str | None
    duration: float  #: seconds (of the parts so far while it is open)
    start_time: float  #: wall clock of its first picture, for EXT-X-PROGRAM-DATE-TIME
    discontinuity: bool
    init_uri: str
    #: Parts listed for this segment; empty for segments far from the live edge.
    parts: tuple[PartEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    target_duration: int  #: whole seconds, at least every segment's rounded duration
    part_target: float  #: seconds, at least every part's duration
    media_sequence: int
    discontinuity_sequence: int
    segments: tuple[SegmentEntry, ...]  #: complete ones, then the open one if it has parts
    preload_hint: str | None


def target_duration(max_segment_seconds: float, configured: float) -> int:
    """Honest EXT-X-TARGETDURATION: no segment may be longer (a long GOP makes long segments)."""
    return max(1, math.ceil(configured - 1e-9), math.ceil(max_segment_seconds - 1e-6))


def _pdt(ts: float) -> str:
    when = datetime.fromtimestamp(ts, tz=timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _seconds(value: float) -> str:
    return f"{value:.5f}"


def render_media(p: MediaPlaylist) -> str:
    part_hold_back = 3 * p.part_target
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{p.target_duration}",
        f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={_seconds(part_hold_back)}",
        f"#EXT-X-PART-INF:PART-TARGET={_seconds(p.part_target)}",
        f"#EXT-X-MEDIA-SEQUENCE:{p.media_sequence}",
    ]
    if p.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{p.discontinuity_sequence}")
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    current_map: str | None = None
    for i, seg in enumerate(p.segments):
        if seg.discontinuity and i > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        if seg.init_uri != current_map:
            lines.append(f'#EXT-X-MAP:URI="{seg.init_uri}"')
            current_map = seg.init_uri
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(seg.start_time)}")
        for part in seg.parts:
            extra = ",INDEPENDENT=YES" if part.independent else ""
            lines.append(f'#EXT-X-PART:DURATION={_seconds(part.duration)},URI="{part.uri}"{extra}')
        if seg.uri is not None:
            lines.append(f"#EXTINF:{_seconds(seg.duration)},")
            lines.append(seg.uri)
    if p.preload_hint:
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{p.preload_hint}"')
    return "\n".join(lines) + "\n"


def render_multivariant(
    *, uri: str, codecs: str, width: int, height: int, bandwidth: int, frame_rate: float | None = None
) -> str:
    attrs = [f"BANDWIDTH={max(1, bandwidth)}", f'CODECS="{codecs}"', f"RESOLUTION={width}x{height}"]
    if frame_rate:
        attrs.append(f"FRAME-RATE={frame_rate:.3f}")
    return "\n".join(
        [
            "#EXTM3U",
            f"#EXT-X-VERSION:{VERSION}",
            "#EXT-X-INDEPENDENT-SEGMENTS",
            "#EXT-X-STREAM-INF:" + ",".join(attrs),
            uri,
        ]
    ) + "\n"
