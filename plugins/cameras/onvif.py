"""ONVIF cameras: stream URLs and PTZ discovered from the device, so only host and credentials
are needed:

    [camera.options]
    host = "10.20.0.9"
    username = "citygate"
    password-env = "CAM09_PASSWORD"
    # port = 80, profile = "<name or token>" (default: the first), sub-profile = ...

At start (and again on each stream-URL request until it succeeds) the plugin asks the device
for its clock (GetSystemDateAndTime, so WS-Security timestamps match the device's clock),
its service addresses (GetCapabilities), its media profiles (GetProfiles), and then the
RTSP URI of the chosen profile (GetStreamUri). PTZ uses ContinuousMove, Stop, AbsoluteMove,
RelativeMove, GetPresets, GotoPreset, SetPreset and GotoHomePosition on the profile's PTZ
configuration. When a new stream connection has no keyframe yet, SetSynchronizationPoint
asks the device for one, so nobody waits out the camera's GOP. Every request carries a
WS-UsernameToken with a password digest: ``Base64(SHA-1(nonce + created + password))``.

The device's answers are not trusted further than its configured address: every service
address (XAddr) must be on the configured host, so the digest of the camera password is never
sent anywhere else (HTTP redirects are not followed either); a stream URI must be ``rtsp://``
or ``rtsps://`` on the configured host or one listed in ``stream-hosts`` (the password goes
into that URL); a SOAP answer larger than ``MAX_RESPONSE_BYTES`` or with a DTD is refused.

Why not ``onvif-zeep-async``: it ships the WSDLs (no downloads at run time), but brings zeep,
lxml, httpx and requests for the dozen operations used here, and parses the WSDLs when a
camera starts. These few operations are plain SOAP 1.2 over the aiohttp the gateway
already uses.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import aiohttp
import msgspec
from msgspec import Meta

from gateway.plugin_api import (
    CameraUnavailable,
    CameraVendor,
    DeviceInfo,
    NotFound,
    PtzCapabilities,
    PtzPreset,
    PtzStatus,
    StreamProfile,
    hookimpl,
)

from .generic_rtsp import with_credentials

logger = logging.getLogger(__name__)

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
}
#: Largest SOAP answer read from a device; a GetProfiles of a 16-channel recorder is ~200 KiB.
MAX_RESPONSE_BYTES = 1024 * 1024
#: Schemes a stream URI from the device may have.
STREAM_SCHEMES = ("rtsp", "rtsps")
PASSWORD_DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
BASE64_BINARY = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"


class OnvifOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    host: Annotated[str, Meta(min_length=1)]
    port: Annotated[int, Meta(ge=1, le=65535)] = 80
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    #: Media profile (name or token) for the main stream and PTZ; default: the first.
    profile: str | None = None
    #: Media profile for the sub stream; default: the second profile, if any.
    sub_profile: str | None = None
    https: bool = False
    device_path: str = "/onvif/device_service"
    #: Hosts besides ``host`` that the device's stream URIs may name (a recorder or a
    #: streaming proxy in front of the camera); the camera's credentials are sent there.
    stream_hosts: tuple[str, ...] = ()
    #: Seconds per SOAP request.
    timeout: Annotated[float, Meta(gt=0, le=60)] = 5.0


class OnvifError(CameraUnavailable):
    """The device failed a request (unreachable, a SOAP fault, an unexpected answer)."""


class OnvifAuthError(OnvifError):
    """The device refused the credentials."""


class OnvifNotSupported(OnvifError):
    """The device does not implement the operation (SOAP fault ter:ActionNotSupported)."""


class OnvifUntrusted(OnvifError):
    """The device named an address we will not use: a service or stream on another host,
    a stream that is not RTSP, an answer too large."""


@dataclass(frozen=True, slots=True)
class MediaProfile:
    token: str
    name: str
    ptz_configuration: str | None


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken profile 1.0: Base64(SHA-1(nonce + created + password))."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()


def _created(offset: float) -> str:
    now = datetime.fromtimestamp(time.time() + offset, UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def security_header(username: str, password: str, offset: float = 0.0) -> str:
    nonce = os.urandom(16)
    created = _created(offset)
    return (
        f'<wsse:Security env:mustUnderstand="true"><wsse:UsernameToken>'
        f"<wsse:Username>{escape(username)}</wsse:Username>"
        f'<wsse:Password Type="{PASSWORD_DIGEST}">{password_digest(nonce, created, password)}</wsse:Password>'
        f'<wsse:Nonce EncodingType="{BASE64_BINARY}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


def envelope(body: str, header: str = "") -> bytes:
    xmlns = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items())
    head = f"<env:Header>{header}</env:Header>" if header else ""
    return f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {xmlns}>{head}<env:Body>{body}</env:Body></env:Envelope>'.encode()


def _text(element: ET.Element | None, path: str) -> str | None:
    found = element.find(path) if element is not None else None
    return found.text.strip() if found is not None and found.text else None


def _vector(tag: str, pan: float, tilt: float, zoom: float) -> str:
    return f'<tptz:{tag}><tt:PanTilt x="{pan:.4f}" y="{tilt:.4f}"/><tt:Zoom x="{zoom:.4f}"/></tptz:{tag}>'


class OnvifCamera(CameraVendor):
    Options = OnvifOptions
    options: OnvifOptions

    @staticmethod
    def id() -> str:
        return "onvif"

    def __init__(self, camera: Any, options: OnvifOptions) -> None:
        super().__init__(camera, options)
        scheme = "https" if options.https else "http"
        self._device_url = f"{scheme}://{options.host}:{options.port}{options.device_path}"
        self._http: aiohttp.ClientSession | None = None
        self._discovery = asyncio.Lock()
        self._clock_offset = 0.0
        self._media_url: str | None = None
        self._ptz_url: str | None = None
        self._main: MediaProfile | None = None
        self._sub: MediaProfile | None = None
        self._no_sync_point = False  #: the device answered SetSynchronizationPoint with ActionNotSupported

    async def __aenter__(self) -> OnvifCamera:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.options.timeout))
        try:
            await self.discover()
        except OnvifError as exc:  # the source retries through stream_url(); say why now
            logger.warning("ONVIF discovery failed: %s", exc.message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- SOAP --------------------------------------------------------------------------
    async def call(self, url: str, action_ns: str, operation: str, body: str, *, auth: bool = True) -> ET.Element:
        """POST one SOAP request; return the response element (first child of Body)."""
        if self._http is None:
            raise OnvifError(f"camera {self.camera.id}: ONVIF client not started")
        header = ""
        if auth and self.options.username:
            header = security_header(self.options.username, self.options.password or "", self._clock_offset)
        action = f"{NS[action_ns]}/{operation}"
        headers = {"Content-Type": f'application/soap+xml; charset=utf-8; action="{action}"'}
        data = envelope(f"<{action_ns}:{operation}>{body}</{action_ns}:{operation}>", header)
        self._check_service_url(url, operation)
        try:
            # never follow a redirect: it would carry the password digest to wherever it points
            async with self._http.post(url, data=data, headers=headers, allow_redirects=False) as resp:
                status, payload = resp.status, await self._read_capped(resp, operation)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OnvifError(f"camera {self.camera.id}: ONVIF device at {url} unreachable: {exc or type(exc).__name__}") from None
        if 300 <= status < 400:
            raise OnvifUntrusted(
                f"camera {self.camera.id}: {operation}: the device redirected to "
                f"{resp.headers.get('Location', '?')!r}; redirects are not followed"
            )
        if b"<!DOCTYPE" in payload:  # entity declarations need one: no entity expansion, ever
            raise OnvifUntrusted(f"camera {self.camera.id}: {operation}: the answer declares a DTD; refused")
        try:
            root = ET.fromstring(payload)
        except ET.ParseError:
            raise OnvifError(f"camera {self.camera.id}: {operation}: HTTP {status}, not a SOAP answer") from None
        fault = root.find("{*}Body/{*}Fault")
        if fault is not None:
            self._raise_fault(operation, status, fault)
        if status == 401:
            raise OnvifAuthError(f"camera {self.camera.id}: the ONVIF device refused the credentials for {operation} (HTTP 401)")
        response = root.find("{*}Body/*")
        if status != 200 or response is None:
            raise OnvifError(f"camera {self.camera.id}: {operation}: unexpected answer (HTTP {status})")
        return response

    async def _read_capped(self, resp: aiohttp.ClientResponse, operation: str) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > MAX_RESPONSE_BYTES:
            raise OnvifUntrusted(
                f"camera {self.camera.id}: {operation}: answer of {declared} bytes, more than {MAX_RESPONSE_BYTES}"
            )
        payload = bytearray()
        async for chunk in resp.content.iter_chunked(65536):
            payload += chunk
            if len(payload) > MAX_RESPONSE_BYTES:
                raise OnvifUntrusted(f"camera {self.camera.id}: {operation}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        return bytes(payload)

    def _same_host(self, host: str | None) -> bool:
        return host is not None and host.lower().strip("[]") == self.options.host.lower().strip("[]")

    def _check_service_url(self, url: str, operation: str) -> None:
        """Only the configured host gets requests (and the digest of the password)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not self._same_host(parts.hostname):
            logger.warning(
                "camera %s: refusing to send %s to %r: not the configured host %s",
                self.camera.id, operation, url, self.options.host,
            )
            raise OnvifUntrusted(
                f"camera {self.camera.id}: the device gave the service address {url!r}, which is not on the "
                f"configured host {self.options.host}; refusing to send it the camera's credentials"
            )

    def _service_address(self, caps: ET.Element, service: str) -> str | None:
        """A service's XAddr from GetCapabilities, refused unless on the configured host."""
        url = _text(caps, f".//{{*}}{service}/{{*}}XAddr")
        if url is not None:
            self._check_service_url(url, f"the {service} service")
        return url

    def _check_stream_uri(self, uri: str) -> None:
        try:
            parts = urlsplit(uri)
            host = parts.hostname
        except ValueError:
            parts, host = None, None
        allowed = (self.options.host, *self.options.stream_hosts)
        if parts is None or parts.scheme.lower() not in STREAM_SCHEMES:
            reason = "only rtsp:// and rtsps:// streams are opened"
        elif host is None or not any(host.lower().strip("[]") == a.lower().strip("[]") for a in allowed):
            reason = f"its host is not {' or '.join(allowed)} (list other hosts in stream-hosts)"
        else:
            return
        shown = re.sub(r"//[^/@]*@", "//", uri, count=1)  # never log credentials
        logger.warning("camera %s: refusing the stream URI %r: %s", self.camera.id, shown, reason)
        raise OnvifUntrusted(f"camera {self.camera.id}: the device gave the stream URI {shown!r}; refused: {reason}")

    def _raise_fault(self, operation: str, status: int, fault: ET.Element) -> None:
        codes = [(e.text or "").strip() for e in fault.iterfind(".//{*}Value")]
        reason = _text(fault, ".//{*}Reason/{*}Text") or "no reason given"
        if any(c.endswith(("NotAuthorized", "FailedAuthentication")) for c in codes) or status == 401:
            raise OnvifAuthError(
                f"camera {self.camera.id}: the ONVIF device refused the credentials of user "
                f"{self.options.username!r} for {operation} ({reason}); check username and password"
            )
        error = OnvifNotSupported if any(c.endswith("ActionNotSupported") for c in codes) else OnvifError
        raise error(f"camera {self.camera.id}: {operation} failed: {reason} ({', '.join(codes)})")

    # -- discovery ---------------------------------------------------------------------
    async def discover(self) -> None:
        """Clock, service addresses and profiles; once, shared by concurrent callers."""
        async with self._discovery:
            if self._main is not None:
                return
            await self._sync_clock()
            caps = await self.call(self._device_url, "tds", "GetCapabilities", "<tds:Category>All</tds:Category>")
            self._media_url = self._service_address(caps, "Media") or self._device_url
            self._ptz_url = self._service_address(caps, "PTZ")
            answer = await self.call(self._media_url, "trt", "GetProfiles", "")
            profiles = [
                MediaProfile(p.get("token", ""), _text(p, "{*}Name") or p.get("token", ""), _ptz_token(p))
                for p in answer.iterfind("{*}Profiles")
            ]
            if not profiles:
                raise OnvifError(f"camera {self.camera.id}: the ONVIF device has no media profiles")
            self._sub = self._pick(profiles, self.options.sub_profile, profiles[1] if len(profiles) > 1 else None)
            self._main = self._pick(profiles, self.options.profile, profiles[0])
            logger.info(
                "camera %s: ONVIF profile %r%s, PTZ %s", self.camera.id, self._main.name,
                f", sub {self._sub.name!r}" if self._sub else "", "yes" if self._has_ptz else "no",
            )

    def _pick(self, profiles: list[MediaProfile], wanted: str | None, default: MediaProfile | None) -> MediaProfile | None:
        if wanted is None:
            return default
        for p in profiles:
            if wanted in (p.token, p.name):
                return p
        names = ", ".join(f"{p.name} ({p.token})" for p in profiles)
        raise OnvifError(f"camera {self.camera.id}: no ONVIF profile {wanted!r} (the device has: {names})")

    async def _sync_clock(self) -> None:
        """Digest timestamps must be in the device's time: learn its clock (no auth needed)."""
        try:
            answer = await self.call(self._device_url, "tds", "GetSystemDateAndTime", "", auth=False)
        except OnvifAuthError:
            return
        utc = answer.find(".//{*}UTCDateTime")
        if utc is None:
            return
        try:
            parts = [int(_text(utc, f"{{*}}{a}/{{*}}{b}") or "") for a, b in (
                ("Date", "Year"), ("Date", "Month"), ("Date", "Day"), ("Time", "Hour"), ("Time", "Minute"), ("Time", "Second"),
            )]
            device = datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]
        except ValueError:
            return
        self._clock_offset = device - time.time()
        if abs(self._clock_offset) > 5:
            logger.info("camera %s: device clock is %.0fs off; timestamps follow the device", self.camera.id, self._clock_offset)

    @property
    def _has_ptz(self) -> bool:
        return self._ptz_url is not None and self._main is not None and self._main.ptz_configuration is not None

    async def _profile(self) -> MediaProfile:
        await self.discover()
        assert self._main is not None
        return self._main

    async def device_info(self) -> DeviceInfo:
        """GetDeviceInformation: manufacturer, model, firmware, serial and hardware id."""
        await self._profile()  # clock and service addresses first
        answer = await self.call(self._device_url, "tds", "GetDeviceInformation", "")
        return DeviceInfo(**{
            field: (_text(answer, f"{{*}}{tag}") or "")[:200] for field, tag in (
                ("manufacturer", "Manufacturer"), ("model", "Model"), ("firmware", "FirmwareVersion"),
                ("serial", "SerialNumber"), ("hardware", "HardwareId"),
            )
        })

    # -- streams -----------------------------------------------------------------------
    def profiles(self) -> Sequence[StreamProfile]:
        return (StreamProfile.MAIN, StreamProfile.SUB) if self._sub else (StreamProfile.MAIN,)

    async def stream_url(self, profile: StreamProfile = StreamProfile.MAIN) -> str:
        main = await self._profile()
        chosen = self._sub if profile == StreamProfile.SUB else main
        if chosen is None:
            raise NotFound(f"camera {self.camera.id}: the ONVIF device has no {profile} stream")
        assert self._media_url is not None
        answer = await self.call(
            self._media_url, "trt", "GetStreamUri",
            "<trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol>"
            f"</tt:Transport></trt:StreamSetup><trt:ProfileToken>{escape(chosen.token)}</trt:ProfileToken>",
        )
        uri = _text(answer, ".//{*}MediaUri/{*}Uri")
        if not uri:
            raise OnvifError(f"camera {self.camera.id}: GetStreamUri gave no URI for profile {chosen.name!r}")
        self._check_stream_uri(uri)
        return with_credentials(uri, self.options.username, self.options.password)

    async def request_keyframe(self, profile: StreamProfile = StreamProfile.MAIN) -> bool:
        """SetSynchronizationPoint (Media service): the device inserts a keyframe in the profile's
        streams. A device that does not support it is asked once, never again."""
        if self._no_sync_point:
            return False
        main = await self._profile()
        chosen = self._sub if profile == StreamProfile.SUB else main
        if chosen is None:
            return False
        assert self._media_url is not None
        try:
            await self.call(
                self._media_url, "trt", "SetSynchronizationPoint", f"<trt:ProfileToken>{escape(chosen.token)}</trt:ProfileToken>"
            )
        except OnvifNotSupported:
            self._no_sync_point = True
            logger.info("camera %s: the device does not support SetSynchronizationPoint; new streams wait for "
                        "its next keyframe", self.camera.id)
            return False
        return True

    # -- PTZ ---------------------------------------------------------------------------
    def ptz_capabilities(self) -> PtzCapabilities:
        if not self._has_ptz:
            return PtzCapabilities()
        return PtzCapabilities(continuous=True, absolute=True, relative=True, presets=True, home=True)

    async def _ptz(self, operation: str, body: str = "") -> ET.Element:
        profile = await self._profile()
        if not self._has_ptz:
            raise NotImplementedError(f"camera {self.camera.id} has no ONVIF PTZ")
        assert self._ptz_url is not None
        token = f"<tptz:ProfileToken>{escape(profile.token)}</tptz:ProfileToken>"
        return await self.call(self._ptz_url, "tptz", operation, token + body)

    async def ptz_continuous_move(self, pan: float, tilt: float, zoom: float) -> None:
        await self._ptz("ContinuousMove", _vector("Velocity", pan, tilt, zoom))

    async def ptz_stop(self) -> None:
        await self._ptz("Stop", "<tptz:PanTilt>true</tptz:PanTilt><tptz:Zoom>true</tptz:Zoom>")

    async def ptz_absolute_move(self, pan: float, tilt: float, zoom: float) -> None:
        await self._ptz("AbsoluteMove", _vector("Position", pan, tilt, zoom))

    async def ptz_relative_move(self, pan: float, tilt: float, zoom: float) -> None:
        await self._ptz("RelativeMove", _vector("Translation", pan, tilt, zoom))

    async def ptz_presets(self) -> list[PtzPreset]:
        answer = await self._ptz("GetPresets")
        return [
            PtzPreset(p.get("token", ""), _text(p, "{*}Name") or p.get("token", ""))
            for p in answer.iterfind("{*}Preset")
        ]

    async def ptz_goto_preset(self, token: str, speed: float | None = None) -> None:
        body = f"<tptz:PresetToken>{escape(token)}</tptz:PresetToken>"
        if speed is not None:  # generic speed space: 0..1 of the device's maximum
            body += _vector("Speed", speed, speed, speed)
        await self._ptz("GotoPreset", body)

    async def ptz_set_preset(self, name: str) -> PtzPreset:
        answer = await self._ptz("SetPreset", f"<tptz:PresetName>{escape(name)}</tptz:PresetName>")
        token = _text(answer, "{*}PresetToken")
        if not token:
            raise OnvifError(f"camera {self.camera.id}: SetPreset gave no preset token")
        return PtzPreset(token, name)

    async def ptz_home(self) -> None:
        await self._ptz("GotoHomePosition")

    async def ptz_status(self) -> PtzStatus | None:
        """GetStatus: the position in the generic spaces and whether pan/tilt or zoom move.
        ``None`` when the device does not support it or reports no position."""
        await self._profile()  # discovers the device first if that failed at start
        if not self._has_ptz:
            return None
        try:
            answer = await self._ptz("GetStatus")
        except OnvifNotSupported:
            return None
        position = answer.find(".//{*}Position")
        pan_tilt = position.find("{*}PanTilt") if position is not None else None
        if pan_tilt is None:
            return None
        zoom = position.find("{*}Zoom") if position is not None else None
        try:
            pan, tilt = float(pan_tilt.get("x", "")), float(pan_tilt.get("y", ""))
            zoom_x = float(zoom.get("x", "0")) if zoom is not None else 0.0
        except ValueError:
            raise OnvifError(f"camera {self.camera.id}: GetStatus gave a position that is not a number") from None
        moves = answer.find(".//{*}MoveStatus")
        states = [(e.text or "").strip().upper() for e in moves] if moves is not None else []
        # Anything but IDLE (MOVING, UNKNOWN, or no word at all) may be a move: fail closed.
        moving = not states or any(state != "IDLE" for state in states)
        return PtzStatus(pan=pan, tilt=tilt, zoom=zoom_x, moving=moving)


def _ptz_token(profile: ET.Element) -> str | None:
    config = profile.find("{*}PTZConfiguration")
    return config.get("token", "") if config is not None else None


@hookimpl(trylast=True)
def gateway_register_camera_vendors(register: Callable[[type[CameraVendor]], None]) -> None:
    """Register the ONVIF camera vendor."""
    register(OnvifCamera)
