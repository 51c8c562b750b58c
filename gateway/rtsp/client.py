"""A native RTSP client for camera ingest: RTSP 1.0 over TCP, RTP over TCP-interleaved or UDP.

Pure protocol code, blocking sockets, meant to run in the camera's ingest thread (as the
PyAV ingest does). What it does that cameras need:

- Basic and Digest authentication (RFC 7616: SHA-256 preferred, MD5; ``qop=auth`` or none),
  credentials from the URL's user info; a ``stale=true`` challenge is answered once more.
- SDP: the first H.264 or H.265 video section, its payload type, control URL (relative to
  Content-Base), ``sprop-parameter-sets`` / ``sprop-vps/sps/pps`` (cameras that send their
  parameter sets only in the SDP) and ``a=framerate``.
- RTCP receiver reports (with SDES CNAME) every few seconds, so cameras that expect them do
  not end the session, and a keepalive (GET_PARAMETER, or OPTIONS where the camera does not
  offer it) at half the session timeout.
- Access units from :class:`gateway.rtsp.depacketizer.Depacketizer`: completed on the RTP
  marker bit, the moment the last packet of a picture is in; H.264's interleaved mode
  (``packetization-mode=2``) and H.265 with DONL (``sprop-max-don-diff`` > 0) put back in
  decoding order by DON.
- Over UDP, :class:`gateway.rtsp.reorder.ReorderBuffer` puts swapped packets back in order
  and drops duplicates (a packet behind a gap waits at most 20 ms); over TCP nothing waits.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from gateway.media.h26x import START_CODE
from gateway.rtsp.depacketizer import AccessUnit, Depacketizer, OversizedAccessUnit
from gateway.rtsp.digest import DigestCredentials, expected_response
from gateway.rtsp.reorder import ReorderBuffer
from gateway.rtsp.rtp import RTP_VERSION

logger = logging.getLogger(__name__)

DEFAULT_PORT = 554
#: Seconds between RTCP receiver reports (RFC 3550 suggests about 5 s for one receiver).
RTCP_INTERVAL = 5.0
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
_ENCODINGS = {"H264": "h264", "H265": "hevc", "HEVC": "hevc"}
#: The largest RTSP message body we accept. An SDP is a few KB; a hostile camera announcing
#: gigabytes must not make us buffer them.
MAX_BODY = 256 * 1024
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


class RtspClientError(ConnectionError):
    """The camera refused or broke the RTSP session; the text says why, for the operator."""


class RtspStatusError(RtspClientError):
    def __init__(self, method: str, status: int, reason: str) -> None:
        self.status = status
        if status == 401:
            text = "the camera refused our credentials (401)"
        elif status == 404:
            text = "the camera has no such stream (404)"
        else:
            text = f"{method} answered {status} {reason}".rstrip()
        super().__init__(text)


@dataclass(frozen=True, slots=True)
class VideoTrack:
    """What the SDP says about the stream we pull."""

    codec: str  #: "h264" or "hevc"
    payload_type: int
    control: str  #: absolute URL of the track, for SETUP
    session_control: str  #: absolute URL for PLAY / TEARDOWN (aggregate control)
    clock_rate: int = 90_000
    #: Parameter sets from the SDP, Annex B (empty if the SDP has none).
    parameter_sets: bytes = b""
    framerate: float | None = None
    #: H.264 ``packetization-mode`` (2: interleaved, NAL units ordered by DON) and its
    #: ``sprop-interleaving-depth`` (None: not given).
    packetization_mode: int = 0
    interleaving_depth: int | None = None
    #: H.265 ``sprop-max-don-diff`` (> 0: packets carry DONL/DOND, ordered by DON);
    #: ``interleaving_depth`` is then its ``sprop-depack-buf-nalus``.
    max_don_diff: int = 0


@dataclass(slots=True)
class _Response:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for match in _PARAM.finditer(text):
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1).lower()] = value
    return params


def _resolve(base: str, control: str) -> str:
    if not control or control == "*":
        return base
    if re.match(r"^[a-z][a-z0-9+.-]*://", control, re.I):
        return control
    return base + ("" if base.endswith("/") else "/") + control.lstrip("/")


def parse_sdp(sdp: str, base: str) -> VideoTrack:
    """The first H.264/H.265 video section of an SDP; ``RtspClientError`` if there is none."""
    session_control = base
    section: str | None = None  # None: session level; "video"/other: inside an m= section
    found: dict[str, str] | None = None
    candidate: dict[str, str] = {}
    tracks: list[dict[str, str]] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if section == "video":
                tracks.append(candidate)
            parts = line[2:].split()
            section = parts[0] if parts else "?"
            candidate = {"pts": " ".join(parts[3:])}
            continue
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        if section is None:
            if name == "control":
                session_control = _resolve(base, value.strip())
        elif section == "video":
            if name == "rtpmap":
                pt, _, enc = value.partition(" ")
                candidate.setdefault(f"rtpmap:{pt.strip()}", enc.strip())
            elif name == "fmtp":
                pt, _, params = value.partition(" ")
                candidate[f"fmtp:{pt.strip()}"] = params.strip()
            elif name in ("control", "framerate"):
                candidate[name] = value.strip()
    if section == "video":
        tracks.append(candidate)
    problems: list[str] = []  # why an H.264/H.265 section could not be used
    for track in tracks:
        for pt in track["pts"].split():
            enc = track.get(f"rtpmap:{pt}", "")
            name, _, rate = enc.partition("/")
            if name.upper() not in _ENCODINGS:
                continue
            # A hostile or broken camera: a payload type that is no number (int() would
            # raise ValueError out of the ingest thread) or a clock rate of 0 (a division).
            rate = rate.split("/")[0].strip()
            if not (pt.isascii() and pt.isdigit() and int(pt) <= 127):
                problems.append(f"payload type {pt[:16]!r} is not a number from 0 to 127")
                continue
            if rate and not (rate.isascii() and rate.isdigit() and 0 < int(rate) <= 1_000_000):
                problems.append(f"clock rate {rate[:16]!r} of payload type {pt} is not a positive number")
                continue
            found = track
            codec = _ENCODINGS[name.upper()]
            break
        if found is not None:
            break
    if found is None and problems:
        raise RtspClientError("malformed SDP from the camera: " + "; ".join(problems))
    if found is None:
        encodings = sorted({v for t in tracks for k, v in t.items() if k.startswith("rtpmap:")})
        raise RtspClientError(
            "unsupported video codec (supported: H.264, H.265)" + (f"; the camera offers {', '.join(encodings)}" if encodings else "; the stream has no video track")
        )
    fmtp = _fmtp(found.get(f"fmtp:{pt}", ""))
    if codec == "hevc":
        sets = [fmtp.get(k, "") for k in ("sprop-vps", "sprop-sps", "sprop-pps")]
    else:
        sets = fmtp.get("sprop-parameter-sets", "").split(",")
    parameter_sets = b""
    for text in sets:
        text = text.strip()
        if text:
            try:
                parameter_sets += START_CODE + base64.b64decode(text + "=" * (-len(text) % 4))
            except ValueError:
                logger.warning("rtsp: ignoring a malformed parameter set in the SDP: %r", text)
    framerate: float | None
    try:
        framerate = float(found["framerate"]) if "framerate" in found else None
    except ValueError:
        framerate = None
    if framerate is not None and not (math.isfinite(framerate) and 0 < framerate <= 1000):
        framerate = None  # "NaN", "inf", "-25": not a frame rate (NaN would reach the API and playlists)
    mode = fmtp.get("packetization-mode", "0")
    depth = fmtp.get("sprop-interleaving-depth" if codec == "h264" else "sprop-depack-buf-nalus", "")
    don_diff = fmtp.get("sprop-max-don-diff", "0") if codec == "hevc" else "0"
    return VideoTrack(
        packetization_mode=int(mode) if codec == "h264" and mode in ("0", "1", "2") else 0,
        interleaving_depth=int(depth[:6]) if depth.isascii() and depth.isdigit() else None,
        max_don_diff=int(don_diff[:6]) if don_diff.isascii() and don_diff.isdigit() else 0,
        codec=codec,
        payload_type=int(pt),
        control=_resolve(base, found.get("control", "")),
        session_control=session_control,
        clock_rate=int(rate) if rate else 90_000,
        parameter_sets=parameter_sets,
        framerate=framerate,
    )


def _fmtp(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(";"):
        key, _, value = item.strip().partition("=")
        if key:
            out[key.strip().lower()] = value.strip()
    return out


class _ReceiverStats:
    """RFC 3550 A.1/A.8 receiver statistics for one source, for receiver reports."""

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self._transit: int | None = None
        self.last_sr = 0  #: middle 32 bits of the last SR's NTP time
        self.last_sr_at: float | None = None

    def rtp(self, packet: bytes, arrival: float, clock_rate: int) -> None:
        if len(packet) < 12:
            return
        seq, timestamp, ssrc = struct.unpack_from("!HII", packet, 2)
        if self.ssrc != ssrc:
            self.__init__()  # type: ignore[misc]  # a new source: start over
            self.ssrc, self.base_seq, self.max_seq = ssrc, seq, seq
        elif ((seq - self.max_seq) & 0xFFFF) < 0x8000:
            if seq < self.max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
        self.received += 1
        transit = int(arrival * clock_rate) - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            self.jitter += (d - self.jitter) / 16
        self._transit = transit

    def sender_report(self, packet: bytes, arrival: float) -> None:
        if len(packet) >= 20 and packet[1] == RTCP_SR:
            self.last_sr = struct.unpack_from("!I", packet, 10)[0]
            self.last_sr_at = arrival

    def report(self, own_ssrc: int, cname: bytes, now: float) -> bytes:
        blocks = b""
        count = 0
        if self.ssrc is not None:
            extended = self.cycles + self.max_seq
            expected = extended - self.base_seq + 1
            lost = max(0, expected - self.received)
            interval_expected = expected - self.expected_prior
            interval_received = self.received - self.received_prior
            self.expected_prior, self.received_prior = expected, self.received
            interval_lost = interval_expected - interval_received
            fraction = (interval_lost << 8) // interval_expected if interval_expected > 0 and interval_lost > 0 else 0
            dlsr = int((now - self.last_sr_at) * 65536) if self.last_sr_at is not None else 0
            blocks = struct.pack(
                "!IIIIII", self.ssrc, (min(fraction, 255) << 24) | min(lost, 0x7FFFFF), extended & 0xFFFFFFFF,
                int(self.jitter) & 0xFFFFFFFF, self.last_sr, dlsr & 0xFFFFFFFF,
            )
            count = 1
        rr = struct.pack("!BBHI", (RTP_VERSION << 6) | count, RTCP_RR, 1 + 6 * count, own_ssrc) + blocks
        item = bytes([1, len(cname)]) + cname + b"\x00"
        item += b"\x00" * (-(4 + len(item)) % 4)
        sdes = struct.pack("!BBHI", (RTP_VERSION << 6) | 1, RTCP_SDES, (4 + len(item)) // 4, own_ssrc) + item
        return rr + sdes


class RtspClient:
    """One RTSP session with a camera: ``open()``, then ``access_units()`` until it ends.

    ``stop`` is polled at least every ``poll`` seconds, so an ingest thread ends soon after
    it is set. ``read_timeout``: no RTP for this long raises ``TimeoutError``.
    """

    def __init__(
        self,
        url: str,
        *,
        transport: str = "tcp",
        open_timeout: float = 5.0,
        read_timeout: float = 5.0,
        stop: threading.Event | None = None,
        user_agent: str = "Citygate",
        poll: float = 0.25,
    ) -> None:
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport {transport!r} must be 'tcp' or 'udp'")
        parts = urlsplit(url)
        if parts.scheme.lower() != "rtsp" or not parts.hostname:
            raise RtspClientError(f"not an rtsp:// URL: {parts.scheme}://{parts.hostname or ''}")
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORT
        self.username = unquote(parts.username) if parts.username is not None else None
        self.password = unquote(parts.password) if parts.password is not None else ""
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        #: The URL without credentials (what goes on the request line and in logs).
        self.url = urlunsplit(("rtsp", netloc, parts.path or "/", parts.query, ""))
        self.transport = transport
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.stop = stop or threading.Event()
        self.user_agent = user_agent
        self.poll = poll
        self.track: VideoTrack | None = None
        self.depacketizer: Depacketizer | None = None  #: while ``access_units()`` runs
        self._sock: socket.socket | None = None
        self._udp: tuple[socket.socket, socket.socket] | None = None
        self._server_ports: tuple[int, int] | None = None
        self._channels = (0, 1)
        #: Interleaved frames on channels SETUP did not ask for, by channel (for the error).
        self._stray: dict[int, int] = {}
        self._buf = bytearray()
        self._cseq = 0
        self._session: str | None = None
        self._session_timeout = 60.0
        self._public: str = ""
        self._auth: tuple[str, dict[str, str]] | None = None  # scheme, challenge params
        self._nc = 0
        self._ssrc = secrets.randbits(32)
        self._cname = f"citygate-{secrets.token_hex(4)}".encode()
        self.stats = _ReceiverStats()
        #: Over UDP: puts swapped packets back in order (never used over TCP).
        self.reorder = ReorderBuffer(name=f"rtsp {self.url}")

    # -- session setup ----------------------------------------------------------------------
    def open(self) -> VideoTrack:
        """Connect, DESCRIBE, SETUP the video track and PLAY; returns what the SDP says."""
        deadline = time.monotonic() + self.open_timeout
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.open_timeout)
        except TimeoutError as exc:
            raise TimeoutError("no answer from the camera within the open timeout") from exc
        except ConnectionRefusedError as exc:
            raise RtspClientError("connection refused") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        options = self._request("OPTIONS", self.url, deadline=deadline, required=False)
        if options is not None:
            self._public = options.header("Public") or ""
        describe = self._request("DESCRIBE", self.url, {"Accept": "application/sdp"}, deadline=deadline)
        assert describe is not None
        base = describe.header("Content-Base") or describe.header("Content-Location") or self.url
        self.track = track = parse_sdp(describe.body.decode("utf-8", "replace"), base)
        if self.transport == "udp":
            rtp, rtcp = self._bind_udp_pair()
            self._udp = (rtp, rtcp)
            transport = f"RTP/AVP;unicast;client_port={rtp.getsockname()[1]}-{rtcp.getsockname()[1]}"
        else:
            transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
        setup = self._request("SETUP", track.control, {"Transport": transport}, deadline=deadline)
        assert setup is not None
        session = setup.header("Session")
        if not session:
            raise RtspClientError("SETUP answered without a session")
        sid, *params = [p.strip() for p in session.split(";")]
        self._session = sid
        for param in params:
            key, _, value = param.partition("=")
            if key.lower() == "timeout" and value.strip().isdigit():
                self._session_timeout = max(5.0, float(value))
        self._read_transport(setup.header("Transport") or "")
        self._request("PLAY", track.session_control, {"Range": "npt=0.000-"}, deadline=deadline)
        logger.info("rtsp %s: playing %s over %s", self.url, track.codec, self.transport)
        return track

    def _bind_udp_pair(self) -> tuple[socket.socket, socket.socket]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind(("", 0))
                port = rtp.getsockname()[1]
                if port % 2:
                    rtp.close()
                    rtp = socket.socket(family, socket.SOCK_DGRAM)
                    rtp.bind(("", port + 1 if port < 65534 else 0))
                    port = rtp.getsockname()[1]
                    if port % 2:
                        rtp.close()
                        continue
                rtcp = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    rtcp.bind(("", port + 1))
                except OSError:
                    rtcp.close()
                    rtp.close()
                    continue
            except OSError:
                rtp.close()
                continue
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            return rtp, rtcp
        raise RtspClientError("no free UDP port pair for RTP/RTCP")

    def _read_transport(self, transport: str) -> None:
        for part in transport.split(";"):
            key, _, value = part.strip().partition("=")
            low, _, high = value.partition("-")
            if key == "interleaved" and low.isdigit():
                self._channels = (int(low), int(high) if high.isdigit() else int(low) + 1)
            elif key == "server_port" and low.isdigit():
                self._server_ports = (int(low), int(high) if high.isdigit() else int(low) + 1)
        if self.transport == "udp" and self._server_ports is None:
            raise RtspClientError(f"SETUP over UDP answered without server ports: {transport!r}")

    # -- requests -----------------------------------------------------------------------------
    def _send_request(self, method: str, uri: str, headers: dict[str, str] | None = None) -> int:
        assert self._sock is not None
        self._cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self._cseq}", f"User-Agent: {self.user_agent}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self._session is not None:
            lines.append(f"Session: {self._session}")
        authorization = self._authorization(method, uri)
        if authorization:
            lines.append(f"Authorization: {authorization}")
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        return self._cseq

    def _request(
        self, method: str, uri: str, headers: dict[str, str] | None = None, *, deadline: float, required: bool = True
    ) -> _Response | None:
        """Send a request and wait for its answer; answers 401 with credentials once
        (once more when the camera says the nonce was stale)."""
        challenged = False
        for _ in range(3):
            cseq = self._send_request(method, uri, headers)
            try:
                response = self._wait_response(cseq, deadline)
            except TimeoutError:
                # Say which answer never completed (a camera dribbling bytes, or announcing
                # a body it never sends, looks the same as a silent one otherwise).
                raise TimeoutError(
                    f"no complete answer to {method} from the camera within the open timeout ({self.open_timeout:g} s)"
                ) from None
            if response.status == 401 and self.username is not None:
                challenge = self._pick_challenge(response.all("WWW-Authenticate"))
                stale = challenge is not None and challenge[1].get("stale", "").lower() == "true"
                if challenge is not None and (not challenged or stale):
                    self._auth, self._nc, challenged = challenge, 0, True
                    continue
            if 200 <= response.status < 300:
                return response
            if not required and response.status in (404, 405, 501):
                return None
            if 300 <= response.status < 400:
                # Not followed (a redirect loop cannot trap us); say where it pointed,
                # without any credentials the Location may carry.
                location = _without_userinfo(response.header("Location") or "")
                raise RtspClientError(
                    f"the camera redirects {method} ({response.status} {response.reason}) to {location or 'nowhere'}; "
                    "redirects are not followed: configure the camera's final URL"
                )
            raise RtspStatusError(method, response.status, response.reason)
        raise RtspStatusError(method, 401, "Unauthorized")

    def _pick_challenge(self, values: list[str]) -> tuple[str, dict[str, str]] | None:
        digests: list[dict[str, str]] = []
        basic = False
        for value in values:
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() == "digest":
                params = _parse_params(rest)
                params.setdefault("algorithm", "MD5")
                if params["algorithm"].upper() in ("MD5", "SHA-256") and "nonce" in params:
                    digests.append(params)
            elif scheme.lower() == "basic":
                basic = True
        for algorithm in ("SHA-256", "MD5"):
            for params in digests:
                if params["algorithm"].upper() == algorithm:
                    return "digest", params
        return ("basic", {}) if basic else None

    def _authorization(self, method: str, uri: str) -> str | None:
        if self._auth is None or self.username is None:
            return None
        scheme, params = self._auth
        if scheme == "basic":
            return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        algorithm = params["algorithm"].upper()
        qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
        qop = "auth" if "auth" in qops else None
        nc = cnonce = None
        if qop:
            self._nc += 1
            nc, cnonce = f"{self._nc:08x}", secrets.token_hex(8)
        creds = DigestCredentials(
            username=self.username, realm=params.get("realm", ""), nonce=params["nonce"], uri=uri, response="",
            algorithm=algorithm, qop=qop, nc=nc, cnonce=cnonce,
        )
        response = expected_response(creds, method, self.password)
        fields = [
            f'username="{_quote(self.username)}"', f'realm="{_quote(creds.realm)}"', f'nonce="{_quote(creds.nonce)}"',
            f'uri="{_quote(uri)}"', f'response="{response}"', f"algorithm={algorithm}",
        ]
        if qop:
            fields += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
        if "opaque" in params:
            fields.append(f'opaque="{_quote(params["opaque"])}"')
        return "Digest " + ", ".join(fields)

    def _wait_response(self, cseq: int, deadline: float) -> _Response:
        """Read until the answer with ``cseq``; interleaved data before it is dropped."""
        while True:
            kind = self._read_message(deadline)
            if isinstance(kind, _Response):
                got = kind.header("CSeq")
                if got is None or got.strip() == str(cseq):
                    return kind

    # -- reading ------------------------------------------------------------------------------
    def _fill(self, deadline: float | None) -> None:
        """Read more bytes into the buffer; TimeoutError at ``deadline`` (None: poll once)."""
        assert self._sock is not None
        while True:
            if self.stop.is_set():
                raise RtspClientError("stopped")
            wait = self.poll if deadline is None else max(0.0, min(self.poll, deadline - time.monotonic()))
            self._sock.settimeout(wait if wait > 0 else 0.001)
            try:
                chunk = self._sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                if deadline is None:
                    raise
                if time.monotonic() >= deadline:
                    raise TimeoutError("no answer from the camera within the open timeout") from None
                continue
            if not chunk:
                raise RtspClientError("the camera closed the connection")
            self._buf += chunk
            return

    def _read_message(self, deadline: float | None) -> _Response | tuple[int, bytes] | None:
        """One interleaved frame ``(channel, data)`` or one RTSP message (a response; a
        request from the camera is answered as not implemented and skipped)."""
        buf = self._buf
        while True:
            if buf[:1] == b"$":
                if len(buf) >= 4:
                    size = int.from_bytes(buf[2:4], "big")
                    if len(buf) >= 4 + size:
                        frame = (buf[1], bytes(buf[4 : 4 + size]))
                        del buf[: 4 + size]
                        return frame
            elif buf:
                end = buf.find(b"\r\n\r\n")
                if end < 0 and buf[:1] in (b"\r", b"\n"):
                    del buf[:1]  # stray line ends between messages
                    continue
                if end >= 0:
                    head = bytes(buf[:end]).decode("utf-8", "replace").split("\r\n")
                    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in head[1:])]
                    length = _content_length(v for k, v in headers if k.lower() == "content-length")
                    if len(buf) >= end + 4 + length:
                        body = bytes(buf[end + 4 : end + 4 + length])
                        del buf[: end + 4 + length]
                        first = head[0].split(" ", 2)
                        if first[0].startswith("RTSP/"):
                            status = int(first[1]) if len(first) > 1 and first[1].isdigit() else 0
                            return _Response(status, first[2] if len(first) > 2 else "", headers, body)
                        self._answer_not_implemented(headers)
                        continue
                elif len(buf) > 65536:
                    raise RtspClientError("the camera sent an RTSP message we cannot parse")
            self._fill(deadline)

    def _answer_not_implemented(self, headers: list[tuple[str, str]]) -> None:
        cseq = next((v for k, v in headers if k.lower() == "cseq"), "0")
        assert self._sock is not None
        self._sock.sendall(f"RTSP/1.0 501 Not Implemented\r\nCSeq: {cseq}\r\n\r\n".encode())

    def access_units(self) -> Iterator[AccessUnit]:
        """Access units as they complete, until the camera ends the stream or ``stop`` is set."""
        assert self.track is not None and self._sock is not None
        track = self.track
        depacketizer = Depacketizer(
            track.codec,
            track.payload_type,
            interleaved=track.packetization_mode == 2 or track.max_don_diff > 0,
            interleaving_depth=track.interleaving_depth,
        )
        self.depacketizer = depacketizer
        # Junk keeps the connection busy without carrying a picture: only packets of our
        # payload type count as data for the read timeout, or a camera sending nothing but
        # malformed RTP would stay "connecting" for ever without an error.
        last_valid = time.monotonic()
        malformed = 0
        for packet in self._rtp_packets():
            counted = depacketizer.packets
            try:
                units = depacketizer.push(packet)
            except ValueError:
                malformed += 1  # not RTP: some cameras send junk on the port
                units = []
            except OversizedAccessUnit as exc:
                raise RtspClientError(str(exc)) from None
            if depacketizer.packets > counted:
                last_valid = time.monotonic()
            elif time.monotonic() - last_valid > self.read_timeout:
                others = depacketizer.ignored
                raise TimeoutError(
                    "no valid RTP packet from the camera within the read timeout"
                    f" ({malformed} malformed, {others} of another payload type than {self.track.payload_type})"
                )
            yield from units

    def _rtp_packets(self) -> Iterator[bytes]:
        assert self.track is not None
        clock = self.track.clock_rate
        last_data = time.monotonic()
        next_report = last_data + 1.0
        keepalive_every = self._session_timeout / 2
        next_keepalive = last_data + keepalive_every
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_report:
                self._send_rtcp(self.stats.report(self._ssrc, self._cname, time.time()))
                next_report = now + RTCP_INTERVAL
            if now >= next_keepalive:
                method = "GET_PARAMETER" if "GET_PARAMETER" in self._public.upper() else "OPTIONS"
                self._send_request(method, self.track.session_control if method == "GET_PARAMETER" else self.url)
                next_keepalive = now + keepalive_every
            if now - last_data > self.read_timeout:
                if self._stray:
                    channels = ", ".join(f"{n} on channel {c}" for c, n in sorted(self._stray.items()))
                    raise TimeoutError(
                        f"no RTP on interleaved channel {self._channels[0]} within the read timeout; the camera sent "
                        f"frames on channels SETUP did not ask for ({channels})"
                    )
                raise TimeoutError("no data from the camera within the read timeout")
            for channel, data in self._receive():
                if channel == 0:
                    last_data = time.monotonic()
                    self.stats.rtp(data, time.time(), clock)
                    yield data
                elif channel == 1:
                    self.stats.sender_report(data, time.time())

    def _receive(self) -> list[tuple[int, bytes]]:
        """What arrived within ``poll`` seconds: (0, RTP) and (1, RTCP) items."""
        if self._udp is None:
            try:
                message = self._read_message(None)
            except TimeoutError:
                return []
            if isinstance(message, tuple):
                channel, data = message
                if channel == self._channels[0]:
                    return [(0, data)]
                if channel == self._channels[1]:
                    return [(1, data)]
                if len(self._stray) < 16 or channel in self._stray:
                    self._stray[channel] = self._stray.get(channel, 0) + 1
            return []  # a keepalive's answer, or another track's data
        assert self._sock is not None
        rtp, rtcp = self._udp
        wait = self.poll
        due = self.reorder.deadline()
        if due is not None:  # packets wait behind a gap: come back when it is given up
            wait = max(0.0, min(wait, due - time.monotonic()))
        readable, _, _ = select.select([rtp, rtcp, self._sock], [], [], wait)
        out: list[tuple[int, bytes]] = []
        for sock in readable:
            if sock is self._sock:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise RtspClientError("the camera closed the connection")
                self._buf += chunk
                self._drain_control()
                continue
            channel = 0 if sock is rtp else 1
            for _ in range(64):  # whatever is queued, without blocking
                try:
                    data = sock.recv(65536, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                if channel == 0:
                    out += [(0, packet) for packet in self.reorder.push(data, time.monotonic())]
                else:
                    out.append((channel, data))
        out += [(0, packet) for packet in self.reorder.poll(time.monotonic())]
        out.sort(key=lambda item: item[0])  # RTP first: a picture is not held back by RTCP
        return out

    def _drain_control(self) -> None:
        """Consume complete RTSP messages (keepalive answers) from the buffer over UDP."""
        while self._buf:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end]).decode("utf-8", "replace").split("\r\n")
            length = _content_length(
                value.strip() for key, _, value in (line.partition(":") for line in head[1:]) if key.strip().lower() == "content-length"
            )
            if len(self._buf) < end + 4 + length:
                return
            del self._buf[: end + 4 + length]

    def _send_rtcp(self, packet: bytes) -> None:
        try:
            if self._udp is not None:
                assert self._server_ports is not None
                self._udp[1].sendto(packet, (self.host, self._server_ports[1]))
            else:
                assert self._sock is not None
                self._sock.sendall(b"$" + bytes([self._channels[1]]) + len(packet).to_bytes(2, "big") + packet)
        except OSError as exc:
            logger.debug("rtsp %s: receiver report not sent: %s", self.url, exc)

    # -- teardown -----------------------------------------------------------------------------
    def close(self) -> None:
        """TEARDOWN (best effort, not waited for) and close every socket."""
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._session is not None and self.track is not None:
                try:
                    self._sock = sock
                    sock.settimeout(0.2)
                    self._send_request("TEARDOWN", self.track.session_control)
                except OSError:
                    pass
                finally:
                    self._sock = None
            sock.close()
        udp, self._udp = self._udp, None
        for s in udp or ():
            s.close()

    def __enter__(self) -> RtspClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _content_length(values: Iterator[str]) -> int:
    """The Content-Length of an RTSP message (0 without one); ``RtspClientError`` when it is
    malformed or beyond ``MAX_BODY``, so a hostile camera cannot make us buffer gigabytes."""
    text = next(iter(values), "")
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()):
        raise RtspClientError(f"the camera sent a malformed Content-Length: {text[:24]!r}")
    length = int(text)
    if length > MAX_BODY:
        raise RtspClientError(f"the camera announced an RTSP message body of {length} bytes (at most {MAX_BODY} accepted)")
    return length


def _without_userinfo(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url[:200]
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "an invalid URL"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))[:200]


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


__all__ = ["AccessUnit", "RtspClient", "RtspClientError", "RtspStatusError", "VideoTrack", "parse_sdp"]
