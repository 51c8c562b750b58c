"""An ONVIF device on loopback, for testing the ONVIF plugin without a camera.

It serves the device, media and PTZ services over SOAP 1.2, answers with responses
modelled on the examples of the ONVIF Core, Media and PTZ service specifications, and
checks every request's WS-UsernameToken the way a device must (WS-Security UsernameToken
Profile 1.0): the password digest ``Base64(SHA-1(nonce + created + password))``, the
``Created`` time within five minutes of the device's clock, and no nonce used twice.
A request that fails the check gets a SOAP fault ``ter:NotAuthorized`` (HTTP 400), as
ONVIF devices answer. ``GetSystemDateAndTime`` is open to anyone, as the spec requires.

Every request is recorded (service, operation, parsed body, whether it authenticated), so
tests assert what the plugin sent.

Hostile modes, for the plugin's distrust of what a device says: ``services_at`` names another
base URL (another host) for the media and PTZ services in GetCapabilities, ``stream_uri``
can be anything, ``pad_bytes`` inflates every answer, ``redirect_to`` answers every
authenticated request with a 307 redirect there. ``host`` binds the device to another
loopback address (127.0.0.2 plays "somewhere else").
"""

from __future__ import annotations

import base64
import hashlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.test_utils import TestServer

ENV = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
NAMESPACES = (
    'xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:ter="http://www.onvif.org/ver10/error" '
    'xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
    'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl"'
)
FRESHNESS = 300.0  #: seconds a Created time may differ from the device clock


@dataclass
class Request:
    service: str
    operation: str
    body: ET.Element  #: the operation element
    authenticated: bool
    username: str | None
    fault: str | None = None


@dataclass
class DeviceState:
    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    velocity: tuple[float, float, float] | None = None
    #: False: GetStatus answers ActionNotSupported (a device that cannot report its position).
    reports_status: bool = True
    presets: dict[str, tuple[str, tuple[float, float, float]]] = field(
        default_factory=lambda: {"1": ("Main entrance", (0.1, 0.0, 0.2)), "2": ("Parking", (-0.6, -0.2, 0.5))}
    )


class OnvifSimulator:
    """``async with OnvifSimulator(username, password, stream_uri=...) as sim: sim.port``"""

    def __init__(
        self, username: str, password: str, *, stream_uri: str | None = None,
        sub_stream_uri: str | None = None, clock_offset: float = 0.0, ptz: bool = True,
        sync_point: Callable[[str], None] | None = None, host: str = "127.0.0.1",
        services_at: str | None = None, pad_bytes: int = 0, redirect_to: str | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.host = host
        self.stream_uri = stream_uri or f"rtsp://{host}:554/Streaming/Channels/101"
        self.sub_stream_uri = sub_stream_uri or self.stream_uri.rsplit("/", 1)[0] + "/102"
        #: Base URL (``http://host:port``) GetCapabilities gives for media and PTZ; None: this device.
        self.services_at = services_at
        #: Bytes of XML comment added to every answer.
        self.pad_bytes = pad_bytes
        #: Answer every authenticated request with a redirect to this URL.
        self.redirect_to = redirect_to
        #: SetSynchronizationPoint: called with the profile token (the test makes its camera
        #: encode a keyframe); None: the device does not support the operation.
        self.sync_point = sync_point
        #: The device's clock runs this many seconds off ours (the plugin must follow it).
        self.clock_offset = clock_offset
        self.ptz = ptz
        self.requests: list[Request] = []
        self.state = DeviceState()
        self._nonces: set[bytes] = set()
        self._server: TestServer | None = None

    async def __aenter__(self) -> OnvifSimulator:
        app = web.Application()
        for service in ("device", "media", "ptz"):
            app.router.add_post(f"/onvif/{service}_service", self._handle)
        self._server = TestServer(app, host=self.host)
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.close()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.port is not None
        return self._server.port

    def xaddr(self, service: str) -> str:
        return f"http://{self.host}:{self.port}/onvif/{service}_service"

    def service_xaddr(self, service: str) -> str:
        """The address GetCapabilities gives for ``service`` (elsewhere in hostile mode)."""
        if self.services_at is not None and service != "device":
            return f"{self.services_at}/onvif/{service}_service"
        return self.xaddr(service)

    def operations(self, service: str | None = None) -> list[str]:
        return [r.operation for r in self.requests if service is None or r.service == service]

    def last(self, operation: str) -> Request:
        return next(r for r in reversed(self.requests) if r.operation == operation)

    # -- SOAP --------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        service = request.path.split("/")[-1].removesuffix("_service")
        if not request.content_type == "application/soap+xml":
            return web.Response(status=415, text="SOAP 1.2 expected")
        try:
            root = ET.fromstring(await request.read())
        except ET.ParseError:
            return self._fault("env:Sender", "ter:WellFormed", "not well-formed XML")
        body = root.find(f"{{{ENV}}}Body")
        if root.tag != f"{{{ENV}}}Envelope" or body is None or len(body) != 1:
            return self._fault("env:Sender", "ter:WellFormed", "not a SOAP 1.2 envelope with one body element")
        op_element = body[0]
        operation = op_element.tag.split("}")[-1]
        username, problem = self._check_security(root.find(f"{{{ENV}}}Header"))
        authenticated = problem is None
        record = Request(service, operation, op_element, authenticated, username)
        self.requests.append(record)
        if operation != "GetSystemDateAndTime" and problem is not None:
            record.fault = problem
            return self._fault("env:Sender", "ter:NotAuthorized", f"Sender not Authorized: {problem}")
        if self.redirect_to is not None and operation != "GetSystemDateAndTime":
            raise web.HTTPTemporaryRedirect(self.redirect_to)
        handler = getattr(self, f"_{service}_{operation}", None)
        if handler is None:
            record.fault = "ActionNotSupported"
            return self._fault("env:Receiver", "ter:ActionNotSupported", f"{operation} is not supported by the {service} service")
        try:
            answer = handler(op_element)
        except _Fault as fault:
            record.fault = fault.subcode
            return self._fault("env:Sender", fault.subcode, fault.reason)
        return self._answer(answer)

    def _check_security(self, header: ET.Element | None) -> tuple[str | None, str | None]:
        token = header.find(f"{{{WSSE}}}Security/{{{WSSE}}}UsernameToken") if header is not None else None
        if token is None:
            return None, "no UsernameToken"
        username = (token.findtext(f"{{{WSSE}}}Username") or "").strip()
        password = token.find(f"{{{WSSE}}}Password")
        nonce_text = token.findtext(f"{{{WSSE}}}Nonce")
        created = (token.findtext(f"{{{WSU}}}Created") or "").strip()
        if password is None or password.get("Type") != PASSWORD_DIGEST:
            return username, "password is not a PasswordDigest"
        if not nonce_text or not created:
            return username, "nonce or created missing"
        try:
            nonce = base64.b64decode(nonce_text, validate=True)
            when = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return username, "nonce or created malformed"
        if abs(when - (time.time() + self.clock_offset)) > FRESHNESS:
            return username, "created is not within five minutes of the device clock"
        if nonce in self._nonces:
            return username, "nonce replayed"
        self._nonces.add(nonce)
        expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + self.password.encode()).digest()).decode()
        if username != self.username or (password.text or "").strip() != expected:
            return username, "wrong username or password digest"
        return username, None

    def _answer(self, body: str) -> web.Response:
        padding = f"<!--{' ' * self.pad_bytes}-->" if self.pad_bytes else ""
        xml = f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {NAMESPACES}>{padding}<env:Body>{body}</env:Body></env:Envelope>'
        return web.Response(body=xml.encode(), content_type="application/soap+xml", charset="utf-8")

    def _fault(self, code: str, subcode: str, reason: str) -> web.Response:
        body = (
            f"<env:Fault><env:Code><env:Value>{code}</env:Value><env:Subcode><env:Value>{subcode}</env:Value>"
            f'</env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason></env:Fault>'
        )
        response = self._answer(body)
        response.set_status(400)
        return response

    # -- device service ------------------------------------------------------------------
    def _device_GetSystemDateAndTime(self, _: ET.Element) -> str:
        now = datetime.fromtimestamp(time.time() + self.clock_offset, UTC)
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>"
            "<tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
            f"<tt:UTCDateTime><tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>"
            f"<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date></tt:UTCDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _device_GetCapabilities(self, _: ET.Element) -> str:
        ptz = f"<tt:PTZ><tt:XAddr>{self.service_xaddr('ptz')}</tt:XAddr></tt:PTZ>" if self.ptz else ""
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{self.service_xaddr('device')}</tt:XAddr><tt:Network><tt:IPFilter>false</tt:IPFilter>"
            "<tt:ZeroConfiguration>false</tt:ZeroConfiguration><tt:IPVersion6>false</tt:IPVersion6>"
            "<tt:DynDNS>false</tt:DynDNS></tt:Network><tt:System><tt:DiscoveryResolve>true</tt:DiscoveryResolve>"
            "<tt:DiscoveryBye>true</tt:DiscoveryBye><tt:RemoteDiscovery>false</tt:RemoteDiscovery>"
            "<tt:SystemBackup>false</tt:SystemBackup><tt:SystemLogging>true</tt:SystemLogging>"
            "<tt:FirmwareUpgrade>true</tt:FirmwareUpgrade><tt:SupportedVersions><tt:Major>2</tt:Major>"
            "<tt:Minor>40</tt:Minor></tt:SupportedVersions></tt:System></tt:Device>"
            f"<tt:Media><tt:XAddr>{self.service_xaddr('media')}</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
            f"</tt:StreamingCapabilities></tt:Media>{ptz}"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    # -- media service -------------------------------------------------------------------
    def _profile(self, token: str, name: str, width: int, height: int) -> str:
        ptz = (
            '<tt:PTZConfiguration token="PTZToken"><tt:Name>PTZ</tt:Name><tt:UseCount>2</tt:UseCount>'
            "<tt:NodeToken>PTZNode</tt:NodeToken>"
            "<tt:DefaultContinuousPanTiltVelocitySpace>http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace"
            "</tt:DefaultContinuousPanTiltVelocitySpace>"
            "<tt:DefaultPTZTimeout>PT5S</tt:DefaultPTZTimeout></tt:PTZConfiguration>"
            if self.ptz else ""
        )
        return (
            f'<trt:Profiles fixed="true" token="{token}"><tt:Name>{name}</tt:Name>'
            '<tt:VideoSourceConfiguration token="VideoSourceToken"><tt:Name>VideoSource</tt:Name><tt:UseCount>2</tt:UseCount>'
            '<tt:SourceToken>VideoSource_1</tt:SourceToken><tt:Bounds height="1080" width="1920" y="0" x="0"/>'
            "</tt:VideoSourceConfiguration>"
            f'<tt:VideoEncoderConfiguration token="VideoEncoder_{token}"><tt:Name>{name}</tt:Name><tt:UseCount>1</tt:UseCount>'
            f"<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>{width}</tt:Width><tt:Height>{height}</tt:Height>"
            "</tt:Resolution><tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit>"
            "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit></tt:RateControl>"
            "<tt:H264><tt:GovLength>50</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264>"
            "<tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration>"
            f"{ptz}</trt:Profiles>"
        )

    def _media_GetProfiles(self, _: ET.Element) -> str:
        return (
            "<trt:GetProfilesResponse>"
            + self._profile("Profile_1", "mainStream", 1920, 1080)
            + self._profile("Profile_2", "subStream", 640, 360)
            + "</trt:GetProfilesResponse>"
        )

    def _media_GetStreamUri(self, op: ET.Element) -> str:
        token = _child_text(op, "ProfileToken")
        setup = op.find("{*}StreamSetup")
        if setup is None or _child_text(setup, "Stream") != "RTP-Unicast" or setup.findtext("{*}Transport/{*}Protocol") != "RTSP":
            raise _Fault("ter:InvalidArgVal", "StreamSetup must ask for RTP-Unicast over RTSP")
        uri = {"Profile_1": self.stream_uri, "Profile_2": self.sub_stream_uri}.get(token or "")
        if uri is None:
            raise _Fault("ter:NoProfile", f"no profile {token!r}")
        return (
            f"<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{uri}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
            "<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"
        )

    def _media_SetSynchronizationPoint(self, op: ET.Element) -> str:
        token = _child_text(op, "ProfileToken")
        if self.sync_point is None:
            raise _Fault("ter:ActionNotSupported", "SetSynchronizationPoint is not supported")
        if token not in ("Profile_1", "Profile_2"):
            raise _Fault("ter:NoProfile", f"no profile {token!r}")
        self.sync_point(token)
        return "<trt:SetSynchronizationPointResponse/>"

    # -- PTZ service ---------------------------------------------------------------------
    def _ptz_profile(self, op: ET.Element) -> None:
        if _child_text(op, "ProfileToken") not in ("Profile_1", "Profile_2"):
            raise _Fault("ter:NoProfile", "unknown profile token")

    def _ptz_ContinuousMove(self, op: ET.Element) -> str:
        self._ptz_profile(op)
        pan, tilt, zoom = _vector(op, "Velocity", -1.0, 1.0, -1.0)
        self.state.velocity = (pan, tilt, zoom)
        return "<tptz:ContinuousMoveResponse/>"

    def _ptz_Stop(self, op: ET.Element) -> str:
        self._ptz_profile(op)
        self.state.velocity = None
        return "<tptz:StopResponse/>"

    def _ptz_AbsoluteMove(self, op: ET.Element) -> str:
        self._ptz_profile(op)
        self.state.pan, self.state.tilt, self.state.zoom = _vector(op, "Position", -1.0, 1.0, 0.0)
        return "<tptz:AbsoluteMoveResponse/>"

    def _ptz_RelativeMove(self, op: ET.Element) -> str:
        self._ptz_profile(op)
        pan, tilt, zoom = _vector(op, "Translation", -2.0, 2.0, -1.0)
        self.state.pan += pan
        self.state.tilt += tilt
        self.state.zoom += zoom
        return "<tptz:RelativeMoveResponse/>"

    def _ptz_GetPresets(self, op: ET.Element) -> str:
        self._ptz_profile(op)
        presets = "".join(
            f'<tptz:Preset token="{token}"><tt:Name>{name}</tt:Name><tt:PTZPosition>'
            f'<tt:PanTilt x="{p}" y="{t}" space="http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"/>'
            f'<tt:Zoom x="{z}" space="http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"/>'
            "</tt:PTZPosition></tptz:Preset>"
            for token, (name, (p, t, z)) in self.state.presets.items()
        )
        return f"<tptz:GetPresetsResponse>{presets}</tptz:GetPresetsResponse>"

    def _ptz_GotoPreset(self, op: ET.Element) -> str:
        self._ptz_profile(op)
        preset = self.state.presets.get(_child_text(op, "PresetToken") or "")
        if preset is None:
            raise _Fault("ter:NoToken", "no such preset")
        self.state.pan, self.state.tilt, self.state.zoom = preset[1]
        return "<tptz:GotoPresetResponse/>"

    def _ptz_SetPreset(self, op: ET.Element) -> str:
        self._ptz_profile(op)
        name = _child_text(op, "PresetName") or "Preset"
        token = str(len(self.state.presets) + 1)
        self.state.presets[token] = (name, (self.state.pan, self.state.tilt, self.state.zoom))
        return f"<tptz:SetPresetResponse><tptz:PresetToken>{token}</tptz:PresetToken></tptz:SetPresetResponse>"

    def _ptz_GetStatus(self, op: ET.Element) -> str:
        self._ptz_profile(op)
        if not self.state.reports_status:
            raise _Fault("ter:ActionNotSupported", "GetStatus is not supported")
        s = self.state
        moving = "MOVING" if s.velocity else "IDLE"
        return (
            "<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>"
            f'<tt:PanTilt x="{s.pan}" y="{s.tilt}" space="http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"/>'
            f'<tt:Zoom x="{s.zoom}" space="http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"/>'
            f"</tt:Position><tt:MoveStatus><tt:PanTilt>{moving}</tt:PanTilt><tt:Zoom>IDLE</tt:Zoom></tt:MoveStatus>"
            "<tt:UtcTime>2026-12-06T10:00:00Z</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>"
        )

    def _ptz_GotoHomePosition(self, op: ET.Element) -> str:
        self._ptz_profile(op)
        self.state.pan = self.state.tilt = self.state.zoom = 0.0
        return "<tptz:GotoHomePositionResponse/>"


class _Fault(Exception):
    def __init__(self, subcode: str, reason: str) -> None:
        super().__init__(reason)
        self.subcode = subcode
        self.reason = reason


def _child_text(element: ET.Element, name: str) -> str | None:
    text = element.findtext(f"{{*}}{name}")
    return text.strip() if text is not None else None


def _vector(op: ET.Element, name: str, low: float, high: float, zoom_low: float) -> tuple[float, float, float]:
    """Read ``<name><tt:PanTilt x y/><tt:Zoom x/></name>``; a value out of range is a fault."""
    vector = op.find(f"{{*}}{name}")
    if vector is None:
        raise _Fault("ter:InvalidArgVal", f"{name} missing")
    pan_tilt, zoom = vector.find("{*}PanTilt"), vector.find("{*}Zoom")
    try:
        pan = float(pan_tilt.get("x", "0")) if pan_tilt is not None else 0.0
        tilt = float(pan_tilt.get("y", "0")) if pan_tilt is not None else 0.0
        z = float(zoom.get("x", "0")) if zoom is not None else 0.0
    except ValueError:
        raise _Fault("ter:InvalidArgVal", f"{name} values must be numbers") from None
    if not (low <= pan <= high and low <= tilt <= high and zoom_low <= z <= high):
        raise _Fault("ter:InvalidPosition" if name != "Velocity" else "ter:InvalidVelocity", f"{name} out of range")
    return pan, tilt, z
