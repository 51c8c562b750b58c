"""Playback of recordings as HLS VOD over the catalogue: pure functions, no I/O.

Every stored segment is a self-contained fMP4 file (init section + fragments) whose media
time is the wall clock (epoch seconds on the 90 kHz clock), so each one is mapped with its
own ``EXT-X-MAP`` (a byte range over its init section) and follows an
``EXT-X-DISCONTINUITY``; timestamps still increase across segments and gaps, so players
that ignore discontinuities (ffmpeg) play the range end to end. ``EXT-X-PROGRAM-DATE-TIME``
gives each segment's wall-clock start, which is how a player seeks by time of day.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.recording.index import Gap, Segment


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mask_tag(digest: str) -> str:
    """Names a mask set in segment URLs, so a browser's cached copy is one of these masks."""
    return digest[:16] or "none"


def vod_playlist(items: Sequence[Segment | Gap], segment_url: str, *, start_at: float | None = None) -> str:
    """An HLS VOD playlist; ``segment_url`` has a ``{id}`` placeholder.

    Every segment URL names the masks it is served under (``mask=``, from the items'
    ``mask_digest``); an item with ``init_bytes`` 0 (re-masked on request) is addressed as
    ``?part=init`` and ``?part=media`` instead of by byte ranges.

    ``start_at`` (wall clock) makes players begin at that moment (``EXT-X-START``).
    """
    segs = [s for s in items if isinstance(s, Segment)]
    target = max((math.ceil(s.duration) for s in segs), default=1)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-DISCONTINUITY-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    if start_at is not None and segs:
        offset = 0.0
        for s in segs:
            if s.end > start_at:
                offset += max(0.0, start_at - s.start)
                break
            offset += s.duration
        lines.append(f"#EXT-X-START:TIME-OFFSET={offset:.3f},PRECISE=YES")
    for index, s in enumerate(segs):
        url = segment_url.format(id=s.id)
        tag = f"mask={mask_tag(s.mask_digest)}"
        if index:
            lines.append("#EXT-X-DISCONTINUITY")
        if s.init_bytes > 0:
            lines.append(f'#EXT-X-MAP:URI="{url}?{tag}",BYTERANGE="{s.init_bytes}@0"')
        else:  # re-masked when fetched: its layout is known only then, so by part
            lines.append(f'#EXT-X-MAP:URI="{url}?part=init&{tag}"')
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso(s.start)}")
        lines.append(f"#EXTINF:{s.duration:.3f},")
        if s.init_bytes > 0:
            lines.append(f"#EXT-X-BYTERANGE:{s.bytes - s.init_bytes}@{s.init_bytes}")
            lines.append(f"{url}?{tag}")
        else:
            lines.append(f"{url}?part=media&{tag}")
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
