"""The ONVIF face: Citygate as an ONVIF Profile S device (``[onvif-server]``, off by default).

A central camera management system adds the gateway like a camera. It is served on a port
of its own (``bind``/``port``), apart from the web client and the HTTP API: the ONVIF port
can be opened to the city's network alone, and no cookie, CSRF or browser header rule of the
API applies to it. Operations (the Profile S subset a VMS needs):

Device  GetSystemDateAndTime (open to anyone, as the spec requires), GetDeviceInformation,
        GetCapabilities, GetServices
Media   GetProfiles, GetProfile (one profile per camera the account may watch: ``live.view``
        on its area or by a grant; the token is the camera id), GetStreamUri (the camera's
        RTSP re-stream of ``[rtsp-out]``), GetSnapshotUri (a URL on this port with a signed
        token that expires after ``snapshot-uri-seconds``: HTTP Digest is not offered)
PTZ     ContinuousMove, Stop, AbsoluteMove, RelativeMove, GetStatus, GetPresets, GotoPreset,
        on cameras where the account has ``ptz.control``; every command goes through the
        gateway's PTZ service, so the control lock, priorities and its audit apply (in a
        cluster, the PTZ service of the node running the camera: the command is passed there)

Authentication: WS-UsernameToken. A PasswordDigest can only be checked by a server that
holds the secret itself, and Citygate keeps account passwords only as Argon2 hashes; so the
digest's password is the account's *RTSP secret*, the one the RTSP re-stream's Digest takes
(``gateway.live.rtsp_out``: ``HMAC(gateway key, username, password hash)``, issued by an
administrator, never stored, changed with the password). One credential then serves the
ONVIF device and the stream URIs it hands out, as ONVIF clients expect. PasswordText is
accepted only over HTTPS, with that secret or an API token of the account. The account
must exist and be enabled; its role, areas and grants decide as everywhere else. Every
request is audited as ``onvif.<Operation>`` with the account, the client and the camera;
refusals with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import sqlalchemy as sa
from aiohttp import web

from gateway import __version__
from gateway.access.guard import Principal
from gateway.appkeys import ACCESS, AUDIT, CAMERAS, CONFIG, DATABASE, IDENTITY, PTZ
from gateway.db import users
from gateway.errors import BadRequest, CameraUnavailable, Conflict, Forbidden, GatewayError, NotFound
from gateway.cluster.forward import verify_hop
from gateway.cluster.hop import CLIENT_HEADER, HOP_HEADERS, NODE_HEADER
from gateway.live.rtsp_out import credentials_key, rtsp_secret, stream_uri
from gateway.media.snapshot import snapshot_jpeg
from gateway.onvif_face import soap
from gateway.onvif_face.discovery import DiscoveryResponder
from gateway.onvif_face.soap import SoapFault, SoapRequest, invalid_arg, not_authorized, text

if TYPE_CHECKING:
    from gateway.access.audit import AuditLog
    from gateway.access.control import AccessControl
    from gateway.access.identity import Identity
    from gateway.cameras import Camera, CameraManager
    from gateway.cluster.forward import OwnerLink
    from gateway.config import Config
    from gateway.db import Database
    from gateway.interfaces import CameraVendor
    from gateway.ptz import PtzService

logger = logging.getLogger(__name__)

ONVIF_FACE = web.AppKey("onvif_face", "OnvifFace")
#: How long a snapshot waits for a keyframe when none is cached (as the API's snapshot).
SNAPSHOT_WAIT = 5.0
SERVICE_PATHS = {soap.TDS: "device_service", soap.TRT: "media_service", soap.TPTZ: "ptz_service"}


@dataclass(frozen=True, slots=True)
class Call:
    """One SOAP request being answered."""

    soap: SoapRequest
    principal: Principal | None
    client: str
    base: str  #: scheme://host:port of this face as the client reached it
    host: str  #: the host alone


Operation = Callable[[Call], Awaitable[tuple[str, str | None]]]


@dataclass(frozen=True, slots=True)
class _Stream:
    """What a media profile says of a camera's stream."""

    codec: str
    width: int
    height: int
    fps: float
    bitrate: float  #: bit/s


class OnvifFace:
    """The ONVIF device: an HTTP(S) server of its own and, if enabled, WS-Discovery replies."""

    def __init__(
        self,
        config: Config,
        *,
        access: AccessControl,
        identity: Identity,
        cameras: CameraManager,
        ptz: PtzService,
        audit: AuditLog,
        db: Database,
        key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._face = config.onvif_server
        self._access = access
        self._identity = identity
        self._cameras = cameras
        self._ptz = ptz
        self._audit = audit
        self._db = db
        self._key = key  #: the RTSP re-stream's key: account secrets derive from it
        self._clock = clock
        self._nonces = soap.NonceCache(self._face.max_clock_skew)
        #: Signs snapshot URIs; new at every start, so a restart ends every issued URI.
        self._snapshot_key = secrets.token_bytes(32)
        self._runner: web.AppRunner | None = None
        self._discovery: DiscoveryResponder | None = None
        self._port = 0
        self._tls = self._ssl_context()
        #: Stable across restarts of the same installation (WS-Discovery endpoint, serial).
        self.device_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"citygate:{config.data_dir}")
        #: In a cluster: the node running each camera, to pass snapshot requests and PTZ
        #: commands to (set by ``gateway.cluster.wiring`` while the node runs).
        self.cluster: OwnerLink | None = None
        self._ops: dict[tuple[str, str], Operation] = {
            (soap.TDS, "GetDeviceInformation"): self._device_information,
            (soap.TDS, "GetCapabilities"): self._capabilities,
            (soap.TDS, "GetServices"): self._services,
            (soap.TRT, "GetProfiles"): self._profiles,
            (soap.TRT, "GetProfile"): self._profile,
            (soap.TRT, "GetStreamUri"): self._stream_uri,
            (soap.TRT, "GetSnapshotUri"): self._snapshot_uri,
            (soap.TPTZ, "ContinuousMove"): self._continuous_move,
            (soap.TPTZ, "Stop"): self._stop,
            (soap.TPTZ, "AbsoluteMove"): self._absolute_move,
            (soap.TPTZ, "RelativeMove"): self._relative_move,
            (soap.TPTZ, "GetStatus"): self._status,
            (soap.TPTZ, "GetPresets"): self._presets,
            (soap.TPTZ, "GotoPreset"): self._goto_preset,
        }

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self._face.tls_cert:
            return None
        root = Path(self._config.root)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(root / self._face.tls_cert, root / self._face.tls_key if self._face.tls_key else None)
        return ctx

    @property
    def port(self) -> int:
        """The port the face listens on (the configured one, or the one chosen for port 0)."""
        return self._port

    @property
    def discovery_port(self) -> int | None:
        return self._discovery.port if self._discovery is not None else None

    async def __aenter__(self) -> OnvifFace:
        app = web.Application(client_max_size=soap.MAX_REQUEST_BYTES)
        app.router.add_post("/onvif/{service}", self._handle)
        app.router.add_get("/onvif/snapshot/{camera_id}", self._snapshot)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._face.bind, self._face.port, ssl_context=self._tls)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or ()
        self._port = sockets[0].getsockname()[1] if sockets else self._face.port
        logger.info("ONVIF face on %s://%s:%d/onvif/device_service", self._scheme, self._face.bind, self._port)
        if self._face.discovery:
            self._discovery = DiscoveryResponder(
                bind=self._face.bind, port=self._face.discovery_port, endpoint=f"urn:uuid:{self.device_uuid}",
                xaddr=self._xaddr_for,
            )
            await self._discovery.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._discovery is not None:
            await self._discovery.__aexit__(*exc)
            self._discovery = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def _scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    def cluster_url(self, node_host: str) -> str:
        """Where the other nodes of a cluster reach this face (the node's advertised host)."""
        return self._base(self._face.public_host or node_host, self._port)

    def _xaddr_for(self, local_host: str) -> str:
        """The device service address for a WS-Discovery reply received on ``local_host``."""
        host = self._face.public_host or local_host
        return f"{self._base(host, self._port)}/onvif/device_service"

    def _base(self, host: str, port: int) -> str:
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self._scheme}://{host}:{port}"

    # -- HTTP --------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        client = request.remote or ""
        public = self._face.public_host
        host = public or (request.url.host or self._face.bind)
        call_base = self._base(host, self._port)
        operation, principal, camera = "?", None, None
        # in a cluster: a PTZ command another node's face passed here, for a camera running here
        passed_by = request.headers.get(NODE_HEADER, "")[:64] if any(h in request.headers for h in HOP_HEADERS) else None
        if passed_by is not None:
            reason = await verify_hop(self.cluster.secret if self.cluster is not None else None, request)
            if reason is not None:
                return await self._refuse_forged(request, client, passed_by, reason)
            client = request.headers[CLIENT_HEADER]
        try:
            raw = await request.read()
            req = soap.parse_request(raw)
            operation = req.operation
            if req.namespace == soap.TDS and operation == "GetSystemDateAndTime":
                body = self._date_and_time()  # open to anyone: clients need it to stamp digests
            else:
                handler = self._ops.get((req.namespace, operation))
                if passed_by is not None:  # the passing node checked the credentials; the rights are checked again here
                    if req.namespace != soap.TPTZ:
                        raise not_authorized("only PTZ commands are passed between the nodes of a cluster")
                    principal = await self._principal(request.query.get("user", "")[:64])
                else:
                    principal = await self._authenticate(req, client, secure=request.secure)
                if handler is None:
                    raise soap.not_supported(operation)
                call = Call(req, principal, client, call_base, host)
                if passed_by is None and req.namespace == soap.TPTZ and self.cluster is not None:
                    answer = await self._pass_to_owner(call, raw, request.path)
                    if answer is not None:
                        return answer  # the node running the camera executed and audited it
                body, camera = await handler(call)
        except SoapFault as fault:
            camera = camera or getattr(fault, "camera", None)
            why = getattr(fault, "refused", None)
            refused = why is not None or "ter:NotAuthorized" in fault.subcodes or "ter:OperationProhibited" in fault.subcodes
            user = principal.username if principal is not None else getattr(fault, "user", None)
            logger.info("onvif: %s from %s (%s) refused: %s", operation, client, user or "anonymous", why or fault.reason)
            await self._audit.record(
                f"onvif.{operation}"[:64], outcome="refused" if refused else "failed", user=user, client=client,
                camera=camera, detail={"reason": why or fault.reason, "fault": list(fault.subcodes)},
            )
            return self._answer(soap.fault_body(fault), fault.status)
        await self._audit.record(
            f"onvif.{operation}", user=principal.username if principal else None, client=client, camera=camera,
            detail={"node": passed_by} if passed_by is not None else None,
        )
        return self._answer(body)

    async def _pass_to_owner(self, call: Call, raw: bytes, path: str) -> web.Response | None:
        """A PTZ command for a camera another node runs goes to that node's face, so its PTZ
        service (the control lock, priorities, the driver) executes it; None: it runs here.
        The account's rights on the camera are checked here first (refusals audited here)."""
        assert self.cluster is not None and call.principal is not None
        camera_id = _child_text(call.soap.body, "ProfileToken")
        if not camera_id:
            return None  # the operation's own check answers
        camera = self._camera(call, "ptz.control", token=camera_id)
        try:
            owner = self.cluster.elsewhere(camera.id)
        except GatewayError as exc:
            raise _blamed(_fault_of(exc), camera=camera.id) from None
        if owner is None:
            return None
        if owner.onvif_url is None:
            raise _blamed(SoapFault("env:Receiver", ("ter:Action",), f"camera {camera.id} runs on node {owner.node}, "
                                    "which has no ONVIF face"), camera=camera.id)
        try:
            status, content_type, body = await self.cluster.send(
                "POST", owner.onvif_url, f"{path}?user={quote(call.principal.username, safe='')}", call.client, raw,
                "application/soap+xml; charset=utf-8",
            )
        except GatewayError as exc:
            raise _blamed(_fault_of(exc), camera=camera.id) from None
        return web.Response(status=status, body=body, content_type=content_type or "application/soap+xml",
                            charset="utf-8", headers={"Cache-Control": "no-store"})

    async def _refuse_forged(self, request: web.Request, client: str, node: str, reason: str) -> web.Response:
        await self._audit.record(
            "cluster.forged", outcome="refused", client=client,
            detail={"node": node, "reason": reason, "method": request.method, "path": request.path[:300]},
        )
        logger.warning("onvif: refused a request claiming to come from node %r: %s", node, reason)
        return web.Response(status=403, text="not a request of this cluster's nodes\n", headers={"Cache-Control": "no-store"})

    @staticmethod
    def _answer(body: str, status: int = 200) -> web.Response:
        return web.Response(
            body=soap.envelope(body), status=status, content_type="application/soap+xml", charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    async def _authenticate(self, req: SoapRequest, client: str, *, secure: bool) -> Principal:
        token = soap.username_token(req.header)
        if token is None:
            raise not_authorized("this operation needs a WS-UsernameToken (a PasswordDigest with the account's device secret)")
        row = await self._account(token.username)
        secret = rtsp_secret(self._key, token.username, row["password_hash"]) if row is not None else None
        if token.digest:
            reason = soap.check_digest(
                token, secret or rtsp_secret(self._key, "", ""), now=self._clock(), max_skew=self._face.max_clock_skew,
                nonces=self._nonces,
            )
            if reason is None and secret is None:
                reason = "wrong username or password digest"
            if reason is not None:
                raise _blamed(not_authorized(reason), user=token.username[:64])
            return await self._principal(token.username)
        if not secure:
            raise _blamed(not_authorized(
                "PasswordText is accepted only over HTTPS ([onvif-server] tls-cert); send a PasswordDigest"
            ), user=token.username[:64])
        if secret is not None and hmac.compare_digest(secret.encode(), token.password.encode()):
            return await self._principal(token.username)
        who = await self._identity.authenticate(token.password)  # an API token of the account
        if who is None or who.username != token.username:
            raise _blamed(not_authorized("wrong username or password"), user=token.username[:64])
        if who.must_change_password:
            raise _blamed(not_authorized("the account must change its password first"), user=who.username)
        return who

    async def _account(self, username: str) -> Any:
        if len(username) > 64:
            return None
        q = sa.select(users.c.id, users.c.password_hash).where(users.c.username == username)
        async with self._db.connect() as conn:
            return (await conn.execute(q)).mappings().first()

    async def _principal(self, username: str) -> Principal:
        try:
            user = await self._identity.get_user(username)
        except NotFound:
            raise _blamed(not_authorized(f"no account {username!r} in Citygate"), user=username) from None
        if user.disabled:
            raise _blamed(not_authorized(f"the account {username!r} is disabled"), user=username)
        return Principal(
            user_id=user.id, username=user.username, role=user.role, areas=user.areas, all_areas=user.all_areas,
            session_id=f"onvif:{user.id}", kind="onvif", csrf_token="",
        )

    # -- rights ------------------------------------------------------------------------
    def _camera(self, call: Call, action: str, *, token: str | None = None) -> Camera:
        """The camera named by the request's ProfileToken, if the account may ``action`` on it."""
        assert call.principal is not None
        camera_id = token if token is not None else _child_text(call.soap.body, "ProfileToken")
        if not camera_id:
            raise invalid_arg("ProfileToken is required", "ter:NoProfile")
        try:
            camera = self._cameras.get(camera_id)
        except NotFound:
            raise invalid_arg(f"no profile {camera_id!r}", "ter:NoProfile") from None
        if camera_id not in self._access.cameras_for(call.principal, ("live.view",)):
            # answered like an unknown camera, audited as the refusal it is, with the reason
            reason = self._access.decide(call.principal, "live.view", camera_id).reason
            raise _blamed(invalid_arg(f"no profile {camera_id!r}", "ter:NoProfile"), camera=camera_id, refused=reason)
        if action != "live.view":
            decision = self._access.decide(call.principal, action, camera_id)
            if not decision:
                raise _blamed(not_authorized(decision.reason), camera=camera_id)
        return camera

    # -- device service ----------------------------------------------------------------
    def _date_and_time(self) -> str:
        now = datetime.fromtimestamp(self._clock(), UTC)
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>"
            "<tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
            f"<tt:UTCDateTime><tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>"
            f"<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date></tt:UTCDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    async def _device_information(self, call: Call) -> tuple[str, str | None]:
        return (
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>Citygate</tds:Manufacturer>"
            "<tds:Model>Citygate video gateway</tds:Model>"
            f"<tds:FirmwareVersion>{text(__version__)}</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{self.device_uuid}</tds:SerialNumber><tds:HardwareId>citygate</tds:HardwareId>"
            "</tds:GetDeviceInformationResponse>"
        ), None

    def _may_ptz(self, principal: Principal) -> bool:
        return bool(self._access.cameras_for(principal, ("ptz.control",)) & self._ptz_cameras())

    def _ptz_cameras(self) -> set[str]:
        return {c.id for c in self._cameras if c.vendor.ptz_capabilities().any}

    async def _capabilities(self, call: Call) -> tuple[str, str | None]:
        assert call.principal is not None
        categories = {(c.text or "").strip() for c in call.soap.body.iterfind(f"{{{soap.TDS}}}Category")} or {"All"}
        known = {"All", "Analytics", "Device", "Events", "Imaging", "Media", "PTZ"}
        if not categories <= known:
            raise invalid_arg(f"unknown capability category {sorted(categories - known)[0]!r}")
        want = (lambda c: True) if "All" in categories else categories.__contains__
        parts = []
        if want("Device"):
            parts.append(
                f"<tt:Device><tt:XAddr>{call.base}/onvif/device_service</tt:XAddr>"
                "<tt:System><tt:DiscoveryResolve>false</tt:DiscoveryResolve><tt:DiscoveryBye>false</tt:DiscoveryBye>"
                "<tt:RemoteDiscovery>false</tt:RemoteDiscovery><tt:SystemBackup>false</tt:SystemBackup>"
                "<tt:SystemLogging>false</tt:SystemLogging><tt:FirmwareUpgrade>false</tt:FirmwareUpgrade>"
                "<tt:SupportedVersions><tt:Major>2</tt:Major><tt:Minor>40</tt:Minor></tt:SupportedVersions>"
                "</tt:System></tt:Device>"
            )
        if want("Media"):
            parts.append(
                f"<tt:Media><tt:XAddr>{call.base}/onvif/media_service</tt:XAddr><tt:StreamingCapabilities>"
                "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
                "</tt:StreamingCapabilities></tt:Media>"
            )
        if want("PTZ") and self._may_ptz(call.principal):
            parts.append(f"<tt:PTZ><tt:XAddr>{call.base}/onvif/ptz_service</tt:XAddr></tt:PTZ>")
        return f"<tds:GetCapabilitiesResponse><tds:Capabilities>{''.join(parts)}</tds:Capabilities></tds:GetCapabilitiesResponse>", None

    async def _services(self, call: Call) -> tuple[str, str | None]:
        assert call.principal is not None
        services = [(soap.TDS, "device_service"), (soap.TRT, "media_service")]
        if self._may_ptz(call.principal):
            services.append((soap.TPTZ, "ptz_service"))
        body = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{call.base}/onvif/{path}</tds:XAddr>"
            "<tds:Version><tt:Major>2</tt:Major><tt:Minor>40</tt:Minor></tds:Version></tds:Service>"
            for ns, path in services
        )
        return f"<tds:GetServicesResponse>{body}</tds:GetServicesResponse>", None

    # -- media service -----------------------------------------------------------------
    def _stream(self, camera: Camera) -> _Stream | None:
        """The camera's stream as it is now: from its hub here, or in a cluster from what the
        node running it publishes of it (a hub here without the camera has seen nothing)."""
        if self.cluster is None or self.cluster.elsewhere(camera.id) is None:
            info = camera.hub.info
            if info is None:
                return None
            stats = camera.hub.stats()
            return _Stream(info.codec, info.width, info.height, info.declared_fps or stats.fps, stats.bitrate)
        seen = self.cluster.node.remote_views.get(camera.id)
        if not seen or not seen.get("codec") or not seen.get("width") or not seen.get("height"):
            return None
        return _Stream(seen["codec"], seen["width"], seen["height"], seen.get("fps") or 0.0, seen.get("bitrate") or 0)

    def _profile_xml(self, principal: Principal, camera: Camera, element: str = "trt:Profiles") -> str:
        cid = text(camera.id)
        stream = self._stream(camera)
        source = ""
        encoder = ""
        if stream is not None:
            source = (
                f'<tt:VideoSourceConfiguration token="source-{cid}"><tt:Name>{cid}</tt:Name><tt:UseCount>1</tt:UseCount>'
                f'<tt:SourceToken>{cid}</tt:SourceToken><tt:Bounds x="0" y="0" width="{stream.width}" height="{stream.height}"/>'
                "</tt:VideoSourceConfiguration>"
            )
            if stream.codec == "h264":  # Media (ver10) has no word for H.265: those profiles carry no encoder
                encoder = (
                    f'<tt:VideoEncoderConfiguration token="encoder-{cid}"><tt:Name>{cid}</tt:Name><tt:UseCount>1</tt:UseCount>'
                    f"<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>{stream.width}</tt:Width>"
                    f"<tt:Height>{stream.height}</tt:Height></tt:Resolution><tt:Quality>5</tt:Quality>"
                    f"<tt:RateControl><tt:FrameRateLimit>{round(stream.fps or 25)}</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval>"
                    f"<tt:BitrateLimit>{int(stream.bitrate // 1000)}</tt:BitrateLimit></tt:RateControl>"
                    "<tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address></tt:Address>"
                    "<tt:Port>0</tt:Port><tt:TTL>0</tt:TTL><tt:AutoStart>false</tt:AutoStart></tt:Multicast>"
                    "<tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration>"
                )
        ptz = ""
        if camera.vendor.ptz_capabilities().any and self._access.decide(principal, "ptz.control", camera.id):
            ptz = (
                f'<tt:PTZConfiguration token="ptz-{cid}"><tt:Name>{cid}</tt:Name><tt:UseCount>1</tt:UseCount>'
                f"<tt:NodeToken>node-{cid}</tt:NodeToken></tt:PTZConfiguration>"
            )
        return (
            f'<{element} token="{cid}" fixed="true"><tt:Name>{text(camera.config.title)}</tt:Name>'
            f"{source}{encoder}{ptz}</{element}>"
        )

    async def _profiles(self, call: Call) -> tuple[str, str | None]:
        assert call.principal is not None
        visible = self._access.cameras_for(call.principal, ("live.view",))
        profiles = "".join(self._profile_xml(call.principal, c) for c in self._cameras if c.id in visible)
        return f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>", None

    async def _profile(self, call: Call) -> tuple[str, str | None]:
        assert call.principal is not None
        camera = self._camera(call, "live.view")
        profile = self._profile_xml(call.principal, camera, "trt:Profile")
        return f"<trt:GetProfileResponse>{profile}</trt:GetProfileResponse>", camera.id

    async def _stream_uri(self, call: Call) -> tuple[str, str | None]:
        camera = self._camera(call, "live.view")
        setup = call.soap.body.find(f"{{{soap.TRT}}}StreamSetup")
        stream = (setup.findtext(f"{{{soap.TT}}}Stream") or "RTP-Unicast").strip() if setup is not None else "RTP-Unicast"
        protocol = (setup.findtext(f"{{{soap.TT}}}Transport/{{{soap.TT}}}Protocol") or "RTSP").strip() if setup is not None else "RTSP"
        if stream != "RTP-Unicast":
            raise _blamed(invalid_arg(f"only RTP-Unicast streams are offered, not {stream}", "ter:InvalidStreamSetup"), camera=camera.id)
        if protocol not in ("RTSP", "UDP", "TCP"):
            raise _blamed(invalid_arg(f"transport {protocol} is not offered (RTSP over TCP or UDP only)", "ter:InvalidStreamSetup"), camera=camera.id)
        if not self._config.rtsp_out.enabled:
            raise _blamed(SoapFault(
                "env:Receiver", ("ter:Action",), "the RTSP re-stream is off on this gateway ([rtsp-out] enabled = false)",
            ), camera=camera.id)
        uri = _reachable(stream_uri(self._config, camera.id, "main"), call.host)
        return (
            f"<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{text(uri)}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
            "<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"
        ), camera.id

    async def _snapshot_uri(self, call: Call) -> tuple[str, str | None]:
        assert call.principal is not None
        camera = self._camera(call, "snapshot.view")
        lifetime = self._face.snapshot_uri_seconds
        token = self._sign_snapshot(call.principal.user_id, camera.id, self._clock() + lifetime)
        uri = f"{call.base}/onvif/snapshot/{quote(camera.id, safe='')}?token={token}"
        return (
            f"<trt:GetSnapshotUriResponse><trt:MediaUri><tt:Uri>{text(uri)}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>true</tt:InvalidAfterReboot>"
            f"<tt:Timeout>PT{int(lifetime)}S</tt:Timeout></trt:MediaUri></trt:GetSnapshotUriResponse>"
        ), camera.id

    # -- snapshots ---------------------------------------------------------------------
    def _sign_snapshot(self, user_id: int, camera: str, expires: float) -> str:
        payload = f"{user_id}|{camera}|{int(expires)}".encode()
        mac = hmac.new(self._snapshot_key, payload, hashlib.sha256).digest()[:16]
        return _b64(payload) + "." + _b64(mac)

    def _check_snapshot(self, token: str, camera: str) -> int:
        """The user id a snapshot token was issued to; raises if forged, expired or for another camera."""
        try:
            payload_b64, mac_b64 = token.split(".", 1)
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
        except ValueError:
            raise Forbidden("not a snapshot token of this gateway") from None
        expected = hmac.new(self._snapshot_key, payload, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(expected, mac):
            raise Forbidden("not a snapshot token of this gateway")
        user_id, token_camera, expires = payload.decode().split("|")
        if token_camera != camera:
            raise Forbidden("the snapshot token is for another camera")
        if float(expires) < self._clock():
            raise Forbidden("the snapshot token has expired; ask GetSnapshotUri again")
        return int(user_id)

    async def _snapshot(self, request: web.Request) -> web.Response:
        """A snapshot URI's picture. In a cluster the node that issued the URI checks the
        token and the account's rights (refusals audited there) and passes the request to
        the node running the camera, signed as a hop of the cluster; that node checks the
        account's rights again, takes the picture and audits it, for the client the hop
        names. A request with hop headers that do not verify is refused and audited."""
        camera_id = request.match_info["camera_id"]
        client = request.remote or ""
        user: str | None = None
        passed = any(h in request.headers for h in HOP_HEADERS)
        try:
            if passed:
                secret = self.cluster.secret if self.cluster is not None else None
                reason = await verify_hop(secret, request)
                if reason is not None:
                    return await self._refuse_forged(request, client, request.headers.get(NODE_HEADER, "")[:64], reason)
                client = request.headers[CLIENT_HEADER]
                try:
                    user_id = int(request.query.get("user", ""))
                except ValueError:
                    raise BadRequest("a passed snapshot request names its user") from None
            else:
                user_id = self._check_snapshot(request.query.get("token", ""), camera_id)
            current = await self._identity.subject_for(user_id)
            if current is None or current.disabled:
                raise Forbidden("the account that asked for this snapshot URI is disabled or gone")
            user = current.username
            principal = await self._principal(user)
            decision = self._access.decide(principal, "snapshot.view", camera_id)
            if not decision:
                raise Forbidden(decision.reason)
            camera = self._cameras.get(camera_id)
            owner = self.cluster.elsewhere(camera_id) if self.cluster is not None and not passed else None
            if owner is not None:
                if owner.onvif_url is None:
                    raise CameraUnavailable(f"camera {camera_id} runs on node {owner.node}, which has no ONVIF face")
                path = f"/onvif/snapshot/{quote(camera_id, safe='')}?user={user_id}"
                status, content_type, body = await self.cluster.get(owner.onvif_url, path, client)  # type: ignore[union-attr]
                # the node running the camera audited the picture (or its refusal)
                return web.Response(status=status, body=body, content_type=content_type, headers={"Cache-Control": "no-store"})
            keyframe = camera.latest_keyframe()
            if keyframe is None and camera.hub.info is not None:
                keyframe = await camera.hub.next_keyframe(SNAPSHOT_WAIT)
            if keyframe is None:
                raise CameraUnavailable(f"camera {camera.id} has no picture yet ({camera.status.state})")
            jpeg = await snapshot_jpeg(keyframe)
        except (GatewayError, SoapFault) as exc:
            reason = exc.message if isinstance(exc, GatewayError) else exc.reason
            status = exc.status if isinstance(exc, GatewayError) else 403
            await self._audit.record(
                "snapshot", outcome="refused" if status in (401, 403) else "failed", user=user, client=client,
                camera=camera_id, detail={"via": "onvif", "reason": reason},
            )
            return web.Response(status=status, text=reason + "\n", headers={"Cache-Control": "no-store"})
        detail = {"via": "onvif", **({"node": request.headers[NODE_HEADER]} if passed else {})}
        await self._audit.record(
            "snapshot", user=user, client=client, camera=camera_id, range_from=keyframe.wallclock, detail=detail,
        )
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    # -- PTZ service -------------------------------------------------------------------
    async def _command(
        self, call: Call, name: str, run: Callable[[CameraVendor], Awaitable[Any]], *, supported: Callable[[Any], bool],
        moving: bool | None = None, moves: bool = True, token: str | None = None,
    ) -> tuple[Camera, Any]:
        assert call.principal is not None
        camera = self._camera(call, "ptz.control", token=token)
        caps = camera.vendor.ptz_capabilities()
        try:
            result = await self._ptz.command(
                call.principal, camera.id, name, run, client=call.client, moving=moving, moves=moves, supported=supported(caps),
            )
        except GatewayError as exc:
            raise _blamed(_fault_of(exc), camera=camera.id) from None
        return camera, result

    async def _continuous_move(self, call: Call) -> tuple[str, str | None]:
        pan, tilt, zoom = _vector(call.soap.body, "Velocity", low_zoom=-1.0)
        pan, tilt, zoom = pan or 0.0, tilt or 0.0, zoom or 0.0
        still = pan == 0 and tilt == 0 and zoom == 0
        camera, _ = await self._command(
            call, "continuous moves", lambda v: v.ptz_stop() if still else v.ptz_continuous_move(pan, tilt, zoom),
            supported=lambda c: c.continuous, moving=not still, moves=not still,
        )
        return "<tptz:ContinuousMoveResponse/>", camera.id

    async def _stop(self, call: Call) -> tuple[str, str | None]:
        camera, _ = await self._command(
            call, "stop", lambda v: v.ptz_stop(), supported=lambda c: c.any, moving=False, moves=False,
        )
        return "<tptz:StopResponse/>", camera.id

    async def _absolute_move(self, call: Call) -> tuple[str, str | None]:
        pan, tilt, zoom = _vector(call.soap.body, "Position", low_zoom=0.0)
        if pan is None or tilt is None or zoom is None:
            current = await self._current_position(call)
            pan = current.pan if pan is None else pan
            tilt = current.tilt if tilt is None else tilt
            zoom = current.zoom if zoom is None else zoom
        camera, _ = await self._command(
            call, "absolute moves", lambda v: v.ptz_absolute_move(pan, tilt, zoom), supported=lambda c: c.absolute, moving=False,
        )
        return "<tptz:AbsoluteMoveResponse/>", camera.id

    async def _current_position(self, call: Call) -> Any:
        camera = self._camera(call, "ptz.control")
        status = await self._read_status(camera)
        if status is None:
            raise _blamed(invalid_arg("give pan, tilt and zoom: this camera cannot report where it points"), camera=camera.id)
        return status

    async def _relative_move(self, call: Call) -> tuple[str, str | None]:
        pan, tilt, zoom = _vector(call.soap.body, "Translation", low_zoom=-1.0)
        pan, tilt, zoom = pan or 0.0, tilt or 0.0, zoom or 0.0
        camera, _ = await self._command(
            call, "relative moves", lambda v: v.ptz_relative_move(pan, tilt, zoom), supported=lambda c: c.relative, moving=False,
        )
        return "<tptz:RelativeMoveResponse/>", camera.id

    async def _read_status(self, camera: Camera) -> Any:
        timeout = self._config.ptz.command_timeout_seconds
        try:
            return await asyncio.wait_for(camera.vendor.ptz_status(), timeout)
        except TimeoutError:
            raise _blamed(SoapFault("env:Receiver", ("ter:Action",), f"camera {camera.id}: no answer within {timeout:g}s"), camera=camera.id) from None
        except GatewayError as exc:
            raise _blamed(_fault_of(exc), camera=camera.id) from None

    async def _status(self, call: Call) -> tuple[str, str | None]:
        camera = self._camera(call, "ptz.control")
        if not camera.vendor.ptz_capabilities().any:
            raise _blamed(SoapFault("env:Sender", ("ter:InvalidArgVal", "ter:NoPTZProfile"), f"camera {camera.id} has no PTZ"), camera=camera.id)
        status = await self._read_status(camera)
        position = move = ""
        if status is not None:
            position = (
                f'<tt:Position><tt:PanTilt x="{status.pan:.6f}" y="{status.tilt:.6f}"/><tt:Zoom x="{status.zoom:.6f}"/></tt:Position>'
            )
            state = "MOVING" if status.moving else "IDLE"
            move = f"<tt:MoveStatus><tt:PanTilt>{state}</tt:PanTilt><tt:Zoom>{state}</tt:Zoom></tt:MoveStatus>"
        return (
            f"<tptz:GetStatusResponse><tptz:PTZStatus>{position}{move}<tt:UtcTime>{soap.xml_datetime(self._clock())}</tt:UtcTime>"
            "</tptz:PTZStatus></tptz:GetStatusResponse>"
        ), camera.id

    async def _presets(self, call: Call) -> tuple[str, str | None]:
        camera = self._camera(call, "ptz.control")
        presets = []
        if camera.vendor.ptz_capabilities().presets:
            timeout = self._config.ptz.command_timeout_seconds
            try:
                presets = await asyncio.wait_for(camera.vendor.ptz_presets(), timeout)
            except (TimeoutError, GatewayError) as exc:
                reason = exc.message if isinstance(exc, GatewayError) else f"no answer within {timeout:g}s"
                raise _blamed(SoapFault("env:Receiver", ("ter:Action",), f"camera {camera.id}: {reason}"), camera=camera.id) from None
        body = "".join(f'<tptz:Preset token="{text(p.token)}"><tt:Name>{text(p.name)}</tt:Name></tptz:Preset>' for p in presets)
        return f"<tptz:GetPresetsResponse>{body}</tptz:GetPresetsResponse>", camera.id

    async def _goto_preset(self, call: Call) -> tuple[str, str | None]:
        preset = _child_text(call.soap.body, "PresetToken")
        if not preset:
            raise invalid_arg("PresetToken is required", "ter:NoToken")
        camera, _ = await self._command(
            call, "presets", lambda v: v.ptz_goto_preset(preset), supported=lambda c: c.presets, moving=False,
        )
        return "<tptz:GotoPresetResponse/>", camera.id


# --------------------------------------------------------------------------------------
# helpers


def _blamed(fault: SoapFault, *, user: str | None = None, camera: str | None = None, refused: str | None = None) -> SoapFault:
    """Attach who and which camera a fault concerns, for its audit entry; ``refused`` is the
    policy's reason where the fault itself says less (an invisible camera is "no profile")."""
    if user is not None:
        fault.user = user  # type: ignore[attr-defined]
    if camera is not None:
        fault.camera = camera  # type: ignore[attr-defined]
    if refused is not None:
        fault.refused = refused  # type: ignore[attr-defined]
    return fault


def _fault_of(exc: GatewayError) -> SoapFault:
    if isinstance(exc, Conflict):  # the PTZ lock is held by someone else
        return SoapFault("env:Sender", ("ter:OperationProhibited",), exc.message)
    if isinstance(exc, Forbidden):
        return not_authorized(exc.message)
    if isinstance(exc, (BadRequest, NotFound)):
        return invalid_arg(exc.message)
    return SoapFault("env:Receiver", ("ter:Action",), exc.message)


def _child_text(element: Any, name: str) -> str | None:
    for child in element:
        if child.tag.rsplit("}", 1)[-1] == name:
            return (child.text or "").strip()
    return None


def _vector(body: Any, name: str, *, low_zoom: float) -> tuple[float | None, float | None, float | None]:
    """Pan, tilt and zoom of a PTZSpeed/PTZVector element (None where omitted), range-checked."""
    element = next((c for c in body if c.tag.rsplit("}", 1)[-1] == name), None)
    if element is None:
        raise invalid_arg(f"{name} is required")
    pan = tilt = zoom = None
    try:
        for child in element:
            local = child.tag.rsplit("}", 1)[-1]
            if local == "PanTilt":
                pan, tilt = float(child.get("x", "")), float(child.get("y", ""))
            elif local == "Zoom":
                zoom = float(child.get("x", ""))
    except ValueError:
        raise invalid_arg(f"{name}: x and y must be numbers") from None
    for axis, value, low in (("pan", pan, -1.0), ("tilt", tilt, -1.0), ("zoom", zoom, low_zoom)):
        if value is not None and not low <= value <= 1.0:
            raise invalid_arg(f"{name}: {axis} {value} is outside {low:g}..1 (generic spaces)")
    return pan, tilt, zoom


def _reachable(uri: str, host: str) -> str:
    """A re-stream URI whose host is a wildcard bind address gets the host the client used."""
    parts = urlsplit(uri)
    try:
        wildcard = ipaddress.ip_address((parts.hostname or "").strip("[]")).is_unspecified
    except ValueError:
        wildcard = False
    if not wildcard:
        return uri
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(data: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (ValueError, TypeError):
        raise ValueError("not base64") from None


# --------------------------------------------------------------------------------------
# composition


async def onvif_face_ctx(app: web.Application) -> AsyncIterator[None]:
    """The ONVIF face, started after the PTZ service and stopped before it (if enabled)."""
    config = app[CONFIG]
    if not config.onvif_server.enabled:
        yield
        return
    key = await credentials_key(app)
    async with OnvifFace(
        config, access=app[ACCESS], identity=app[IDENTITY], cameras=app[CAMERAS], ptz=app[PTZ], audit=app[AUDIT],
        db=app[DATABASE], key=key,
    ) as face:
        app[ONVIF_FACE] = face
        yield
