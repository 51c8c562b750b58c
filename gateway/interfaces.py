"""What each kind of plugin provides. Plugins subclass (or duck-type) these.

Every registered class has a static ``id()``, the name config files use to choose it
(``vendor = "onvif"``, ``backend = "s3"``, ``filter = "blur"``). A class may declare an
``Options`` msgspec Struct; the config loader validates the plugin's config table against
it, so a mistake is reported with the file and key like any other config error.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgspec

if TYPE_CHECKING:
    import numpy as np

    from gateway.config import CameraConfig
    from gateway.scene import Optics


class PluginOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """Base of a plugin's ``Options``: kebab-case keys, unknown keys are errors, frozen.

    An option ``<name>-env`` (declared next to ``<name>``) names an environment variable
    that supplies ``<name>``, so secrets stay out of committed files."""


class NoOptions(PluginOptions):
    """Options of a plugin that takes none."""


# --- cameras -----------------------------------------------------------------------------


class StreamProfile(enum.StrEnum):
    MAIN = "main"  #: full resolution; recording and single view
    SUB = "sub"  #: low resolution; grid tiles


@dataclass(frozen=True, slots=True)
class PtzCapabilities:
    continuous: bool = False
    absolute: bool = False
    relative: bool = False
    presets: bool = False
    home: bool = False

    @property
    def any(self) -> bool:
        return self.continuous or self.absolute or self.relative or self.presets or self.home


@dataclass(frozen=True, slots=True)
class PtzStatus:
    """Where a PTZ camera points now, in ONVIF's generic spaces (pan, tilt -1..1; zoom 0..1)."""

    pan: float
    tilt: float
    zoom: float
    #: The camera reports it is moving (or still on its way to a commanded position).
    moving: bool = False


@dataclass(frozen=True, slots=True)
class ArchiveAnswer:
    """One answer of a remote archive: status, the headers worth passing on, the body."""

    status: int
    content_type: str
    body: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)  #: Content-Range, Content-Length, X-Mask-*


@dataclass(frozen=True, slots=True)
class PtzPreset:
    token: str
    name: str


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a device says it is (ONVIF GetDeviceInformation); empty where it does not say."""

    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    serial: str = ""
    hardware: str = ""


#: The user a vendor call is made for (set by the PTZ service around each command), for
#: vendors that forward it: the ``citygate`` vendor names them to the remote gateway.
ACTING_USER: ContextVar[str | None] = ContextVar("citygate_acting_user", default=None)


class CameraVendor:
    """A camera vendor: turns a camera's config into stream URLs and drives its PTZ.

    One instance per configured camera, used as an async context manager for the
    camera's lifetime (a vendor that must start something, such as the demo camera's
    RTSP server, does it in ``__aenter__``).
    """

    Options: ClassVar[type[msgspec.Struct]] = NoOptions

    @staticmethod
    def id() -> str:
        raise NotImplementedError

    def __init__(self, camera: CameraConfig, options: Any) -> None:
        self.camera = camera
        self.options = options

    async def __aenter__(self) -> CameraVendor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def profiles(self) -> Sequence[StreamProfile]:
        """The stream profiles this camera offers."""
        return (StreamProfile.MAIN,)

    async def stream_url(self, profile: StreamProfile = StreamProfile.MAIN) -> str:
        """The RTSP URL (credentials included) to pull ``profile`` from."""
        raise NotImplementedError

    async def request_keyframe(self, profile: StreamProfile = StreamProfile.MAIN) -> bool:
        """Ask the camera to send a keyframe on ``profile`` now (ONVIF SetSynchronizationPoint).

        The gateway calls it when a fresh RTSP connection is receiving pictures but nothing is
        decodable yet, so viewers and the recorder need not wait out the camera's GOP (often 2 s,
        10 s or more with "smart" codecs). True if the camera took the request; False if this
        vendor or device cannot. It may raise on a failed request; the gateway then just waits."""
        return False

    async def device_info(self) -> DeviceInfo | None:
        """Manufacturer, model, firmware and serial number where the device reports them
        (for the camera inventory); ``None``: this vendor cannot ask."""
        return None

    # PTZ: a vendor without PTZ keeps these defaults.
    def ptz_capabilities(self) -> PtzCapabilities:
        return PtzCapabilities()

    async def ptz_continuous_move(self, pan: float, tilt: float, zoom: float) -> None:
        raise NotImplementedError

    async def ptz_stop(self) -> None:
        raise NotImplementedError

    async def ptz_absolute_move(self, pan: float, tilt: float, zoom: float) -> None:
        raise NotImplementedError

    async def ptz_relative_move(self, pan: float, tilt: float, zoom: float) -> None:
        raise NotImplementedError

    async def ptz_presets(self) -> list[PtzPreset]:
        return []

    async def ptz_goto_preset(self, token: str, speed: float | None = None) -> None:
        """Go to a preset; ``speed`` 0..1 of the camera's full speed (None: its default).
        A vendor written before ``speed`` existed may leave it out: tours then go at the
        camera's default speed."""
        raise NotImplementedError

    async def ptz_set_preset(self, name: str) -> PtzPreset:
        raise NotImplementedError

    async def ptz_home(self) -> None:
        raise NotImplementedError

    async def open_archive(self, path: str, query: Sequence[tuple[str, str]], range_header: str | None) -> ArchiveAnswer:
        """A camera of another system whose recordings stay there (a federated Citygate):
        answer a GET of ``recordings``, ``recordings/playlist.m3u8`` or
        ``recordings/segments/<id>.mp4`` from that system's archive. The default: no archive."""
        raise NotImplementedError

    async def ptz_status(self) -> PtzStatus | None:
        """The camera's position now (ONVIF GetStatus). ``None``: this vendor or device cannot
        report it; privacy masks on such a camera stay in picture space, and PTZ is refused
        to everyone below ``mask.edit`` while it has masks (moving would uncover them)."""
        return None

    def ptz_optics(self) -> Optics | None:
        """How the camera's generic positions map to directions and fields of view, where the
        vendor knows it; ``None`` takes the camera's ``ptz-optics`` config."""
        return None


# --- storage -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StorageUsage:
    used_bytes: int
    free_bytes: int | None  #: None where the backend has no notion of free space (S3)


class StorageBackend:
    """Where recorded segments live. An async context manager for the gateway's lifetime."""

    Options: ClassVar[type[msgspec.Struct]] = NoOptions

    @staticmethod
    def id() -> str:
        raise NotImplementedError

    def __init__(self, options: Any, *, data_dir: str) -> None:
        self.options = options
        self.data_dir = data_dir

    async def __aenter__(self) -> StorageBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def write_segment(self, key: str, data: bytes) -> None:
        """Store a complete segment durably; return only once it is safely stored."""
        raise NotImplementedError

    async def open_segment(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes ``[start, end)`` of a stored segment."""
        raise NotImplementedError

    async def delete(self, key: str) -> None:
        """Delete a segment; deleting a missing key is not an error (sweeps are idempotent)."""
        raise NotImplementedError

    async def usage(self) -> StorageUsage:
        raise NotImplementedError

    async def probe(self) -> None:
        """Check the storage can be used now (exists, writable with these credentials): raise
        ``StorageFailed`` naming the option for what an operator must fix; any other error is an
        outage that may pass. The default checks nothing."""
        return None


# --- masking -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaskShape:
    """A polygon in normalised coordinates (0..1, origin top left).

    ``drawn_at`` (pan, tilt, zoom in generic spaces) anchors the polygon to the scene of a
    PTZ camera: ``points`` are where it was drawn in the picture while the camera stood
    there, and the mask stage projects it into every picture from the camera's position.
    Without it the polygon stays at the same place in the picture. ``grow`` widens the
    masked area by that many pixels all round (projection and rounding margin).
    """

    points: tuple[tuple[float, float], ...]
    filter: str = "fill"
    options: dict[str, Any] = field(default_factory=dict)
    drawn_at: tuple[float, float, float] | None = None
    grow: int = 0


class MaskFilter:
    """Turns a decoded frame plus mask shapes into a masked frame. Runs in a worker thread.

    ``apply`` receives the frame's planes as numpy arrays (YUV420: Y, U, V) and a boolean
    pixel mask per plane, and must modify the planes in place, vectorised. ``options`` is
    the mask's ``options`` table validated against ``Options`` (an instance of it); a
    mask naming options the filter does not declare is refused in config and in the API.
    """

    Options: ClassVar[type[msgspec.Struct]] = NoOptions

    @staticmethod
    def id() -> str:
        raise NotImplementedError

    def apply(self, planes: list[np.ndarray], masks: list[np.ndarray], options: Any) -> None:
        raise NotImplementedError


# --- export ------------------------------------------------------------------------------


class ExportFormat:
    """Turns the recorded segments of a time range into a package (a file).

    ``Options`` are the settings a request may choose (watermark, anonymisation...): checked
    when the request is filed, merged over ``[evidence.format-options.<id>]`` defaults,
    stored with the request (the approver approves exactly these) and handed to
    ``produce`` as ``job.options``.
    """

    @staticmethod
    def id() -> str:
        raise NotImplementedError

    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    #: The MIME type and file name suffix of the produced package.
    media_type: ClassVar[str] = "application/octet-stream"
    suffix: ClassVar[str] = ".bin"
    #: What the web client shows in its format list.
    title: ClassVar[str] = ""
    #: The most cameras one request of this format may name (None: the configured limit).
    max_cameras: ClassVar[int | None] = None

    async def produce(self, job: Any, output_path: str) -> None:
        raise NotImplementedError


# --- sign-in through a directory ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirectoryAccount:
    """A person as a directory (LDAP, Active Directory) has them now.

    ``role`` is None when none of the person's groups is mapped to a Citygate role: they
    exist and may have the right password, but have no access to Citygate.
    """

    username: str
    role: str | None
    areas: frozenset[str] = frozenset()
    all_areas: bool = False
    display_name: str = ""
    groups: tuple[str, ...] = ()  #: the mapped groups the person is in (for the audit log)


#: The gateway's route the provider sends the browser back to after a redirect sign-in
#: (``{provider}`` is the provider's ``id()``); a provider's configured callback URL ends so.
REDIRECT_CALLBACK_PATH = "/api/session/redirect/{provider}/callback"


@dataclass(frozen=True, slots=True)
class RedirectStart:
    """A redirect sign-in begun: where to send the browser, and what to keep until it returns."""

    url: str  #: the provider's sign-in page (an OpenID authorization request)
    #: Opaque to the core, kept in a short-lived HttpOnly cookie of this browser only and
    #: handed back to ``redirect_finish``. The provider makes it tamper-proof and keeps its
    #: secrets (PKCE verifier, nonce) unreadable (the OIDC plugin encrypts it).
    pending: str


@dataclass(frozen=True, slots=True)
class RedirectSignIn:
    """A redirect sign-in the provider vouched for."""

    account: DirectoryAccount
    #: Opaque, kept with the browser's session (HttpOnly cookie) and handed to
    #: ``logout_url`` at sign-out (the OIDC plugin keeps the ID token for ``id_token_hint``).
    logout_state: str = ""


class AuthProvider:
    """Signs people in against a directory; configured by ``[auth.<id>]`` (its ``Options``).

    Two ways to sign in, chosen by ``sign_in``:

    ``"password"`` (LDAP, Active Directory): the core asks each configured provider, in the
    order of ``[auth]``, to check a password sign-in of a name that has no local password.

    ``"redirect"`` (OpenID Connect): the sign-in page offers "Sign in with <title()>"; the
    core sends the browser to ``redirect_start().url``, and when the provider sends it back
    to ``REDIRECT_CALLBACK_PATH`` hands the query and the kept ``pending`` to
    ``redirect_finish``, which checks them and answers who signed in or raises
    ``gateway.errors.Unauthorized`` naming the reason (audited). At sign-out the core ends
    the session and sends the browser to ``logout_url`` (the provider's own sign-out).

    Either way the core then creates or updates the local account from the answer (role
    and areas follow the directory). Every ``recheck_seconds`` it asks ``lookup`` about the
    accounts with open sessions; an account the directory no longer has, or that lost every
    mapped group, loses its sessions. A provider that cannot look people up (OIDC: only the
    person's own sign-in tells) sets ``recheck_seconds = None``; its accounts' role and areas
    are updated at each sign-in. Blocking clients run in a thread (``asyncio.to_thread``). A
    directory that cannot be reached raises ``gateway.errors.Unavailable``.

    The core enters the provider (``async with``) before serving and leaves it at shutdown:
    the place to open HTTP clients and fetch what the provider publishes (OIDC discovery).
    """

    @staticmethod
    def id() -> str:
        raise NotImplementedError

    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    #: How people sign in through it: ``"password"`` and/or ``"redirect"``.
    sign_in: ClassVar[frozenset[str]] = frozenset({"password"})
    #: How often accounts with open sessions are looked up again (their role, areas, and
    #: whether the directory still has them enabled); None: never (see above).
    recheck_seconds: float | None = 60.0

    def __init__(self, options: Any) -> None:
        self.options = options

    async def __aenter__(self) -> AuthProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def title(self) -> str:
        """The provider's name on the sign-in page ("Sign in with <title>")."""
        return self.id()

    def problems(self, roles: frozenset[str]) -> list[tuple[str, str]]:
        """Mistakes in the options that need the roles of ``roles.toml``: (key, reason)."""
        return []

    async def login(self, username: str, password: str) -> DirectoryAccount | None:
        """The account if the directory accepts this password; None for a wrong password or
        a name the directory does not have (one answer for both)."""
        raise NotImplementedError

    async def lookup(self, username: str) -> DirectoryAccount | None:
        """The account as the directory has it now; None if removed or disabled there."""
        raise NotImplementedError

    async def redirect_start(self) -> RedirectStart:
        """Begin a redirect sign-in (``sign_in`` has ``"redirect"``)."""
        raise NotImplementedError

    async def redirect_finish(self, params: Mapping[str, str], pending: str) -> RedirectSignIn:
        """The browser came back with the query ``params``; ``pending`` is what
        ``redirect_start`` kept ("" if this browser kept nothing). Raises ``Unauthorized``
        with the reason when the answer is refused."""
        raise NotImplementedError

    async def logout_url(self, logout_state: str) -> str | None:
        """Where to send the browser after its session ended (the provider's own sign-out),
        or None when the provider has none."""
        return None


# --- events ------------------------------------------------------------------------------


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """Something that happened, for event sinks and the events channel."""

    kind: str  #: e.g. "camera.online", "camera.offline", "recording.alarm", "push.created"
    at: float  #: wall clock
    camera: str | None = None
    user: str | None = None
    detail: dict[str, Any] = {}


# --- analytics ---------------------------------------------------------------------------


class AnalyzerFrame:
    """One decoded picture of a camera's *public* hub (privacy masks applied), for analyzers.

    Shared by every analyzer of the camera, each in its own thread: treat the arrays as
    read-only. ``image`` (BGR, ``(height, width, 3)`` uint8, OpenCV's order) and ``gray``
    (the luma plane, ``(height, width)`` uint8) are converted on first use and kept.
    """

    __slots__ = ("camera", "pts", "wallclock", "width", "height", "_convert", "_cache", "_lock")

    def __init__(
        self, camera: str, pts: int, wallclock: float, width: int, height: int, convert: Callable[[str], np.ndarray]
    ) -> None:
        self.camera = camera
        self.pts = pts  #: 90 kHz, increasing over the camera's whole life
        self.wallclock = wallclock  #: when the gateway received the picture (``time.time()``)
        self.width = width
        self.height = height
        self._convert = convert
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _get(self, kind: str) -> np.ndarray:
        with self._lock:
            found = self._cache.get(kind)
            if found is None:
                found = self._cache[kind] = self._convert(kind)
            return found

    @property
    def image(self) -> np.ndarray:
        return self._get("bgr")

    @property
    def gray(self) -> np.ndarray:
        return self._get("gray")


class Observation(msgspec.Struct, kw_only=True, frozen=True):
    """What an analyzer saw: a vehicle counted, a plate read, a rule broken.

    An analyzer fills ``kind``, ``at`` (usually its frame's ``wallclock``), ``confidence``,
    ``payload`` and perhaps ``crop``; the runner fills ``camera`` and ``analyzer``. Kinds
    the core knows: ``"count"`` (payload ``line``, ``lane``, ``direction``, optional
    ``count``; stored as per-minute counts) and ``"wrong-direction"``; any other kind is
    stored and published as it is. Every observation is published on the event bus as
    ``analytics.<kind>`` (without the crop's bytes).
    """

    kind: str
    at: float
    camera: str = ""
    analyzer: str = ""
    confidence: float = 1.0
    payload: dict[str, Any] = {}
    #: A JPEG picture of what was seen (a plate, a vehicle), if the analyzer keeps one.
    crop: bytes | None = None


class Analyzer:
    """Watches one camera's pictures and emits observations. Registered with
    ``gateway_register_analyzers``; configured per camera by ``[[camera.analytics]]``
    (``analyzer = "<id>"``, ``fps``, and the keys of its ``Options``).

    One instance per configured entry, with its own state (tracks, counters), called from
    one worker thread at a time: ``analyze`` may block and use numpy/OpenCV freely. It
    gets pictures at ``fps`` (the entry's ``fps``, else ``default_fps``); while it is busy,
    newer pictures replace the one waiting, so a slow analyzer sees fewer pictures and
    never holds up the camera. An analyzer that raises, or takes longer than
    ``max_seconds`` on one picture, is counted as crashed and replaced by a fresh instance
    after a back-off; the camera, its recording and its other analyzers carry on.
    """

    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    #: Pictures per second when the config does not say.
    default_fps: ClassVar[float] = 5.0
    #: The camera stream it reads when the config does not say: "sub" for an analyzer that
    #: needs no detail (a quarter of the decoding), "main" for one that reads small things.
    default_stream: ClassVar[Literal["main", "sub"]] = "main"
    #: Longest time one ``analyze`` call may take before the analyzer is deemed hung.
    max_seconds: ClassVar[float] = 10.0
    #: What the web client shows.
    title: ClassVar[str] = ""

    @staticmethod
    def id() -> str:
        raise NotImplementedError

    def __init__(self, camera: str, options: Any) -> None:
        self.camera = camera
        self.options = options

    def analyze(self, frame: AnalyzerFrame) -> Sequence[Observation]:
        """Look at one picture; return what was seen in it (often nothing)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the analyzer holds (called from its worker thread); idempotent."""
        return None


class EventSink:
    """Receives every event (audited actions and notices) and passes it on: a file, a
    dispatch system, syslog. Configured by ``[events.sinks.<id>]`` in ``gateway.toml``,
    validated against its ``Options``; one instance per configured sink, used as an async
    context manager while the gateway runs (``gateway`` is the plugin facade).

    ``handle`` must not block: a sink that writes to disk or the network queues the event
    and returns, and does the work in a task or a thread.
    """

    Options: ClassVar[type[msgspec.Struct]] = NoOptions

    @staticmethod
    def id() -> str:
        raise NotImplementedError

    def __init__(self, options: Any, gateway: Any) -> None:
        self.options = options
        self.gateway = gateway

    async def __aenter__(self) -> EventSink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def handle(self, event: Event) -> Any:
        """Take one event; may return an awaitable (awaited in a task of the event bus)."""
        raise NotImplementedError
