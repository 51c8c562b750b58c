"""A "stalled camera" for tests: answers RTSP, then never sends a single RTP packet.

It accepts OPTIONS, DESCRIBE (a valid 640x360 H.264 SDP with sprop-parameter-sets), SETUP
(TCP interleaved or UDP), PLAY, GET_PARAMETER and TEARDOWN, and keeps the connection open
in silence. A client must notice the missing media by its own read timeout.

Use :class:`StalledRtspServer` inside an event loop (``async with``), or
:func:`serve_in_thread` for synchronous tests: it runs the server on its own loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

# Parameter sets of a 640x360 constrained-baseline x264 stream (level 3.0).
SPROP_PARAMETER_SETS = "Z0LAHtoCgL/lwFqDAwNSgAAAAwCAAAAZR4sXUA==,aM48gA=="
PROFILE_LEVEL_ID = "42c01e"
SESSION_ID = "5a1ed0ff"


def _sdp() -> bytes:
    return (
        "v=0\r\n"
        "o=- 1 1 IN IP4 127.0.0.1\r\n"
        "s=Stalled camera\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        "a=control:*\r\n"
        "a=range:npt=now-\r\n"
        "m=video 0 RTP/AVP 96\r\n"
        "a=rtpmap:96 H264/90000\r\n"
        f"a=fmtp:96 packetization-mode=1;profile-level-id={PROFILE_LEVEL_ID};"
        f"sprop-parameter-sets={SPROP_PARAMETER_SETS}\r\n"
        "a=framerate:25\r\n"
        "a=control:stream=0\r\n"
    ).encode()


def _setup_transport(requested: str) -> str:
    """Answer a SETUP Transport header: interleaved for TCP, dummy server ports for UDP."""
    first = requested.split(",")[0].strip()
    if "TCP" in first.upper():
        return "RTP/AVP/TCP;unicast;interleaved=0-1"
    client_port = next((p for p in first.split(";") if p.startswith("client_port=")), "client_port=5000-5001")
    return f"RTP/AVP;unicast;{client_port};server_port=6970-6971"


class StalledRtspServer:
    """Asyncio RTSP server that completes the handshake and then stays silent."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[str] = []  # methods received, in order (all connections)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"rtsp://{self.host}:{self.port}/stalled"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.debug("stalled rtsp: listening on %s", self.url)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> StalledRtspServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ", 1)[0]
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                self.requests.append(method)
                writer.write(self._response(method, headers))
                await writer.drain()
                if method == "TEARDOWN":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _response(self, method: str, headers: dict[str, str]) -> bytes:
        cseq = headers.get("cseq", "0")
        extra: list[str] = []
        body = b""
        status = "200 OK"
        if method == "OPTIONS":
            extra.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            body = _sdp()
            extra += ["Content-Type: application/sdp", f"Content-Base: {self.url}/"]
        elif method == "SETUP":
            extra += [
                f"Transport: {_setup_transport(headers.get('transport', ''))}",
                f"Session: {SESSION_ID};timeout=60",
            ]
        elif method == "PLAY":
            extra += [
                f"Session: {SESSION_ID}",
                "Range: npt=now-",
                f"RTP-Info: url={self.url}/stream=0;seq=1;rtptime=0",
            ]
        elif method in ("GET_PARAMETER", "SET_PARAMETER", "TEARDOWN", "PAUSE"):
            extra.append(f"Session: {SESSION_ID}")
        else:
            status = "405 Method Not Allowed"
        head = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: stalled-camera", *extra]
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@contextlib.contextmanager
def serve_in_thread(host: str = "127.0.0.1", port: int = 0) -> Iterator[StalledRtspServer]:
    """Run a :class:`StalledRtspServer` on its own event loop in a daemon thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="stalled-rtsp", daemon=True)
    thread.start()
    server = StalledRtspServer(host, port)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=5)
        yield server
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
