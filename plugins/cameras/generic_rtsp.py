"""Any camera that serves RTSP: the URL (and optional sub-stream URL) come from config.

Credentials may be given separately from the URL, and the password from the environment:

    [camera.options]
    url = "rtsp://10.20.0.7/Streaming/Channels/101"
    sub-url = "rtsp://10.20.0.7/Streaming/Channels/102"
    username = "citygate"
    password-env = "CAM7_PASSWORD"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

from gateway.plugin_api import CameraVendor, StreamProfile, hookimpl


class GenericRtspOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    url: str
    sub_url: str | None = None
    username: str | None = None
    password: str | None = None
    password_env: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("url", self.url), ("sub-url", self.sub_url)):
            if value is None:
                continue
            parts = urlsplit(value)
            if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
                raise ValueError(f"{name} must be an rtsp:// or rtsps:// URL with a host, got {value!r}")


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """Put credentials into ``url`` unless it already has some."""
    parts = urlsplit(url)
    if not username or parts.username:
        return url
    auth = quote(username, safe="") + (":" + quote(password, safe="") if password else "")
    netloc = f"{auth}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class GenericRtspCamera(CameraVendor):
    Options = GenericRtspOptions
    options: GenericRtspOptions

    @staticmethod
    def id() -> str:
        return "generic_rtsp"

    def profiles(self) -> Sequence[StreamProfile]:
        return (StreamProfile.MAIN, StreamProfile.SUB) if self.options.sub_url else (StreamProfile.MAIN,)

    async def stream_url(self, profile: StreamProfile = StreamProfile.MAIN) -> str:
        o = self.options
        url = o.sub_url if profile == StreamProfile.SUB and o.sub_url else o.url
        return with_credentials(url, o.username, o.password)


@hookimpl(trylast=True)
def gateway_register_camera_vendors(register: Callable[[type[CameraVendor]], None]) -> None:
    register(GenericRtspCamera)
