"""WebRTC live view: a WHEP endpoint; aiortc negotiates, the fan-out sends camera packets untouched.

    POST   /api/cameras/{camera_id}/whep   body: SDP offer (application/sdp)
           → 201, body: SDP answer, Location: /api/whep/sessions/{session_id}, ETag
    DELETE /api/whep/sessions/{session_id} → 204
    OPTIONS /api/cameras/{camera_id}/whep  → 204, Accept-Post: application/sdp

The camera's codec is sent, whatever the viewer lists first. Every offer must list H.264;
an H.265 camera is sent as H.265 when the offer also lists H265 (aiortc learns H.265 from
``gateway.live.hevc_rtc``, installed at import of this module), and is refused with 409 and
a reason otherwise, so the client falls back to LL-HLS. There is no trickle
ICE and no ICE restart: the answer carries every candidate (aiortc gathers them all in
``setLocalDescription``), and PATCH on a session is answered 405, as WHEP allows.

A session ends when the viewer DELETEs it, when its connection goes ``failed`` or
``closed``, when ICE/DTLS has not completed ``live.connect-timeout`` seconds after the answer,
when the viewer stops sending RTCP receiver reports while we keep sending it packets (a
viewer that vanished without a word; ICE consent alone would take 30 s to notice), when the
camera's stream ends, and at shutdown.

``LiveConfig.ice_interfaces`` restricts the *host candidates in the answer* to the listed
addresses. aioice has no supported way to restrict the addresses it gathers on, so the
candidates are filtered in the answer SDP; the peer can then only reach us on those
addresses (a check from another local address can still reach the peer as a
peer-reflexive candidate, which RFC 8445 allows).

Media path: aiortc does signalling, ICE and DTLS only. Each camera stream is packetized into
RTP once (``gateway.live.rtp_fanout.CameraFanout``, shared by every viewer of that camera and
profile); per viewer only the header is rewritten and the packet SRTP-protected and sent
(``gateway.live.srtp_sender.ViewerSender``, which also answers RTCP: NACK/RTX, PLI/FIR,
receiver reports, sender reports). A new viewer starts with the packetized GOP cache.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from gateway.access.guard import Principal, authenticated, principal, public, requires
from gateway.api.openapi import Media, api, enum_of
from gateway.access.middleware import client_address
from gateway.appkeys import ACCESS, CAMERAS
from gateway.cameras import Camera
from gateway.config import LiveConfig
from gateway.errors import BadRequest, Conflict, GatewayError, NotFound, TooManyRequests, Unavailable
from gateway.interfaces import StreamProfile
from gateway.live import hevc_rtc, playout_delay
from gateway.live.rtp_fanout import Fanouts
from gateway.live.srtp_out import NATIVE_UNAVAILABLE
from gateway.live.srtp_sender import ViewerSender, take_over
from gateway.tasks import TaskSet

hevc_rtc.install()
playout_delay.install()

logger = logging.getLogger(__name__)

SDP_TYPE = "application/sdp"
#: Seconds without an RTCP receiver report, while packets are sent, before a viewer is dropped.
SILENCE_TIMEOUT = 5.0
#: How often the liveness watchdog looks at the receiver reports.
WATCH_INTERVAL = 1.0


#: The SDP encoding name (``a=rtpmap``) of each camera codec WebRTC can send.
RTP_NAMES = {"h264": "H264", "hevc": "H265"}


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """aiortc's codecs for ``codec`` ('h264' or 'hevc'), plus RTX so lost packets can be retransmitted."""
    wanted = ("video/" + RTP_NAMES[codec].lower(), "video/rtx")
    return [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in wanted]


def offered_video_codecs(offer: str) -> set[str]:
    """The encoding names (upper case, e.g. ``H264``) the offer's video m-lines list."""
    description = aiortc_sdp.SessionDescription.parse(offer)
    return {c.name.upper() for m in description.media if m.kind == "video" for c in m.rtp.codecs}


def rtc_configuration(live: LiveConfig) -> RTCConfiguration:
    """The peer configuration; with no ICE servers configured, aiortc contacts none."""
    servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in live.ice_servers]
    return RTCConfiguration(iceServers=servers)


def check_offer_size(offer: str, max_m_lines: int) -> None:
    """Refuse an offer with more media sections than a viewer needs, before parsing it."""
    m_lines = sum(1 for line in offer.splitlines() if line.startswith("m="))
    if m_lines > max_m_lines:
        raise BadRequest(f"SDP offer has too many m-lines: {m_lines}, at most {max_m_lines}")


async def read_offer(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused once it exceeds ``max_bytes`` (never read further)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BadRequest(f"SDP offer too large: {declared} bytes, at most {max_bytes}")
    if request.content.is_eof():  # read already (a forwarded request's hop was verified over it)
        body = await request.read()
        if len(body) > max_bytes:
            raise BadRequest(f"SDP offer too large: more than {max_bytes} bytes")
        return body
    body = bytearray()
    async for chunk in request.content.iter_chunked(16384):
        body += chunk
        if len(body) > max_bytes:
            raise BadRequest(f"SDP offer too large: more than {max_bytes} bytes")
    return bytes(body)


_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")


def check_offer(offer: str) -> None:
    """Reject what aiortc would choke on, with a reason a client developer can act on."""
    try:
        description = aiortc_sdp.SessionDescription.parse(offer)
    except Exception as exc:  # aiortc's parser raises whatever the bad line triggers
        raise BadRequest(f"malformed SDP offer: {exc}") from None
    video = [m for m in description.media if m.kind == "video"]
    if not video:
        raise BadRequest("SDP offer has no video m-line")
    if not any(c.mimeType.lower() == "video/h264" for m in video for c in m.rtp.codecs):
        raise BadRequest("SDP offer lists no H.264 codec; every WebRTC viewer of this gateway must accept H.264")
    # aiortc would accept this and fail the DTLS handshake later, leaving a dead session.
    if not all(m.dtls is not None and m.dtls.fingerprints for m in video):
        raise BadRequest("SDP offer has no DTLS fingerprint (a=fingerprint)")
    # aiortc takes any ICE credentials (5000 characters, spaces, other scripts) and the session
    # dies at the connect timeout; RFC 8839 5.4 allows 4-256 (ufrag) and 22-256 (pwd) ice-chars.
    for m in video:
        for name, value, shortest in (("ice-ufrag", m.ice.usernameFragment, 4), ("ice-pwd", m.ice.password, 22)):
            if value is not None and not (shortest <= len(value) <= 256 and _ICE_CHARS.fullmatch(value)):
                raise BadRequest(
                    f"SDP offer has an invalid a={name}: {shortest} to 256 letters, digits, '+' or '/' (RFC 8839), "
                    f"got {len(value)} characters"
                )


def restrict_host_candidates(sdp: str, allowed: set[str]) -> str:
    """Drop host candidates whose address is not in ``allowed``; fix each section's default address.

    Server-reflexive and relay candidates are kept: they are what the ICE servers are for.
    """
    out: list[str] = []
    sections: list[list[str]] = [out]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) >= 8 and fields[7] == "host" and fields[4] not in allowed:
                continue
        sections[-1].append(line)
    result = list(sections[0])
    for section in sections[1:]:
        candidates = [line.split() for line in section if line.startswith("a=candidate:")]
        if candidates:
            address, port = candidates[0][4], candidates[0][5]
            family = "IP6" if ":" in address else "IP4"
            for i, line in enumerate(section):
                if line.startswith("m="):
                    parts = line.split()
                    section[i] = " ".join([parts[0], port, *parts[2:]])
                elif line.startswith("c="):
                    section[i] = f"c=IN {family} {address}"
        result.extend(section)
    return "\r\n".join(result) + "\r\n"


def _candidate_count(sdp: str) -> int:
    return sum(1 for line in sdp.splitlines() if line.startswith("a=candidate:"))


class WebRtcSession:
    """One viewer: a peer connection sending one camera's packets."""

    def __init__(self, registry: WebRtcSessions, camera_id: str, remote: str | None, owner: Principal | None = None) -> None:
        self.id = secrets.token_urlsafe(16)
        #: The signed-in user this view belongs to; only they may end it.
        self.owner = owner
        #: Called with the reason once the session has closed; an awaitable result is
        #: awaited before the close completes (the ``live.stop`` audit entry).
        self.on_closed: list[Callable[[WebRtcSession, str], object]] = []
        self.etag = f'"{secrets.token_hex(8)}"'
        self.camera_id = camera_id
        #: The stream it sends: the one asked for, or main if the camera cannot send that.
        self.profile = StreamProfile.MAIN
        self.remote = remote
        self.created = time.time()
        self.connected_at: float | None = None
        self.closed_reason: str | None = None
        #: The SDP answer, once ``negotiate`` has run.
        self.answer = ""
        self._registry = registry
        self.pc = RTCPeerConnection(registry.rtc_configuration)
        #: This viewer's end of the camera's fan-out (header rewrite, SRTP, RTCP).
        self.viewer: ViewerSender | None = None
        self._connected = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.pc.on("connectionstatechange", self._on_state)

    def __repr__(self) -> str:
        return f"<WebRtcSession {self.id} camera={self.camera_id} remote={self.remote}>"

    @property
    def closed(self) -> bool:
        return self._closing is not None

    @property
    def pending(self) -> bool:
        """Answered but ICE/DTLS not completed yet (counts against the user's pending limit)."""
        return self.connected_at is None and not self.closed

    async def negotiate(
        self, camera: Camera, offer: str, interfaces: set[str], profile: StreamProfile = StreamProfile.MAIN
    ) -> str:
        """Attach the camera, apply the offer, return the answer SDP (ICE gathering complete)."""
        reader, self.profile = await camera.open_live_reader(f"webrtc {self.id}", profile)
        info = reader.info
        codec = info.codec if info is not None else "unknown"
        if codec not in RTP_NAMES or RTP_NAMES[codec] not in offered_video_codecs(offer):
            reader.close()
            if codec == "hevc":
                raise Conflict(
                    f"camera {camera.id} sends H.265 and this viewer's offer lists no H265, "
                    "so WebRTC can send it H.264 only (use LL-HLS for this camera)"
                )
            raise Conflict(f"camera {camera.id} sends {codec}; WebRTC here sends H.264 or H.265 only")
        profile_for_keyframe = self.profile
        fanout = self._registry.fanouts.attach(
            camera.id, self.profile, reader, codec,
            request_keyframe=lambda: camera.vendor.request_keyframe(profile_for_keyframe),
        )
        # The transceiver must exist, with the camera's codec preferred, before the offer is
        # applied: setRemoteDescription binds the offer's video m-line to it and keeps only
        # the preferred codecs, so a browser that lists VP8 first still gets H.264 (or H.265).
        transceiver = self.pc.addTransceiver("video", direction="sendonly")
        transceiver.setCodecPreferences(codec_preferences(codec))
        sender = transceiver.sender
        viewer = self.viewer = ViewerSender(
            fanout, f"camera {camera.id}: viewer {self.id}", ssrc=sender._ssrc, rtx_ssrc=sender._rtx_ssrc,
            on_end=self._spawn_close,
        )
        viewer.zero_playout_delay = self._registry.live.zero_playout_delay
        fanout.join(viewer)  # the camera's stream ending or changing ends this session
        take_over(sender, viewer)  # once DTLS is up, the viewer sends, not aiortc's sender
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
        except Exception as exc:  # aiortc raises ValueError, OperationError, InvalidAccessError, ...
            raise BadRequest(f"cannot accept this SDP offer: {exc}") from None
        if self.closed:
            raise Unavailable(f"WebRTC session closed while negotiating ({self.closed_reason})")
        sdp = self.pc.localDescription.sdp
        if interfaces:
            sdp = restrict_host_candidates(sdp, interfaces)
            if not _candidate_count(sdp):
                raise Unavailable(f"no ICE candidate on the configured interfaces {sorted(interfaces)}")
        self._watchdog = asyncio.create_task(self._watch(), name=f"webrtc watchdog {self.id}")
        return sdp

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self._connected.is_set():
            self.connected_at = time.time()
            self._connected.set()
            logger.info(
                "camera %s: viewer %s connected from %s in %.2fs",
                self.camera_id,
                self.id,
                self.remote,
                self.connected_at - self.created,
            )
        elif state in ("failed", "closed"):
            self._spawn_close(f"connection {state}")

    def _spawn_close(self, reason: str) -> None:
        # The registry keeps the task until it ends: shutdown waits for every close under
        # way, so no view ends after the audit log has closed.
        if self._closing is None:
            self._closing = self._registry.closing.spawn(self._close(reason), name=f"webrtc close {self.id}")

    async def close(self, reason: str) -> None:
        """Close the peer and release the camera. Idempotent; returns once the peer is closed."""
        self._spawn_close(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        self.closed_reason = reason
        self._registry._remove(self)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        if self.viewer is not None:
            self.viewer.close()
        try:
            await asyncio.wait_for(self.pc.close(), timeout=5.0)
        except Exception as exc:  # the session is gone either way
            logger.warning("camera %s: viewer %s: closing the peer failed: %r", self.camera_id, self.id, exc)
        logger.info(
            "camera %s: viewer %s closed after %.1fs (%s)", self.camera_id, self.id, time.time() - self.created, reason
        )
        for callback in self.on_closed:
            try:
                result = callback(self, reason)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("camera %s: viewer %s: close callback failed", self.camera_id, self.id)

    async def _watch(self) -> None:
        """Drop a viewer that never connects, or that stops reporting while we send to it."""
        timeout = self._registry.connect_timeout
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            self._spawn_close(f"ICE/DTLS did not complete within {timeout:.0f}s")
            return
        assert self.connected_at is not None and self.viewer is not None
        silence = self._registry.silence_timeout
        viewer = self.viewer
        while not self.closed:
            await asyncio.sleep(WATCH_INTERVAL)
            last_report = max(self.connected_at, viewer.last_report)
            if viewer.last_sent - last_report > silence:
                self._spawn_close(f"no receiver report for {silence:.0f}s")
                return


class WebRtcSessions:
    """Every live WebRTC session of this gateway, with the viewer limits: per camera, in
    all, and per user (sessions, sessions still connecting, offers per minute)."""

    def __init__(
        self,
        live: LiveConfig,
        *,
        connect_timeout: float | None = None,
        silence_timeout: float = SILENCE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live = live
        self.rtc_configuration = rtc_configuration(live)
        self.interfaces = set(live.ice_interfaces)
        self.connect_timeout = live.connect_timeout if connect_timeout is None else connect_timeout
        self.silence_timeout = silence_timeout
        self._clock = clock
        self._sessions: dict[str, WebRtcSession] = {}
        #: Sessions being closed (and their ``live.stop`` audit writes): awaited at shutdown.
        self.closing = TaskSet("webrtc")
        #: One RTP packetizer per camera stream, shared by its viewers.
        self.fanouts = Fanouts()
        if NATIVE_UNAVAILABLE is not None:
            logger.warning("WebRTC viewers are sent to from Python, at a higher CPU cost per viewer: %s", NATIVE_UNAVAILABLE)
        #: Per user id: when their offers of the last minute arrived.
        self._offers: dict[int, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[WebRtcSession]:
        return iter(list(self._sessions.values()))

    def get(self, session_id: str) -> WebRtcSession:
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no WebRTC session {session_id!r}")
        return session

    def sessions_for_camera(self, camera_id: str) -> list[WebRtcSession]:
        return [s for s in self._sessions.values() if s.camera_id == camera_id]

    def sessions_of(self, owner: Principal) -> list[WebRtcSession]:
        return [s for s in self._sessions.values() if s.owner is not None and s.owner.user_id == owner.user_id]

    def count_offer(self, owner: Principal) -> None:
        """Count one WHEP offer of ``owner``; refuse it (429) past ``max-offers-per-minute``."""
        now = self._clock()
        window = self._offers.setdefault(owner.user_id, deque())
        while window and now - window[0] >= 60.0:
            window.popleft()
        for user_id in [u for u, w in self._offers.items() if not w and u != owner.user_id]:
            del self._offers[user_id]  # forget users who went quiet
        limit = self.live.max_offers_per_minute
        if len(window) >= limit:
            wait = max(1, int(60.0 - (now - window[0]) + 0.999))
            raise TooManyRequests(
                f"too many WHEP offers: user {owner.username} may send {limit} per minute; try again in {wait}s"
            )
        window.append(now)

    def _check_user(self, owner: Principal) -> None:
        mine = self.sessions_of(owner)
        pending = sum(1 for s in mine if s.pending)
        if pending >= self.live.max_pending_per_user:
            raise TooManyRequests(
                f"too many pending WebRTC sessions: user {owner.username} already has {pending} not yet connected "
                f"(at most {self.live.max_pending_per_user})"
            )
        if len(mine) >= self.live.max_sessions_per_user:
            raise TooManyRequests(
                f"too many concurrent WebRTC sessions: user {owner.username} already has {len(mine)} "
                f"(at most {self.live.max_sessions_per_user})"
            )

    async def open(
        self, camera: Camera, offer: str, remote: str | None, owner: Principal | None = None,
        profile: StreamProfile = StreamProfile.MAIN,
    ) -> WebRtcSession:
        """Start a session for ``camera``, its ``answer`` set. Raises ``GatewayError``s
        (``TooManyRequests`` when ``owner`` is at a per-user limit)."""
        check_offer_size(offer, self.live.max_offer_m_lines)
        check_offer(offer)
        if owner is not None:
            self._check_user(owner)  # no await from here to the registration below
        if len(self._sessions) >= self.live.max_viewers:
            raise Unavailable(f"the gateway already serves its maximum of {self.live.max_viewers} WebRTC viewers")
        per_camera = self.live.max_viewers_per_camera
        if len(self.sessions_for_camera(camera.id)) >= per_camera:
            raise Unavailable(f"camera {camera.id} already has its maximum of {per_camera} WebRTC viewers")
        session = WebRtcSession(self, camera.id, remote, owner)
        self._sessions[session.id] = session  # counted against the limits while negotiating
        try:
            session.answer = await session.negotiate(camera, offer, self.interfaces, profile)
        except BaseException:
            await session.close("negotiation failed")
            raise
        logger.info("camera %s: viewer %s answered (%s)", camera.id, session.id, remote)
        return session

    def _remove(self, session: WebRtcSession) -> None:
        self._sessions.pop(session.id, None)

    async def close_all(self, reason: str) -> None:
        """Close every session and wait for every close under way, with its audit entry."""
        sessions = list(self._sessions.values())
        if sessions:
            logger.info("closing %d WebRTC sessions (%s)", len(sessions), reason)
        await asyncio.gather(*(s.close(reason) for s in sessions), return_exceptions=True)
        await self.closing.drain()
        self.fanouts.close_all(reason)


WEBRTC_SESSIONS = web.AppKey("webrtc_sessions", WebRtcSessions)
#: Response header naming the stream profile a viewer gets.
PROFILE_HEADER = "Citygate-Profile"


@api(summary="WHEP: an SDP offer in, the answer out (201)", query={"profile": enum_of(*StreamProfile)}, body=Media(SDP_TYPE), responses={201: Media(SDP_TYPE)}, extra_errors=(503,), tag="live")
@requires("live.view")
async def post_offer(request: web.Request) -> web.Response:
    camera = request.app[CAMERAS].get(request.match_info["camera_id"])
    who = principal(request)
    client = client_address(request)
    sessions = request.app[WEBRTC_SESSIONS]
    if request.content_type != SDP_TYPE:
        reason = f"a WHEP offer must be sent as {SDP_TYPE}, not {request.content_type or 'no content type'}"
        await _audit_refusal(request, who, client, camera.id, 415, reason)
        raise web.HTTPUnsupportedMediaType(reason=reason)
    # Every refusal is audited (a fuzzed offer found most were not: malformed SDP, no video,
    # no H.264, not UTF-8, the camera's codec): the limits first, offers per minute, offer
    # size and m-lines (before aiortc parses anything), then the offer, then sessions per
    # user (checked as the session registers). 503s (viewer limits, camera offline) are not
    # refusals of this user.
    try:
        wanted = request.query.get("profile", StreamProfile.MAIN)
        if wanted not in tuple(StreamProfile):
            raise BadRequest(f"profile must be one of {', '.join(StreamProfile)}, not {wanted!r}")
        sessions.count_offer(who)
        body = await read_offer(request, sessions.live.max_offer_bytes)
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("SDP offer is not UTF-8 text") from None
        check_offer_size(offer, sessions.live.max_offer_m_lines)
        session = await sessions.open(camera, offer, request.remote, who, StreamProfile(wanted))
    except GatewayError as exc:
        if 400 <= exc.status < 500:
            await _audit_refusal(request, who, client, camera.id, exc.status, exc.message)
        raise
    _bind_to_access(request.app, session, who, client)
    await request.app[ACCESS].audit.record(
        "live.start", user=who.username, client=client, camera=camera.id,
        detail={"kind": "webrtc", "session": session.id, "profile": session.profile},
    )
    return web.Response(
        status=201,
        body=session.answer.encode(),
        content_type=SDP_TYPE,
        # the stream it got: a masked camera, or one without a sub stream, sends main
        headers={"Location": f"/api/whep/sessions/{session.id}", "ETag": session.etag, PROFILE_HEADER: session.profile},
    )


async def _audit_refusal(request: web.Request, who: Principal, client: str, camera: str, status: int, reason: str) -> None:
    await request.app[ACCESS].audit.record(
        "live.view", outcome="refused", user=who.username, client=client, camera=camera,
        detail={"kind": "webrtc", "status": status, "reason": reason},
    )


def _bind_to_access(app: web.Application, session: WebRtcSession, who: Principal, client: str) -> None:
    """Register the view so it is closed when its user loses the right, and audit its end."""
    control = app[ACCESS]
    ticket = control.track(who, session.camera_id, "live.view", "webrtc", session.close, client)

    def closed(s: WebRtcSession, reason: str) -> Awaitable[int]:
        control.release(ticket)
        duration = round(time.time() - s.created, 3)
        # awaited by the session's close, which the registry keeps until it ends
        return control.audit.record(
            "live.stop", user=who.username, client=client, camera=s.camera_id,
            detail={"kind": "webrtc", "session": s.id, "duration": duration, "reason": reason},
        )

    session.on_closed.append(closed)


@api(summary="WHEP: what the endpoint accepts", responses={204: None}, tag="live")
@public
async def options_whep(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Accept-Post": SDP_TYPE, "Allow": "OPTIONS, POST"})


@api(summary="WHEP: end a session", responses={204: None}, tag="live")
@authenticated
async def delete_session(request: web.Request) -> web.Response:
    session = request.app[WEBRTC_SESSIONS].get(request.match_info["session_id"])
    if session.owner is not None and session.owner.user_id != principal(request).user_id:
        # Someone else's view: as if it did not exist.
        raise NotFound(f"no WebRTC session {request.match_info['session_id']!r}")
    await session.close("viewer ended the session")
    return web.Response(status=204)


async def close_on_shutdown(app: web.Application) -> None:
    """``on_shutdown``: every session ends before aiohttp waits for open requests."""
    await app[WEBRTC_SESSIONS].close_all("gateway shutting down")


def setup(app: web.Application) -> None:
    app.router.add_post("/api/cameras/{camera_id}/whep", post_offer, name="whep")
    app.router.add_route("OPTIONS", "/api/cameras/{camera_id}/whep", options_whep)
    app.router.add_delete("/api/whep/sessions/{session_id}", delete_session, name="whep_session")
