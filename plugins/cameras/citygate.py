"""Federation: a camera of another Citygate (a district's), pulled over its RTSP re-stream.

    [[camera]]
    id = "d1-market"
    vendor = "citygate"
    area = "district-1"
    [camera.options]
    base-url = "https://citygate.district1.example"
    token-env = "DISTRICT1_TOKEN"   # an API token of a service account there (role central-system)
    camera = "market"               # the camera's id on the remote gateway
    node = "central"                # how the remote audit log names this gateway

The remote gateway decides what the token may see and do, audits every request, and for
requests made on behalf of a user here (PTZ) records ``central:alice via central``: this
vendor sends ``X-Citygate-On-Behalf-Of: alice@central``, which the remote honours from
accounts whose role has ``federation.relay``. The stream is the remote's *public* hub, so
its privacy masks are already applied; its sub stream is offered only when the remote
serves one. ``citygate cameras discover --url URL --token-env VAR`` prints
``[[camera]]`` tables for every remote camera the token may see.

The RTSP pull authenticates with the same token (``?token=``), so the URL handed to the
ingest carries a secret: it stays in this process and is never logged by Citygate.
The remote's recordings are forwarded too: ``/api/cameras/<id>/archive/recordings…`` on this
gateway reads them from the district in the name of the user (``open_archive``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import msgspec

from gateway.plugin_api import (
    ACTING_USER,
    ArchiveAnswer,
    BadRequest,
    CameraUnavailable,
    CameraVendor,
    Forbidden,
    GatewayError,
    NotFound,
    PtzCapabilities,
    PtzPreset,
    StreamProfile,
    Unauthorized,
    hookimpl,
)

logger = logging.getLogger(__name__)

ON_BEHALF_HEADER = "X-Citygate-On-Behalf-Of"
TIMEOUT = 10.0


class CitygateOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    base_url: str
    #: The remote camera's id.
    camera: str
    token: str | None = None
    token_env: str | None = None
    #: This gateway's name in the remote audit log; default: the host name.
    node: str = ""

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base-url must be an http:// or https:// URL with a host, got {self.base_url!r}")
        if self.token is None and self.token_env is None:
            raise ValueError("give token-env (or token) with an API token of a service account on the remote gateway")


def _raise_for(status: int, text: str, what: str) -> None:
    if status < 400:
        return
    reason = f"remote gateway: {what}: {status} {text.strip()[:200]}"
    for code, cls in ((401, Unauthorized), (403, Forbidden), (404, NotFound), (400, BadRequest)):
        if status == code:
            raise cls(reason)
    raise CameraUnavailable(reason)


class RemoteGateway:
    """The remote gateway's API, called with the service account's token."""

    def __init__(self, base_url: str, token: str, node: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.node = node or socket.gethostname()
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RemoteGateway:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT), headers={"Authorization": f"Bearer {self.token}"}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def request(self, method: str, path: str, json: Any = None) -> Any:
        if self._http is None:
            raise CameraUnavailable("remote gateway: not connected")
        headers = {}
        user = ACTING_USER.get()
        if user:
            headers[ON_BEHALF_HEADER] = f"{user}@{self.node}"
        try:
            async with self._http.request(method, self.base_url + path, json=json, headers=headers) as resp:
                text = await resp.text()
                _raise_for(resp.status, text, f"{method} {path}")
                return msgspec.json.decode(text) if text and resp.content_type == "application/json" else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CameraUnavailable(f"remote gateway {self.base_url}: {exc!r}") from None

    async def stream(self, path: str, query: Sequence[tuple[str, str]], headers: dict[str, str]) -> ArchiveAnswer:
        """A GET whose body is passed on as it arrives (recordings); the caller drains it."""
        if self._http is None:
            raise CameraUnavailable("remote gateway: not connected")
        user = ACTING_USER.get()
        if user:
            headers = {**headers, ON_BEHALF_HEADER: f"{user}@{self.node}"}
        try:
            resp = await self._http.get(
                self.base_url + path, params=list(query), headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT, sock_read=TIMEOUT * 3),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CameraUnavailable(f"remote gateway {self.base_url}: {exc!r}") from None
        if resp.status >= 400:
            text = await resp.text()
            resp.release()
            _raise_for(resp.status, text, f"GET {path}")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    yield chunk
            finally:
                resp.release()

        passed = {k: resp.headers[k] for k in ("Content-Range", "Content-Length", "X-Mask-Applied", "X-Mask-Version") if k in resp.headers}
        return ArchiveAnswer(resp.status, resp.headers.get("Content-Type", "application/octet-stream"), body(), passed)

    async def cameras(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/api/cameras")


class CitygateCamera(CameraVendor):
    Options = CitygateOptions
    options: CitygateOptions

    @staticmethod
    def id() -> str:
        return "citygate"

    def __init__(self, camera: Any, options: CitygateOptions) -> None:
        super().__init__(camera, options)
        self.remote = RemoteGateway(options.base_url, options.token or "", options.node)
        self._path = f"/api/cameras/{quote(options.camera, safe='')}"
        self._has_sub = False
        self._ptz = PtzCapabilities()

    async def __aenter__(self) -> CitygateCamera:
        await self.remote.__aenter__()
        try:
            await self._describe()
        except GatewayError as exc:  # the district may be down now; the ingest retries
            logger.warning("camera %s: %s", self.camera.id, exc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.remote.__aexit__()

    async def _describe(self) -> dict[str, Any]:
        view = await self.remote.request("GET", self._path)
        p = view.get("ptz") or {}
        self._ptz = PtzCapabilities(**{k: bool(p.get(k)) for k in ("continuous", "absolute", "relative", "presets", "home")})
        self._has_sub = "sub" in (view.get("profiles") or [])
        return view

    def profiles(self) -> Sequence[StreamProfile]:
        return (StreamProfile.MAIN, StreamProfile.SUB) if self._has_sub else (StreamProfile.MAIN,)

    async def stream_url(self, profile: StreamProfile = StreamProfile.MAIN) -> str:
        urls = await self.remote.request("GET", self._path + "/rtsp")
        self._has_sub = bool(urls.get("sub"))
        url = urls["sub"] if profile == StreamProfile.SUB and urls.get("sub") else urls["main"]
        return url + ("&" if "?" in url else "?") + urlencode({"token": self.remote.token})

    def ptz_capabilities(self) -> PtzCapabilities:
        return self._ptz

    async def ptz_continuous_move(self, pan: float, tilt: float, zoom: float) -> None:
        await self.remote.request("POST", self._path + "/ptz/move", {"pan": pan, "tilt": tilt, "zoom": zoom})

    async def ptz_stop(self) -> None:
        await self.remote.request("POST", self._path + "/ptz/stop")

    async def ptz_absolute_move(self, pan: float, tilt: float, zoom: float) -> None:
        await self.remote.request("POST", self._path + "/ptz/absolute", {"pan": pan, "tilt": tilt, "zoom": zoom})

    async def ptz_relative_move(self, pan: float, tilt: float, zoom: float) -> None:
        await self.remote.request("POST", self._path + "/ptz/relative", {"pan": pan, "tilt": tilt, "zoom": zoom})

    async def ptz_home(self) -> None:
        await self.remote.request("POST", self._path + "/ptz/home")

    async def ptz_presets(self) -> list[PtzPreset]:
        body = await self.remote.request("GET", self._path + "/ptz/presets")
        items = body.get("presets", body) if isinstance(body, dict) else body
        return [PtzPreset(token=p["token"], name=p["name"]) for p in items or []]

    async def ptz_goto_preset(self, token: str) -> None:
        await self.remote.request("POST", self._path + f"/ptz/presets/{quote(token, safe='')}/go")

    async def open_archive(self, path: str, query: Sequence[tuple[str, str]], range_header: str | None) -> ArchiveAnswer:
        """The district's recordings of the camera, read with the service account's token in
        the name of the user here (its audit says ``central:alice via <node>``, its caps and
        privacy masks apply)."""
        return await self.remote.stream(self._path + "/" + path, query, {"Range": range_header} if range_header else {})


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cameras_toml(cameras: list[dict[str, Any]], *, base_url: str, token_env: str, prefix: str = "", node: str = "") -> str:
    """``[[camera]]`` tables for the remote cameras (name, area, tags; state as a comment)."""
    out = []
    for cam in cameras:
        lines = [
            f"# {cam.get('name') or cam['id']}: {cam.get('state', 'unknown')} on {base_url}",
            "[[camera]]",
            f"id = {_toml_string(prefix + cam['id'])}",
            'vendor = "citygate"',
            f"area = {_toml_string(cam.get('area') or 'remote')}",
            f"name = {_toml_string(cam.get('name') or cam['id'])}",
            "tags = [" + ", ".join(_toml_string(t) for t in cam.get("tags") or []) + "]",
        ]
        for key in ("owner", "address"):
            if cam.get(key):
                lines.append(f"{key} = {_toml_string(cam[key])}")
        if cam.get("latitude") is not None and cam.get("longitude") is not None:
            lines.append(f"location = [{float(cam['latitude'])!r}, {float(cam['longitude'])!r}]")
        lines += [
            "[camera.options]",
            f"base-url = {_toml_string(base_url)}",
            f"token-env = {_toml_string(token_env)}",
            f"camera = {_toml_string(cam['id'])}",
        ]
        if node:
            lines.append(f"node = {_toml_string(node)}")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


async def discover(base_url: str, token: str) -> list[dict[str, Any]]:
    """The remote cameras the token may see, as the remote's camera list gives them, with
    owner, address and position from its inventory where the account may read it."""
    async with RemoteGateway(base_url, token) as remote:
        cameras = await remote.cameras()
        try:
            register = {row["id"]: row for row in await remote.request("GET", "/api/cameras/inventory")}
        except GatewayError:  # no cameras.inventory for this account: names, areas and tags only
            register = {}
    return [{**{k: register.get(c["id"], {}).get(k) for k in ("owner", "address", "latitude", "longitude")}, **c} for c in cameras]


@hookimpl
def gateway_register_camera_vendors(register: Callable[[type[CameraVendor]], None]) -> None:
    register(CitygateCamera)
