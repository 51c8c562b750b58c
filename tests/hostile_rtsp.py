"""A hostile camera for tests: an RTSP server on loopback that breaks the protocol on purpose.

Each camera path (``rtsp://127.0.0.1:<port>/<name>``) has a :class:`Mode`, set with
:meth:`HostileRtspServer.set_mode` (which also drops that path's open connections, so the
client reconnects into the new mode). Every mode but ``good`` and ``timestamp-jumps`` makes the
stream unusable in one particular way; a client must notice and say which:

- ``bad-sdp``: DESCRIBE answers an SDP whose only video section has a non-numeric payload type,
  a zero clock rate, a ``NaN`` frame rate and a binary line;
- ``huge-content-length``: DESCRIBE announces a body of 2,000,000,000 bytes and sends a few MB;
- ``wrong-channel``: PLAY works, but RTP comes on interleaved channel 6 (SETUP said 0-1);
- ``truncated-rtp``: every RTP packet is cut short (shorter than its header, CSRCs or
  extension beyond the end, padding longer than the packet);
- ``oversized-rtp``: one picture that never ends: FU-A fragments of 64 KiB, one timestamp,
  no marker, about 21 MB of them;
- ``garbage-nal``: valid RTP headers around random payloads (random NAL unit types);
- ``bitflip-h264`` / ``bitflip-h265``: real encoded pictures (``tests.media_fixtures``) with
  bits flipped in every NAL unit, parameter sets included;
- ``timestamp-jumps``: real pictures whose RTP clock wraps past 2**32, jumps 40 s forward,
  30 s back, 3 s back and 5 s forward, then the connection drops in the middle of a frame;
- ``redirect-loop``: DESCRIBE answers 302 to another path of ours, which answers 302 again,
  for ever;
- ``slowloris``: every answer dribbles out one byte every 50 ms;
- ``disconnect``: a second of good pictures, then half an interleaved frame and a reset.

All corruption is deterministic: a ``random.Random`` seeded per server, path and connection.
Pictures are encoded once per server, in a worker thread, with PyAV (no canned bytes).

Use :class:`HostileRtspServer` inside an event loop (``async with``), or :func:`serve_in_thread`
to run it on a loop of its own, as a camera apart from the gateway under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.rtsp.rtp import RtpPacketizer
from tests.media_fixtures import encode_frames

logger = logging.getLogger(__name__)

FPS = 25
TICKS = 90_000 // FPS
SESSION_ID = "bad1dea5"


class Mode(enum.StrEnum):
    GOOD = "good"
    BAD_SDP = "bad-sdp"
    HUGE_CONTENT_LENGTH = "huge-content-length"
    WRONG_CHANNEL = "wrong-channel"
    TRUNCATED_RTP = "truncated-rtp"
    OVERSIZED_RTP = "oversized-rtp"
    GARBAGE_NAL = "garbage-nal"
    BITFLIP_H264 = "bitflip-h264"
    BITFLIP_H265 = "bitflip-h265"
    TIMESTAMP_JUMPS = "timestamp-jumps"
    REDIRECT_LOOP = "redirect-loop"
    SLOWLORIS = "slowloris"
    DISCONNECT = "disconnect"


#: Every fault, in the order a test cycles through them.
FAULTS = tuple(m for m in Mode if m is not Mode.GOOD)

#: (frame index, RTP clock jump in ticks) of ``timestamp-jumps``; the clock starts 0.4 s
#: before the 32-bit wrap, so it wraps around frame 10.
JUMPS = ((12, 40 * 90_000), (24, -30 * 90_000), (36, -3 * 90_000), (48, 5 * 90_000))
JUMP_FRAMES = 60


def flip_bits(data: bytes, rng: random.Random, per_bytes: int = 24) -> bytes:
    """``data`` with one bit flipped per ``per_bytes`` bytes (at least two), at random."""
    out = bytearray(data)
    for _ in range(max(2, len(out) // per_bytes)):
        at = rng.randrange(len(out))
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


def corrupt_access_unit(codec: str, unit: bytes, rng: random.Random) -> bytes:
    """Flip bits in every NAL unit of an Annex B access unit, start codes left intact
    (so the units still split where they did: the damage is inside them)."""
    from gateway.media.h26x import START_CODE, iter_nals

    header = 2 if codec == "hevc" else 1
    out = bytearray()
    for nal in iter_nals(unit):
        body = flip_bits(nal[header:], rng, per_bytes=16) if len(nal) > header else nal[header:]
        # keep the NAL header: the unit keeps its type (an SPS stays an "SPS"), its content is broken
        out += START_CODE + nal[:header] + body.replace(b"\x00\x00\x01", b"\x00\x00\x03")
    return bytes(out)


def truncate_rtp(packet: bytes, rng: random.Random) -> bytes:
    """One of four ways to make an RTP packet unparseable."""
    way = rng.randrange(4)
    if way == 0:  # shorter than the fixed header
        return packet[: rng.randrange(1, 12)]
    if way == 1:  # 15 CSRCs announced, none there
        return bytes([packet[0] | 0x0F]) + packet[1:12]
    if way == 2:  # a header extension longer than the packet
        return bytes([packet[0] | 0x10]) + packet[1:12] + b"\xbe\xde\xff\xff"
    return bytes([packet[0] | 0x20]) + packet[1:40] + bytes([255])  # padding longer than the packet


@dataclass
class Connection:
    """One client connection, as the test may want to look at it."""

    path: str
    mode: Mode
    requests: list[str] = field(default_factory=list)


class HostileRtspServer:
    """The hostile camera. Use inside an event loop: ``async with HostileRtspServer() as cam``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, seed: int = 21) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.modes: dict[str, Mode] = {}
        #: Every connection so far, in order of arrival.
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._writers: dict[asyncio.StreamWriter, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._frames: dict[str, list[bytes]] = {}

    def url(self, name: str) -> str:
        return f"rtsp://{self.host}:{self.port}/{name}"

    def set_mode(self, name: str, mode: Mode) -> None:
        """Serve ``mode`` at path ``name`` from the next connection on; drop the open ones."""
        self.modes[name] = Mode(mode)
        for writer, path in list(self._writers.items()):
            if path == name:
                writer.transport.abort()

    async def start(self) -> None:
        # Encoded once: 2 s of 320x240 pictures, a keyframe every 10, parameter sets in band.
        h264, hevc = await asyncio.gather(
            asyncio.to_thread(encode_frames, 50, codec="libx264"), asyncio.to_thread(encode_frames, 50, codec="libx265")
        )
        self._frames = {"h264": h264, "hevc": hevc}
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # every handler then ends on its own (never cancelled:
        # asyncio logs a cancelled connection callback as an error)
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 10)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> HostileRtspServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one connection ----------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn: Connection | None = None
        streamer: asyncio.Task[None] | None = None
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                method, uri, headers = request
                path = uri.split("://", 1)[-1].partition("/")[2]
                name = path.split("/", 1)[0]
                if conn is None:
                    mode = self.modes.get(name, Mode.GOOD)
                    conn = Connection(name, mode)
                    self.connections.append(conn)
                    self._writers[writer] = name
                    rng = random.Random(f"{self.seed}:{name}:{len(self.connections)}")
                conn.requests.append(method)
                answer = self._answer(conn, method, path, headers)
                if conn.mode is Mode.SLOWLORIS:
                    for byte in answer:
                        if writer.is_closing():
                            return
                        writer.write(bytes([byte]))
                        await writer.drain()
                        await asyncio.sleep(0.05)
                    continue
                writer.write(answer)
                await writer.drain()
                if method == "DESCRIBE" and conn.mode is Mode.HUGE_CONTENT_LENGTH:
                    for _ in range(64):  # 4 MB of the 2 GB announced, then nothing
                        writer.write(b"a=x-filler:" + b"x" * 65_000 + b"\r\n")
                        await writer.drain()
                    while await reader.read(65536):  # until the client gives up
                        pass
                    return
                if method == "PLAY" and streamer is None:
                    streamer = asyncio.create_task(self._stream(conn, writer, rng))
                if method == "TEARDOWN":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            if streamer is not None:
                streamer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await streamer
            self._writers.pop(writer, None)
            writer.transport.abort()
            self._tasks.discard(task)

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
        while True:
            first = await reader.read(1)
            if not first:
                return None
            if first == b"$":  # the client's interleaved RTCP: skip it
                head = await reader.readexactly(3)
                await reader.readexactly(int.from_bytes(head[1:3], "big"))
                continue
            if first in b"\r\n":
                continue
            head = first + await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, uri = (lines[0].split(" ") + ["", ""])[:2]
            headers = {}
            for line in lines[1:]:
                key, sep, value = line.partition(":")
                if sep:
                    headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            return method, uri, headers

    def _answer(self, conn: Connection, method: str, path: str, headers: dict[str, str]) -> bytes:
        cseq = headers.get("cseq", "0")
        base = f"rtsp://{self.host}:{self.port}/{path}"
        extra: list[str] = []
        body = b""
        status = "200 OK"
        length: int | None = None
        if method == "OPTIONS":
            extra.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            if conn.mode is Mode.REDIRECT_LOOP:
                hop = int(path.rsplit("/", 1)[1]) + 1 if "/hop/" in path else 1
                status = "302 Found"
                extra.append(f"Location: rtsp://{self.host}:{self.port}/{conn.path}/hop/{hop}")
            else:
                body = self._sdp(conn.mode)
                extra += ["Content-Type: application/sdp", f"Content-Base: {base}/"]
                if conn.mode is Mode.HUGE_CONTENT_LENGTH:
                    length = 2_000_000_000
        elif method == "SETUP":
            extra += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", f"Session: {SESSION_ID};timeout=60"]
        elif method == "PLAY":
            extra += [f"Session: {SESSION_ID}", "Range: npt=now-"]
        elif method in ("GET_PARAMETER", "SET_PARAMETER", "TEARDOWN", "PAUSE"):
            extra.append(f"Session: {SESSION_ID}")
        else:
            status = "405 Method Not Allowed"
        head = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: hostile-camera", *extra]
        head.append(f"Content-Length: {len(body) if length is None else length}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    def _sdp(self, mode: Mode) -> bytes:
        lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=Hostile camera", "c=IN IP4 127.0.0.1", "t=0 0", "a=control:*"]
        if mode is Mode.BAD_SDP:
            lines += [
                "m=video 0 RTP/AVP x96 97",
                "a=rtpmap:x96 H264/90000",
                "a=rtpmap:97 H264/0",
                "a=framerate:NaN",
                "a=fmtp:97 packetization-mode=1;sprop-parameter-sets=!!!,@@",
                "\x00\xff\xfe binary junk",
                "a=control:trackID=0",
            ]
        else:
            encoding = "H265" if mode is Mode.BITFLIP_H265 else "H264"
            lines += ["m=video 0 RTP/AVP 96", f"a=rtpmap:96 {encoding}/90000", "a=framerate:25", "a=control:trackID=0"]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    # -- media ----------------------------------------------------------------------------------
    async def _stream(self, conn: Connection, writer: asyncio.StreamWriter, rng: random.Random) -> None:
        mode = conn.mode
        channel = 6 if mode is Mode.WRONG_CHANNEL else 0
        codec = "hevc" if mode is Mode.BITFLIP_H265 else "h264"
        start = 2**32 - 36_000 if mode is Mode.TIMESTAMP_JUMPS else rng.randrange(2**32)
        packetizer = RtpPacketizer(codec, payload_type=96, timestamp_offset=start, max_payload=1400)

        def send(packet: bytes) -> None:
            writer.write(b"$" + bytes([channel]) + len(packet).to_bytes(2, "big") + packet)

        loop = asyncio.get_running_loop()
        began = loop.time()
        if mode is Mode.OVERSIZED_RTP:
            header = struct.pack("!BBHII", 0x80, 96, 1, start, packetizer.ssrc)
            send(header + bytes([0x7C, 0x85]) + bytes(65_000))  # FU-A start of an IDR ...
            for seq in range(2, 330):  # ... and 21 MB of its middle, never its end
                send(struct.pack("!BBHII", 0x80, 96, seq, start, packetizer.ssrc) + bytes([0x7C, 0x05]) + bytes(65_000))
                await writer.drain()
            await asyncio.sleep(3600)
        shift = 0
        for index, unit in enumerate(self._pictures(codec)):
            if mode is Mode.TIMESTAMP_JUMPS:
                shift += dict(JUMPS).get(index, 0)
                if index == JUMP_FRAMES:
                    writer.write(b"$\x00\x05\xdc" + bytes(100))  # half a frame, then a reset
                    await writer.drain()
                    writer.transport.abort()
                    return
            if mode is Mode.DISCONNECT and index == FPS:
                writer.write(b"$\x00\x05\xdc" + bytes(100))
                await writer.drain()
                writer.transport.abort()
                return
            if mode in (Mode.BITFLIP_H264, Mode.BITFLIP_H265):
                unit = corrupt_access_unit(codec, unit, rng)
            packets = packetizer.packetize(unit, index * TICKS + shift)
            if mode is Mode.GARBAGE_NAL:
                packets = [p[:12] + rng.randbytes(rng.randrange(1, 1400)) for p in packets]
            elif mode is Mode.TRUNCATED_RTP:
                packets = [truncate_rtp(p, rng) for p in packets]
            for packet in packets:
                send(packet)
            await writer.drain()
            await asyncio.sleep(max(0.0, began + (index + 1) / FPS - loop.time()))

    def _pictures(self, codec: str) -> Iterator[bytes]:
        frames = self._frames[codec]
        while True:
            yield from frames


@contextlib.contextmanager
def serve_in_thread(seed: int = 21) -> Iterator[HostileRtspServer]:
    """A :class:`HostileRtspServer` on its own event loop in a daemon thread; its
    ``set_mode`` may be called from any thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hostile-rtsp", daemon=True)
    thread.start()
    server = HostileRtspServer(seed=seed)
    set_mode = server.set_mode
    server.set_mode = lambda name, mode: loop.call_soon_threadsafe(set_mode, name, mode)  # type: ignore[method-assign]
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=60)
        yield server
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


__all__ = ["serve_in_thread", "FAULTS", "HostileRtspServer", "Mode", "corrupt_access_unit", "flip_bits"]
