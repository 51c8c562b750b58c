"""A small asyncio RTSP server that plays stream hubs to RTSP clients over TCP and UDP.

Each *mount* (``/cam1``) serves one ``StreamHub``. Clients DESCRIBE, SETUP with
``RTP/AVP/TCP;interleaved`` (or, when the server is made with ``udp=True``, with
``RTP/AVP;unicast;client_port=``; otherwise UDP is refused with 461, so FFmpeg falls back
to TCP on its own), PLAY, and receive ``$``-framed RTP on the RTSP connection itself (or
RTP datagrams to the client's ports, always at the address of the RTSP connection's peer,
never at a ``destination`` it names). Playback starts at the hub's cached keyframe, so a
client has a picture at once. H.264 and H.265 are packetized (``gateway.rtsp.rtp``).

A server made with a *gate* (``RtspGate``) has no fixed mounts: the gate authenticates and
authorizes every DESCRIBE, SETUP and PLAY on its path and names the ``MountSource`` to
play (raising ``Unauthorized`` for a 401 with its ``WWW-Authenticate`` challenges,
``Forbidden`` for 403, ``NotFound`` for 404); it is told when a client starts and stops
playing (``RtspPlay``), and may end a play at any time with ``RtspPlay.close``.

A client that reads slower than the stream never makes the server buffer without bound:
when the connection's write buffer passes ``max_write_buffer`` the session drops packets
until the buffer has drained and the next keyframe arrives; a client stalled longer than
the session timeout is disconnected.

This module knows nothing of cameras or the app; the demo camera and the re-stream
output both use it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from gateway.errors import GatewayError, Moved, StaleCredentials, StreamClosed, Unauthorized
from gateway.media.hub import HubReader, StreamHub
from gateway.media.packet import MediaPacket, StreamInfo
from gateway.rtsp.rtp import RtpPacketizer, sender_report, video_media_sdp
from gateway.tasks import TaskSet

logger = logging.getLogger(__name__)

SERVER_NAME = "Citygate"
TRACK_CONTROL = "trackID=0"
PUBLIC_METHODS = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
MAX_REQUEST_BYTES = 64 * 1024
RTCP_INTERVAL = 5.0

REASONS = {
    200: "OK",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
}


def normalize_mount(path: str) -> str:
    """``"cam1"``, ``"/cam1/"`` -> ``"/cam1"``."""
    path = "/" + path.strip("/")
    if path == "/":
        raise ValueError("a mount path must not be empty")
    return path


@dataclass(slots=True)
class _Request:
    method: str
    uri: str
    headers: dict[str, str]  #: lower-case names
    body: bytes = b""

    @property
    def cseq(self) -> str | None:
        return self.headers.get("cseq")


@dataclass(slots=True)
class _Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Headers that may repeat (``WWW-Authenticate``).
    extra: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RtspRequest:
    """A request as a gate sees it: ``path`` without the track control part, ``query``
    decoded (it may carry a bearer token; never log ``uri``)."""

    method: str
    uri: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  #: lower-case names
    peer: str


class MountSource(Protocol):
    """What a client plays: the stream's info for DESCRIBE, a reader for PLAY."""

    async def wait_info(self, timeout: float) -> StreamInfo | None: ...

    async def open_reader(self, name: str) -> HubReader: ...


class HubSource:
    """A ``MountSource`` over one hub (the fixed mounts)."""

    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub

    async def wait_info(self, timeout: float) -> StreamInfo | None:
        return await _wait_for_info(self.hub, timeout)

    async def open_reader(self, name: str) -> HubReader:
        return self.hub.open_reader(name)


class RtspGate(Protocol):
    """Authentication and authorization of a server's requests (see the module docstring)."""

    async def authorize(self, request: RtspRequest, previous: Any) -> tuple[Any, MountSource]:
        """Return (identity, source) for the request, or raise a ``GatewayError``.
        ``previous`` is the identity this connection last authenticated as, or None."""
        ...

    def challenges(self, *, stale: bool = False) -> list[str]:
        """The ``WWW-Authenticate`` values of a 401."""
        ...

    async def play_started(self, play: RtspPlay) -> None: ...

    async def play_stopped(self, play: RtspPlay, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RtspSessionStats:
    peer: str
    mount: str
    playing: bool
    buffered_bytes: int  #: bytes waiting in the connection's write buffer
    dropped_packets: int  #: access units skipped because the client was too slow


@dataclass(slots=True)
class _Udp:
    rtp: asyncio.DatagramTransport
    rtcp: asyncio.DatagramTransport
    rtp_addr: tuple[str, int]
    rtcp_addr: tuple[str, int]

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


@dataclass(eq=False, slots=True)
class RtspPlay:
    """One client's session on one mount (a SETUP); playing once ``task`` is set."""

    id: str
    mount: str
    source: MountSource
    track_url: str
    rtp_channel: int
    rtcp_channel: int
    ssrc: int
    peer: str = ""
    #: What the gate returned for the SETUP (None without a gate).
    identity: Any = None
    udp: _Udp | None = None
    reader: HubReader | None = None
    task: asyncio.Task[None] | None = None
    dropped: int = 0
    started_at: float = 0.0
    connection: Any = None

    @property
    def transport(self) -> str:
        return "udp" if self.udp is not None else "tcp"

    def close(self, reason: str) -> None:
        """End this play and its RTSP connection (revocation, shutdown)."""
        if self.connection is not None:
            self.connection.close(reason)


_Session = RtspPlay


class RtspServer:
    """Serves ``StreamHub`` mounts over RTSP (TCP interleaved). An async context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        session_timeout: float = 60.0,
        max_write_buffer: int = 2 * 1024 * 1024,
        describe_timeout: float = 3.0,
        gate: RtspGate | None = None,
        udp: bool = False,
        ssl: Any = None,
    ) -> None:
        self.host = host
        self.gate = gate
        self.udp = udp
        self._ssl = ssl
        #: ``play_stopped`` calls (audit writes) under way; drained at close.
        self._stopping = TaskSet("rtsp server")
        self._requested_port = port
        self.session_timeout = session_timeout
        self.max_write_buffer = max_write_buffer
        self.describe_timeout = describe_timeout
        self._mounts: dict[str, StreamHub] = {}
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RtspServer:
        self._server = await asyncio.start_server(
            self._accept, self.host, self._requested_port, limit=MAX_REQUEST_BYTES, ssl=self._ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("rtsp server: listening on %s:%d", self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.close("server shutting down")
        tasks = [c.task for c in connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        await self._stopping.drain()
        try:
            await asyncio.wait_for(server.wait_closed(), 2.0)
        except TimeoutError:
            logger.warning("rtsp server: listener on port %d did not close in time", self.port)
        logger.info("rtsp server: port %d closed", self.port)

    # -- mounts ----------------------------------------------------------------------
    def add_mount(self, path: str, hub: StreamHub) -> str:
        """Serve ``hub`` at ``path``; returns the normalised path."""
        path = normalize_mount(path)
        if path in self._mounts:
            raise ValueError(f"rtsp mount {path} already exists")
        self._mounts[path] = hub
        logger.debug("rtsp server: mounted %s", path)
        return path

    def remove_mount(self, path: str) -> None:
        """Stop serving ``path``; clients playing it are disconnected."""
        path = normalize_mount(path)
        if self._mounts.pop(path, None) is None:
            return
        for connection in list(self._connections):
            if connection.mount == path:
                connection.close("mount removed")
        logger.debug("rtsp server: unmounted %s", path)

    @property
    def mounts(self) -> dict[str, StreamHub]:
        return dict(self._mounts)

    def sessions(self) -> list[RtspSessionStats]:
        """What every connected client is doing, for monitoring."""
        return [stats for c in self._connections if (stats := c.stats()) is not None]

    def url(self, path: str) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"rtsp://{host}:{self.port}{normalize_mount(path)}"

    def resolve(self, path: str) -> tuple[str, StreamHub, str] | None:
        """Return ``(mount, hub, rest)`` for a request path, ``rest`` being what follows the mount."""
        path = path.rstrip("/")
        best: str | None = None
        for mount in self._mounts:
            if (path == mount or path.startswith(mount + "/")) and (best is None or len(mount) > len(best)):
                best = mount
        if best is None:
            return None
        return best, self._mounts[best], path[len(best) :].lstrip("/")

    # -- connections -----------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        connection.task = asyncio.current_task()
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)


class _Connection:
    """One client's RTSP connection; holds at most one playing session."""

    def __init__(self, server: RtspServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.session: _Session | None = None
        self.task: asyncio.Task[object] | None = None
        self._closed = False
        #: What the gate last authenticated this connection as.
        self.identity: Any = None

    @property
    def mount(self) -> str | None:
        return self.session.mount if self.session else None

    def stats(self) -> RtspSessionStats | None:
        session = self.session
        if session is None:
            return None
        return RtspSessionStats(
            peer=self.peer,
            mount=session.mount,
            playing=session.task is not None,
            buffered_bytes=self.writer.transport.get_write_buffer_size() if not self._closed else 0,
            dropped_packets=session.dropped,
        )

    async def run(self) -> None:
        logger.debug("rtsp %s: connected", self.peer)
        try:
            while not self._closed:
                playing = self.session is not None and self.session.task is not None
                timeout = None if playing else self.server.session_timeout
                first = await asyncio.wait_for(self.reader.readexactly(1), timeout)
                if first == b"$":  # interleaved data from the client (RTCP receiver reports)
                    header = await self.reader.readexactly(3)
                    await self.reader.readexactly(int.from_bytes(header[1:3], "big"))
                    continue
                head = first + await self.reader.readuntil(b"\r\n\r\n")
                request = self._parse(head)
                if request is None:
                    self._write_response(None, _Response(400))
                    break
                length = int(request.headers.get("content-length", "0") or 0)
                if length:
                    request.body = await self.reader.readexactly(length)
                response = await self._handle(request)
                self._write_response(request, response)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except TimeoutError:
            logger.info("rtsp %s: idle for %.0fs, closing", self.peer, self.server.session_timeout)
        except asyncio.LimitOverrunError:
            logger.warning("rtsp %s: request too large, closing", self.peer)
        except Exception:
            logger.exception("rtsp %s: connection failed", self.peer)
        finally:
            self.close("client disconnected")
            logger.debug("rtsp %s: disconnected", self.peer)

    def close(self, reason: str = "connection closed") -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_session(reason)
        self.writer.close()

    def _stop_session(self, reason: str) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if session.task is not None and session.task is not asyncio.current_task():
            session.task.cancel()
        if session.udp is not None:
            session.udp.close()
        if session.reader is not None:
            session.reader.close()
            logger.info("rtsp %s: stopped playing %s (%s)", self.peer, session.mount, reason)
        gate = self.server.gate
        if gate is not None and session.task is not None:
            self.server._stopping.spawn(gate.play_stopped(session, reason), name=f"rtsp stopped {self.peer}")

    # -- protocol --------------------------------------------------------------------
    @staticmethod
    def _parse(head: bytes) -> _Request | None:
        try:
            text = head.decode("utf-8").strip("\r\n")
        except UnicodeDecodeError:
            return None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("RTSP/"):
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return _Request(parts[0].upper(), parts[1], headers)

    def _write_response(self, request: _Request | None, response: _Response) -> None:
        lines = [f"RTSP/1.0 {response.status} {REASONS.get(response.status, 'Error')}"]
        if request is not None and request.cseq is not None:
            lines.append(f"CSeq: {request.cseq}")
        lines.append(f"Server: {SERVER_NAME}")
        for name, value in [*response.headers.items(), *response.extra]:
            lines.append(f"{name}: {value}")
        if response.body:
            lines.append(f"Content-Length: {len(response.body)}")
        if not self._closed:
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + response.body)

    async def _handle(self, request: _Request) -> _Response:
        logger.debug("rtsp %s: %s %s", self.peer, request.method, request.uri.split("?", 1)[0])
        handler = {
            "OPTIONS": self._options,
            "DESCRIBE": self._describe,
            "SETUP": self._setup,
            "PLAY": self._play,
            "TEARDOWN": self._teardown,
            "GET_PARAMETER": self._keepalive,
            "SET_PARAMETER": self._keepalive,
        }.get(request.method)
        if handler is None:
            return _Response(501, {"Public": PUBLIC_METHODS})
        return await handler(request)

    def _path(self, uri: str) -> str:
        return unquote(urlsplit(uri).path) if "://" in uri else unquote(uri.split("?", 1)[0])

    async def _target(self, request: _Request, *, track: bool = False) -> tuple[str, MountSource] | _Response:
        """The mount and source a DESCRIBE (``track`` false) or SETUP/PLAY names, through
        the gate when there is one; a refusal as a response."""
        path = self._path(request.uri)
        gate = self.server.gate
        if gate is None:
            found = self.server.resolve(path)
            if found is None or found[2] not in (("", TRACK_CONTROL) if track else ("",)):
                return _Response(404)
            return found[0], HubSource(found[1])
        path = path.rstrip("/")
        if track and path.endswith("/" + TRACK_CONTROL):
            path = path[: -len(TRACK_CONTROL) - 1]
        query = dict(parse_qsl(urlsplit(request.uri).query)) if "?" in request.uri else {}
        view = RtspRequest(request.method, request.uri, path or "/", query, request.headers, self.peer)
        try:
            self.identity, source = await gate.authorize(view, self.identity)
        except Unauthorized as exc:
            stale = isinstance(exc, StaleCredentials)
            return _Response(401, extra=[("WWW-Authenticate", c) for c in gate.challenges(stale=stale)])
        except Moved as exc:  # another node of the cluster serves this camera
            return _Response(302, extra=[("Location", exc.location)])
        except GatewayError as exc:
            return _Response(exc.status if exc.status in REASONS else 500)
        return path, source

    def _session_headers(self, session: _Session) -> dict[str, str]:
        return {"Session": f"{session.id};timeout={int(self.server.session_timeout)}"}

    def _check_session(self, request: _Request) -> _Session | None:
        session = self.session
        given = request.headers.get("session", "").split(";", 1)[0].strip()
        if session is None or (given and given != session.id):
            return None
        return session

    async def _options(self, request: _Request) -> _Response:
        return _Response(200, {"Public": PUBLIC_METHODS})

    async def _keepalive(self, request: _Request) -> _Response:
        if "session" in request.headers:
            session = self._check_session(request)
            if session is None:
                return _Response(454)
            return _Response(200, self._session_headers(session))
        return _Response(200)

    async def _describe(self, request: _Request) -> _Response:
        target = await self._target(request)
        if isinstance(target, _Response):
            return target
        mount, source = target
        try:
            info = await source.wait_info(self.server.describe_timeout)
        except GatewayError:
            info = None
        if info is None:
            logger.info("rtsp %s: DESCRIBE %s: no stream yet", self.peer, mount)
            return _Response(503)
        sdp = self._sdp(mount, info).encode("utf-8")
        base = request.uri.split("?", 1)[0].rstrip("/") + "/"
        return _Response(200, {"Content-Base": base, "Content-Type": "application/sdp"}, sdp)

    def _sdp(self, mount: str, info: StreamInfo) -> str:
        host = self.writer.get_extra_info("sockname")
        address = host[0] if isinstance(host, tuple) else "127.0.0.1"
        family = "IP6" if ":" in address else "IP4"
        lines = [
            "v=0",
            f"o=- {secrets.randbits(31)} 1 IN {family} {address}",
            f"s={mount.lstrip('/')}",
            "t=0 0",
            f"a=tool:{SERVER_NAME}",
            "a=control:*",
            "a=range:npt=0-",
            *video_media_sdp(info.codec, info.parameter_sets, control=TRACK_CONTROL),
        ]
        return "\r\n".join(lines) + "\r\n"

    async def _setup(self, request: _Request) -> _Response:
        target = await self._target(request, track=True)
        if isinstance(target, _Response):
            return target
        mount, source = target
        if self.session is not None:
            if self._check_session(request) is None:
                return _Response(454)
            return _Response(459)  # one track per mount: a second SETUP is not allowed
        chosen = _choose_transport(request.headers.get("transport", ""), udp=self.server.udp)
        if chosen is None:
            what = "RTP/AVP/TCP interleaved or RTP/AVP unicast" if self.server.udp else "only RTP/AVP/TCP interleaved"
            logger.info("rtsp %s: SETUP %s refused: %s is served", self.peer, mount, what)
            return _Response(461)
        kind, low, high = chosen
        uri = request.uri.split("?", 1)[0].rstrip("/")
        track_url = uri if uri.endswith("/" + TRACK_CONTROL) else uri + "/" + TRACK_CONTROL
        session = _Session(
            id=secrets.token_hex(8),
            mount=mount,
            source=source,
            track_url=track_url,
            rtp_channel=low,
            rtcp_channel=high,
            ssrc=secrets.randbits(32),
            peer=self.peer,
            identity=self.identity,
            connection=self,
        )
        if kind == "udp":
            peer = self.writer.get_extra_info("peername")
            local = self.writer.get_extra_info("sockname")
            if not isinstance(peer, tuple) or not isinstance(local, tuple):
                return _Response(461)
            try:
                session.udp = await _open_udp(local[0], (peer[0], low), (peer[0], high))
            except OSError as exc:
                logger.warning("rtsp %s: no UDP ports for %s: %s", self.peer, mount, exc)
                return _Response(503)
            if self._closed:
                session.udp.close()
                return _Response(454)
            server_ports = f"{session.udp.rtp.get_extra_info('sockname')[1]}-{session.udp.rtcp.get_extra_info('sockname')[1]}"
            transport = f"RTP/AVP;unicast;client_port={low}-{high};server_port={server_ports};ssrc={session.ssrc:08X}"
        else:
            transport = f"RTP/AVP/TCP;unicast;interleaved={low}-{high};ssrc={session.ssrc:08X}"
        self.session = session
        return _Response(200, {"Transport": transport, **self._session_headers(session)})

    async def _play(self, request: _Request) -> _Response:
        session = self._check_session(request)
        if session is None:
            return _Response(454)
        if self.server.gate is not None:  # authorized again: rights may have changed since SETUP
            target = await self._target(request, track=True)
            if isinstance(target, _Response):
                return target
            if target[0] != session.mount:
                return _Response(455)
            session.identity = self.identity
        headers = {**self._session_headers(session), "Range": "npt=0.000-"}
        if session.task is not None:
            return _Response(200, headers)
        try:
            reader = await session.source.open_reader(f"rtsp {self.peer}")
        except StreamClosed:
            return _Response(404)
        except GatewayError:
            return _Response(503)
        first = reader.get_nowait()
        if first is None:
            try:
                first = await asyncio.wait_for(reader.recv(), self.server.describe_timeout)
            except (TimeoutError, StreamClosed):
                reader.close()
                return _Response(503)
        if self.session is not session:  # torn down while waiting
            reader.close()
            return _Response(454)
        packetizer = RtpPacketizer(first.info.codec, ssrc=session.ssrc)
        rtptime = packetizer.rtp_timestamp(first.pts)
        headers["RTP-Info"] = f"url={session.track_url};seq={packetizer.sequence};rtptime={rtptime}"
        session.reader = reader
        session.started_at = time.time()
        if self.server.gate is not None:
            try:
                await self.server.gate.play_started(session)
            except GatewayError as exc:
                reader.close()
                session.reader = None
                return _Response(exc.status if exc.status in REASONS else 500)
            if self.session is not session:  # closed while the gate recorded the start
                reader.close()
                self.server._stopping.spawn(self.server.gate.play_stopped(session, "client disconnected"))
                return _Response(454)
        session.task = asyncio.create_task(self._send(session, packetizer, first), name=f"rtsp-send {self.peer}")
        logger.info("rtsp %s: playing %s", self.peer, session.mount)
        return _Response(200, headers)

    async def _teardown(self, request: _Request) -> _Response:
        if self._check_session(request) is None:
            return _Response(454)
        self._stop_session("client sent TEARDOWN")
        return _Response(200)

    # -- media -----------------------------------------------------------------------
    async def _send(self, session: _Session, packetizer: RtpPacketizer, first: MediaPacket) -> None:
        """Write the hub's packets as interleaved RTP; starts with the response to PLAY."""
        assert session.reader is not None
        reader = session.reader
        transport = self.writer.transport
        cap = self.server.max_write_buffer
        udp = session.udp
        # (for UDP the "channels" are the client's ports: no interleaved prefix)
        rtp_prefix = b"$" + bytes([session.rtp_channel & 0xFF])
        rtcp_prefix = b"$" + bytes([session.rtcp_channel & 0xFF])
        await asyncio.sleep(0)  # let the PLAY response go out first
        packet = first
        skipping = False
        stalled_since: float | None = None
        next_report = 0.0
        reason = "stream ended"
        try:
            while True:
                if packet.info.codec != packetizer.codec:
                    logger.warning(
                        "rtsp %s: %s changed codec to %s; closing", self.peer, session.mount, packet.info.codec
                    )
                    reason = "the stream changed codec"
                    break
                if udp is not None:  # datagrams: the network drops what the client cannot take
                    for p in packetizer.packetize(packet.data, packet.pts):
                        udp.rtp.sendto(p, udp.rtp_addr)
                    now = time.monotonic()
                    if now >= next_report:
                        udp.rtcp.sendto(sender_report(packetizer, wallclock=packet.wallclock, pts=packet.pts), udp.rtcp_addr)
                        next_report = now + RTCP_INTERVAL
                    packet = await reader.recv()
                    continue
                buffered = transport.get_write_buffer_size()
                now = time.monotonic()
                if buffered > cap:
                    if not skipping:
                        logger.info(
                            "rtsp %s: client too slow (%d bytes buffered); skipping to next keyframe", self.peer, buffered
                        )
                        skipping = True
                    if stalled_since is None:
                        stalled_since = now
                    elif now - stalled_since > self.server.session_timeout:
                        logger.info("rtsp %s: client stalled for %.0fs; closing", self.peer, now - stalled_since)
                        reason = "client stalled"
                        break
                else:
                    stalled_since = None
                    if skipping and packet.keyframe:
                        skipping = False
                        logger.info(
                            "rtsp %s: resumed at a keyframe (%d packets dropped so far)", self.peer, session.dropped
                        )
                if skipping:
                    session.dropped += 1
                else:
                    rtp = packetizer.packetize(packet.data, packet.pts)
                    frames = [rtp_prefix + len(p).to_bytes(2, "big") + p for p in rtp]
                    if now >= next_report:
                        report = sender_report(packetizer, wallclock=packet.wallclock, pts=packet.pts)
                        frames.append(rtcp_prefix + len(report).to_bytes(2, "big") + report)
                        next_report = now + RTCP_INTERVAL
                    self.writer.write(b"".join(frames))
                packet = await reader.recv()
        except StreamClosed:
            logger.info("rtsp %s: stream %s ended", self.peer, session.mount)
        except (ConnectionError, RuntimeError, OSError):
            reason = "client disconnected"  # the transport closed under us
        except Exception:
            logger.exception("rtsp %s: sending %s failed", self.peer, session.mount)
            reason = "internal error"
        # The stream ended or the client is hopeless: end the connection.
        self.close(reason)


class _UdpSink(asyncio.DatagramProtocol):
    """Our end of a client's RTP/RTCP ports: receiver reports are read and ignored."""

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


async def _open_udp(host: str, rtp_addr: tuple[str, int], rtcp_addr: tuple[str, int]) -> _Udp:
    """Two datagram sockets on ``host``, an even/odd port pair when one is free."""
    loop = asyncio.get_running_loop()
    for _ in range(16):
        rtp, _ = await loop.create_datagram_endpoint(_UdpSink, local_addr=(host, 0))
        port = rtp.get_extra_info("sockname")[1]
        if port % 2 == 0:
            try:
                rtcp, _ = await loop.create_datagram_endpoint(_UdpSink, local_addr=(host, port + 1))
            except OSError:
                pass
            else:
                return _Udp(rtp, rtcp, rtp_addr, rtcp_addr)  # type: ignore[arg-type]
        rtp.close()
    rtp, _ = await loop.create_datagram_endpoint(_UdpSink, local_addr=(host, 0))
    rtcp, _ = await loop.create_datagram_endpoint(_UdpSink, local_addr=(host, 0))
    return _Udp(rtp, rtcp, rtp_addr, rtcp_addr)  # type: ignore[arg-type]


def _choose_transport(header: str, *, udp: bool) -> tuple[str, int, int] | None:
    """The first transport offered that we serve: ("tcp", channels) or ("udp", client ports)."""
    for spec in header.split(","):
        params = [p.strip() for p in spec.split(";")]
        proto = params[0].upper()
        if proto == "RTP/AVP/TCP":
            channels = _tcp_channels(spec)
            if channels is not None:
                return "tcp", channels[0], channels[1]
        elif udp and proto in ("RTP/AVP", "RTP/AVP/UDP") and "multicast" not in (p.lower() for p in params):
            for param in params[1:]:
                name, _, value = param.partition("=")
                if name.lower() == "client_port":
                    low, _, high = value.partition("-")
                    try:
                        rtp = int(low)
                        rtcp = int(high) if high else rtp + 1
                    except ValueError:
                        break
                    if 1024 <= rtp <= 65535 and 1024 <= rtcp <= 65535:
                        return "udp", rtp, rtcp
                    break
    return None


def _tcp_channels(transport: str) -> tuple[int, int] | None:
    """The interleaved channels of the first ``RTP/AVP/TCP`` transport offered, or None."""
    for spec in transport.split(","):
        params = [p.strip() for p in spec.split(";")]
        if params[0].upper() != "RTP/AVP/TCP":
            continue
        for param in params[1:]:
            name, _, value = param.partition("=")
            if name.lower() == "interleaved":
                low, _, high = value.partition("-")
                try:
                    rtp = int(low)
                    rtcp = int(high) if high else rtp + 1
                except ValueError:
                    return None
                if 0 <= rtp <= 255 and 0 <= rtcp <= 255:
                    return rtp, rtcp
                return None
        return 0, 1
    return None


async def _wait_for_info(hub: StreamHub, timeout: float) -> StreamInfo | None:
    if hub.info is not None:
        return hub.info
    if hub.closed:
        return None
    future: asyncio.Future[StreamInfo] = asyncio.get_running_loop().create_future()

    def on_info(info: StreamInfo) -> None:
        if not future.done():
            future.set_result(info)

    remove = hub.add_info_listener(on_info)
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        return None
    finally:
        remove()
