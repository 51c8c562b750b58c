"""A small LL-HLS client that measures latency with the demo camera's time code.

It behaves like a low-latency player at the live edge: blocking playlist reloads
(``_HLS_msn``/``_HLS_part`` for the next part) issued together with a request for the
preload-hinted part, so each part is fetched the moment the server has it. Every part is
demuxed with PyAV and fed to one persistent H.264 decoder; for each decoded frame,
latency = wall clock after decoding − the time code burned into the frame.

It uses only what the playlists say (URIs, media sequence, parts, hints), not the
gateway's URI layout.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
import av

from _client import luma_top

ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def _attrs(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in ATTR.findall(line.split(":", 1)[1])}


@dataclass
class PlaylistSegment:
    msn: int
    map_uri: str | None
    parts: list[tuple[str, bool]] = field(default_factory=list)  #: (uri, independent)
    uri: str | None = None  #: None while the segment is still open


@dataclass
class Playlist:
    segments: list[PlaylistSegment]
    preload_hint: str | None
    part_hold_back: float | None

    @property
    def next_part(self) -> tuple[int, int]:
        """(msn, part index) of the first part not listed yet: what the preload hint names."""
        last = self.segments[-1]
        return (last.msn + 1, 0) if last.uri is not None else (last.msn, len(last.parts))

    def find(self, msn: int, index: int) -> tuple[str, str | None] | None:
        """(part URI, map URI) of a listed part."""
        for seg in self.segments:
            if seg.msn == msn and index < len(seg.parts):
                return seg.parts[index][0], seg.map_uri
        return None


def parse_media_playlist(text: str) -> Playlist:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an M3U8 playlist")
    msn = 0
    map_uri: str | None = None
    hint = None
    hold_back = None
    segments: list[PlaylistSegment] = []
    current: PlaylistSegment | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MAP:"):
            map_uri = _attrs(line)["URI"]
        elif line.startswith("#EXT-X-SERVER-CONTROL:"):
            value = _attrs(line).get("PART-HOLD-BACK")
            hold_back = float(value) if value else None
        elif line.startswith("#EXT-X-PART:"):
            attrs = _attrs(line)
            if current is None:
                current = PlaylistSegment(msn, map_uri)
            current.parts.append((attrs["URI"], attrs.get("INDEPENDENT") == "YES"))
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            attrs = _attrs(line)
            if attrs.get("TYPE") == "PART":
                hint = attrs["URI"]
        elif not line.startswith("#"):
            seg = current or PlaylistSegment(msn, map_uri)
            seg.uri = line
            segments.append(seg)
            current = None
            msn += 1
    if current is not None:
        segments.append(current)
    if not segments:
        raise ValueError("the playlist lists no segment")
    return Playlist(segments, hint, hold_back)


def variant_uri(text: str) -> str | None:
    """The first variant of a multivariant playlist (None if ``text`` is a media playlist)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:") and i + 1 < len(lines):
            return lines[i + 1]
    return None


class PartDecoder:
    """Decodes CMAF parts of one init segment with a decoder that lives across parts."""

    def __init__(self, init: bytes) -> None:
        self.init = init
        self._decoder: av.CodecContext | None = None

    def decode(self, part: bytes, read_timecode) -> list[float]:
        """Decode ``part``; for every frame, now (ms) − its time code."""
        latencies = []
        with av.open(io.BytesIO(self.init + part), format="mp4") as container:
            stream = container.streams.video[0]
            if self._decoder is None:
                self._decoder = av.CodecContext.create(stream.codec_context.name, "r")
                self._decoder.extradata = stream.codec_context.extradata
                self._decoder.thread_count = 1  # no frame threads: a frame leaves as soon as it is decoded
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                for frame in self._decoder.decode(packet):
                    stamp = read_timecode(luma_top(frame))
                    if stamp is not None:
                        latencies.append(time.time() * 1000 - stamp)
        return latencies


@dataclass
class HlsResult:
    latencies: list[float]  #: ms, every frame after the warm-up
    newest: list[float]  #: ms, the newest frame of each part after the warm-up
    parts: int
    part_hold_back: float | None
    requests: int = 0  #: HTTP GETs, warm-up included
    seconds: float = 0.0  #: from the first request to the last response


class LlHlsClient:
    def __init__(self, http: aiohttp.ClientSession, url: str, read_timecode) -> None:
        self.http = http
        self.url = url  #: the multivariant (or media) playlist
        self.read_timecode = read_timecode
        self.requests = 0

    async def _get(self, url: str, *, text: bool = False):
        self.requests += 1
        async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=15)) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {url}: {resp.status} {(await resp.text())[:200]}")
            return await resp.text() if text else await resp.read()

    async def run(self, seconds: float, warmup: float) -> HlsResult:
        began = time.monotonic()
        top = await self._get(self.url, text=True)
        media_url = urljoin(self.url, variant_uri(top) or "")
        playlist = parse_media_playlist(top if media_url == self.url else await self._get(media_url, text=True))
        decoders: dict[str, PartDecoder] = {}
        result = HlsResult([], [], 0, playlist.part_hold_back)

        async def decode(part_uri: str, map_uri: str | None, counted: bool) -> None:
            data = await self._get(urljoin(media_url, part_uri))
            key = map_uri or ""
            if key not in decoders:
                decoders.clear()
                decoders[key] = PartDecoder(await self._get(urljoin(media_url, map_uri)) if map_uri else b"")
            latencies = decoders[key].decode(data, self.read_timecode)
            if counted and latencies:
                result.latencies.extend(latencies)
                result.newest.append(latencies[-1])
                result.parts += 1

        # Start decoding at the last independent part, then follow the live edge.
        listed = [(seg.msn, i, uri, seg.map_uri) for seg in playlist.segments for i, (uri, ind) in enumerate(seg.parts) if ind]
        if listed:
            msn, index, _, _ = listed[-1]
            for seg in playlist.segments:
                for i, (uri, _) in enumerate(seg.parts):
                    if (seg.msn, i) >= (msn, index):
                        await decode(uri, seg.map_uri, counted=False)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < warmup + seconds:
            if playlist.preload_hint is None:
                raise RuntimeError("the live playlist has no preload hint: the stream ended?")
            msn, index = playlist.next_part
            reload_url = f"{media_url}?_HLS_msn={msn}&_HLS_part={index}"
            map_uri = playlist.segments[-1].map_uri
            _, reloaded = await asyncio.gather(
                decode(playlist.preload_hint, map_uri, counted=elapsed >= warmup),
                self._get(reload_url, text=True),
            )
            playlist = parse_media_playlist(reloaded)
        result.requests, result.seconds = self.requests, time.monotonic() - began
        return result
