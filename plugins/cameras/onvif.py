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
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from xml.sax.saxutils import escape

import aiohttp
import msgspec
from msgspec import Meta

from gateway import hookimpl
from gateway.errors import CameraUnavailable, NotFound
from gateway.interfaces import CameraVendor, PtzCapabilities, PtzPreset, StreamProfile

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
    #: Seconds per SOAP request.
    timeout: Annotated[float, Meta(gt=0, le=60)] = 5.0


class OnvifError(CameraUnavailable):
    """The device failed a request (unreachable, a SOAP fault, an unexpected answer)."""


class OnvifAuthError(OnvifError):
    """The device refused the credentials."""


class OnvifNotSupported(OnvifError):
    """The device does not implement the operation (SOAP fault ter:ActionNotSupported)."""


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
        try:
            async with self._http.post(url, data=data, headers=headers) as resp:
                status, payload = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OnvifError(f"camera {self.camera.id}: ONVIF device at {url} unreachable: {exc or type(exc).__name__}") from None
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
            self._media_url = _text(caps, ".//{*}Media/{*}XAddr") or self._device_url
            self._ptz_url = _text(caps, ".//{*}PTZ/{*}XAddr")
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

    async def ptz_goto_preset(self, token: str) -> None:
        await self._ptz("GotoPreset", f"<tptz:PresetToken>{escape(token)}</tptz:PresetToken>")

    async def ptz_set_preset(self, name: str) -> PtzPreset:
        answer = await self._ptz("SetPreset", f"<tptz:PresetName>{escape(name)}</tptz:PresetName>")
        token = _text(answer, "{*}PresetToken")
        if not token:
            raise OnvifError(f"camera {self.camera.id}: SetPreset gave no preset token")
        return PtzPreset(token, name)

    async def ptz_home(self) -> None:
        await self._ptz("GotoHomePosition")


def _ptz_token(profile: ET.Element) -> str | None:
    config = profile.find("{*}PTZConfiguration")
    return config.get("token", "") if config is not None else None


@hookimpl(trylast=True)
def gateway_register_camera_vendors(register: Callable[[type[CameraVendor]], None]) -> None:
    """Register the ONVIF camera vendor."""
    register(OnvifCamera)
