"""Configuration: TOML files in one directory, decoded once into frozen msgspec Structs.

``conf/gateway.toml``  server, ingest, live view, storage
``conf/cameras.toml``  one ``[[camera]]`` table per camera

Every mistake is reported as ``file: key.path: reason``; all mistakes found are reported
together. Plugin sections (a camera's ``options``, the storage ``options``) are validated
against the plugin's own ``Options`` Struct. Any option ``<name>-env`` names an
environment variable that supplies ``<name>``, so secrets stay out of committed files.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.errors import ConfigError, ConfigErrors
from gateway.polygons import polygon_problem

GATEWAY_FILE = "gateway.toml"
CAMERAS_FILE = "cameras.toml"

Port = Annotated[int, Meta(ge=0, le=65535)]
Seconds = Annotated[float, Meta(gt=0, le=3600)]
_CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Base(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """Every config table: unknown keys are errors, keys are kebab-case."""


class ServerConfig(Base):
    bind: str = "127.0.0.1"
    port: Port = 8080
    #: Where the database, recordings (local storage) and keys live; relative to the conf dir.
    data_dir: str = "../data"
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Reverse proxies (addresses or networks, "10.0.0.0/8") whose X-Forwarded-For is believed;
    #: from anyone else the client address is the TCP peer's.
    trusted_proxies: tuple[str, ...] = ()
    #: The scheme browsers use to reach the gateway; "https" behind a TLS-terminating proxy
    #: makes the session cookie Secure (``__Host-`` name) and sends HSTS. Unset: https when
    #: the gateway itself serves TLS.
    public_scheme: Literal["http", "https"] | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls-cert and tls-key must be given together")
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted-proxies: {entry!r} is not an IP address or network") from None


class IngestConfig(Base):
    """How cameras are pulled. Defaults suit LAN cameras; raise timeouts for slow links."""

    open_timeout: Seconds = 5.0
    read_timeout: Seconds = 5.0
    backoff_initial: Seconds = 0.5
    backoff_max: Seconds = 30.0
    #: Which RTSP client pulls cameras: "native" (gateway.rtsp.client, completes each picture
    #: on the RTP marker bit: one frame less latency) or "ffmpeg" (PyAV). Per camera:
    #: ``ingest-client`` in cameras.toml.
    client: Literal["ffmpeg", "native"] = "native"
    #: RTP transport of the native client: "tcp" (interleaved) or "udp"; FFmpeg uses TCP.
    transport: Literal["tcp", "udp"] = "tcp"


class LiveConfig(Base):
    max_viewers_per_camera: Annotated[int, Meta(ge=1)] = 50
    max_viewers: Annotated[int, Meta(ge=1)] = 500
    #: STUN/TURN servers handed to aiortc; empty means host candidates only.
    ice_servers: tuple[IceServer, ...] = ()
    #: Restrict host ICE candidates to these interface addresses (empty = all).
    ice_interfaces: tuple[str, ...] = ()
    #: A camera's sub stream (for grid tiles) is pulled from its first viewer on and stopped
    #: this long after its last viewer left.
    sub_stream_linger: Annotated[float, Meta(ge=0, le=3600)] = 30.0
    #: How long a viewer of a sub stream that is not running yet waits for its first picture.
    sub_stream_timeout: Annotated[float, Meta(gt=0, le=60)] = 8.0
    #: WebRTC sessions one user may hold at once (connected or not); a 16-tile wall needs 16.
    max_sessions_per_user: Annotated[int, Meta(ge=1)] = 32
    #: ... of which this many may still be waiting for ICE/DTLS to complete.
    max_pending_per_user: Annotated[int, Meta(ge=1)] = 20
    #: WHEP offers one user may send per minute (a sliding window).
    max_offers_per_minute: Annotated[int, Meta(ge=1)] = 120
    #: Largest SDP offer accepted, in bytes, and most m-lines in it.
    max_offer_bytes: Annotated[int, Meta(ge=1024, le=1024 * 1024)] = 32768
    max_offer_m_lines: Annotated[int, Meta(ge=1, le=64)] = 4
    #: A session whose ICE/DTLS has not completed this long after the answer is closed.
    connect_timeout: Annotated[float, Meta(gt=0, le=120)] = 10.0
    #: Ask browsers to show each picture as soon as it is decoded (RTP playout-delay 0/0;
    #: about 9 ms less glass-to-glass in Chromium here). Off: the browser smooths playout
    #: behind a small buffer, worth it for stations on jittery links.
    zero_playout_delay: bool = True


class HlsConfig(Base):
    """LL-HLS muxing: one muxer per camera, started on first request, stopped when idle."""

    segment_duration: Annotated[float, Meta(ge=0.5, le=10)] = 1.0
    part_duration: Annotated[float, Meta(ge=0.1, le=1.0)] = 0.2
    #: Segments kept in the live playlist.
    segments: Annotated[int, Meta(ge=3, le=60)] = 7
    #: Stop a camera's muxer this long after its last request.
    idle_timeout: Seconds = 30.0


class IceServer(Base):
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None
    credential_env: str | None = None


class StorageConfig(Base):
    backend: str = "local"
    #: The backend's own options; after ``load()`` an instance of its ``Options`` Struct.
    options: Any = {}


class ReplicaConfig(Base):
    """A second storage backend every recorded segment is copied to."""

    backend: str
    #: The backend's own options; after ``load()`` an instance of its ``Options`` Struct.
    options: Any = {}
    #: Every this many hours the replica's objects are read back and their SHA-256 compared
    #: with the catalogue (``GET /api/recordings/replication``); 0: only on demand.
    verify_interval_hours: Annotated[float, Meta(ge=0, le=24 * 365)] = 24


class RecordingConfig(Base):
    """Continuous recording: segment length, global size cap, sweeps, replication."""

    #: Segments are cut on the first keyframe at least this long after their start.
    segment_seconds: Annotated[float, Meta(ge=1, le=600)] = 60
    #: Total size of all recordings; the oldest unheld segments go first. 0 = no cap.
    size_cap_gb: Annotated[float, Meta(ge=0)] = 0
    #: Seconds between retention sweeps.
    sweep_interval: Annotated[float, Meta(gt=0, le=86400)] = 300.0
    #: Local storage: below this much free space the oldest unheld segments go early.
    free_space_min_gb: Annotated[float, Meta(ge=0)] = 5.0
    replicate_to: ReplicaConfig | None = None
    #: Seconds of recorded video one session may pull through playback per hour (each
    #: segment counted once); beyond it 429 and an alarm. Approved exports do not count.
    max_playback_seconds_per_hour: Annotated[float, Meta(ge=60, le=10_000_000)] = 14400
    #: The longest range of one VOD playlist (the timeline is paged instead).
    max_playlist_hours: Annotated[float, Meta(gt=0, le=24 * 31)] = 24


class DatabaseConfig(Base):
    #: SQLAlchemy URL; empty means a SQLite file in the data dir. PostgreSQL:
    #: ``postgresql+asyncpg://user@host/citygate`` (password through ``url-env``).
    url: str = ""
    url_env: str | None = None


class ClusterConfig(Base):
    """``[cluster]``: this process is one node of several sharing the database.

    Unset ``node-id``: a single node that owns every camera (the default). ``citygate serve
    --workers N`` fills these in for its worker processes.
    """

    #: This node's name, unique in the cluster ("cctv-a", "cctv-b"...).
    node_id: str | None = None
    #: Where the other nodes reach this one ("http://10.0.0.11:8080"); requests for this
    #: node's cameras are forwarded there.
    advertise_url: str | None = None
    #: The most cameras this node takes, however many nodes are missing.
    capacity: Annotated[int, Meta(ge=0, le=10000)] = 200
    #: A node that stops renewing loses its cameras after this long.
    lease_seconds: Annotated[float, Meta(ge=2, le=300)] = 10.0
    #: The shared secret that signs node-to-node requests (a file readable only by the
    #: gateway's user; the same on every node), relative to the conf dir.
    secret_file: str | None = None

    def __post_init__(self) -> None:
        if self.node_id is not None:
            if not _CAMERA_ID.match(self.node_id):
                raise ValueError(f"node-id: {self.node_id!r} must be letters, digits, '-', '_' or '.'")
            if not self.advertise_url:
                raise ValueError("advertise-url: required with node-id (where the other nodes reach this one)")
            if not self.secret_file:
                raise ValueError("secret-file: required with node-id (signs requests between nodes)")

    @property
    def enabled(self) -> bool:
        return self.node_id is not None


class SecurityConfig(Base):
    """Accounts and sessions: timeouts, lockout, password rules, login throttling."""

    #: A browser session ends after this long without a request.
    session_idle_minutes: Annotated[float, Meta(gt=0, le=24 * 60)] = 30
    #: ... and this long after sign-in, however active.
    session_absolute_hours: Annotated[float, Meta(gt=0, le=24 * 31)] = 12
    #: Lifetime of API tokens (``kind = "token"``); they have no idle timeout.
    token_days: Annotated[float, Meta(gt=0, le=3650)] = 90
    #: This many failed logins within ``failed-login-window`` seconds lock the account.
    max_failed_logins: Annotated[int, Meta(ge=1, le=1000)] = 5
    failed_login_window: Annotated[float, Meta(gt=0, le=86400)] = 60.0
    lockout_minutes: Annotated[float, Meta(gt=0, le=7 * 24 * 60)] = 15
    password_min_length: Annotated[int, Meta(ge=8, le=128)] = 12
    #: Login attempts (right or wrong) accepted from one client address per minute.
    login_attempts_per_minute_per_client: Annotated[int, Meta(ge=1, le=100000)] = 30
    #: Each further lock of the same account from the same address lasts twice as long, up to this.
    lockout_max_minutes: Annotated[float, Meta(gt=0, le=30 * 24 * 60)] = 24 * 60
    #: Wrong sign-ins from any address within ``failed-login-window`` that lock the account
    #: for addresses it never signed in from (a spread-out guessing attack).
    max_failed_logins_per_account: Annotated[int, Meta(ge=1, le=100000)] = 50
    #: Wrong current passwords in a row that end the session changing the password.
    max_password_change_failures: Annotated[int, Meta(ge=1, le=100)] = 5
    #: A change needing a second administrator (two-person rule) lapses after this long.
    pending_change_hours: Annotated[float, Meta(gt=0, le=24 * 30)] = 24


class PtzConfig(Base):
    """PTZ control: one controller per camera at a time (see ``gateway.ptz``)."""

    #: The control lock lapses this long after its holder's last command.
    lock_idle_seconds: Seconds = 30.0
    #: A continuous move stops by itself this long after the last command (a client that
    #: vanished mid-move must not leave the dome spinning); clients repeat moves sooner.
    move_timeout_seconds: Seconds = 5.0
    #: Time allowed for one command to reach the camera.
    command_timeout_seconds: Seconds = 10.0
    #: Positions of PTZ cameras with scene-anchored privacy masks are read (ONVIF GetStatus)
    #: this often while they move or settle after a command...
    position_poll_moving: Annotated[float, Meta(ge=0.02, le=5)] = 0.1
    #: ...and this often while they stand still (a move made behind the gateway's back, in
    #: the camera's own web page, is seen at the next reading).
    position_poll_idle: Annotated[float, Meta(ge=0.1, le=60)] = 1.0
    #: Fast readings continue this long after every command.
    position_settle_seconds: Annotated[float, Meta(ge=0, le=60)] = 2.0
    #: No reading for this long while the camera may move: its position is unknown and the
    #: whole picture is masked until it is known again.
    position_stale_seconds: Annotated[float, Meta(ge=0.1, le=30)] = 1.0


class PushConfig(Base):
    """Emergency pushes of live cameras to rescue and crisis-management stations."""

    #: Duration of a push when the sender gives none.
    default_minutes: Annotated[float, Meta(ge=0.05, le=7 * 24 * 60)] = 60
    #: The longest a push (or an extended push) may still run.
    max_minutes: Annotated[float, Meta(ge=0.05, le=7 * 24 * 60)] = 720
    #: The role of station accounts: only users with this role receive pushes.
    station_role: Annotated[str, Meta(min_length=1)] = "rescue-station"

    def __post_init__(self) -> None:
        if self.default_minutes > self.max_minutes:
            raise ValueError("default-minutes must not exceed max-minutes")


class WebhookConfig(Base):
    """One receiver of the built-in webhook event sink (signed JSON POSTs)."""

    url: str
    #: The HMAC-SHA256 key; better given through ``secret-env`` (which wins when both are set).
    secret: str | None = None
    secret_env: str | None = None
    #: Event kinds to deliver; shell-style patterns ("push.*", "camera.offline", "*").
    kinds: tuple[str, ...] = ("push.*",)
    #: Seconds per attempt.
    timeout: Annotated[float, Meta(gt=0, le=300)] = 10.0
    #: Further attempts after the first fails; then the sink gives up with an alarm.
    retries: Annotated[int, Meta(ge=0, le=20)] = 5
    #: Delay before the first retry; doubles per retry up to ``backoff-max``.
    backoff_initial: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    backoff_max: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    #: Events waiting for this receiver; when full, new events are dropped (and logged).
    queue_size: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"webhook url {self.url!r} must be an http:// or https:// URL")
        if self.secret is None and self.secret_env is None:
            raise ValueError("a webhook needs secret-env (or secret) to sign its requests")
        if not self.kinds or any(not k.strip() for k in self.kinds):
            raise ValueError("kinds must list at least one event kind pattern")


class EvidenceConfig(Base):
    """Evidence release: request expiry, production, where packages and the signing key live."""

    #: A request not approved (or rejected) within this time expires.
    request_expiry_hours: Annotated[float, Meta(gt=0, le=24 * 365)] = 72
    #: Produce the package as soon as a request is approved (as user "system").
    auto_produce: bool = False
    #: Where packages are written; relative to the data dir.
    package_dir: Annotated[str, Meta(min_length=1)] = "exports"
    #: The Ed25519 signing key (created on first start, mode 0600); relative to the data dir.
    key_path: Annotated[str, Meta(min_length=1)] = "keys/evidence-signing-key.pem"
    #: The longest time range one request may cover.
    max_range_hours: Annotated[float, Meta(gt=0, le=24 * 90)] = 24
    #: Cameras in one request.
    max_cameras: Annotated[int, Meta(ge=1, le=100)] = 16
    #: Produced packages are deleted this many days after production (0: kept until an
    #: administrator deletes them). The register keeps the entry; the package can be
    #: produced again while the recordings are held.
    package_days: Annotated[float, Meta(ge=0, le=3650)] = 30
    #: Per export format, the defaults of its options (``[evidence.format-options.evidence]``
    #: ``watermark = true``); a request may override them, and stores what it used.
    format_options: dict[str, dict[str, Any]] = {}

    def __post_init__(self) -> None:
        if self.key_path.endswith(("/", "\\")):
            raise ValueError("key-path must name a file")
        if Path(self.key_path).resolve() == Path(self.package_dir).resolve() or Path(self.package_dir) in Path(self.key_path).parents:
            raise ValueError("key-path must not lie inside package-dir: packages are downloaded, the key never is")


class AuditConfig(Base):
    """Signed checkpoints of the audit chain: what makes a rewritten chain detectable."""

    #: Every this many minutes, if the chain grew, the gateway signs its head (entry id and
    #: hash) with its Ed25519 key; also at shutdown. 0 turns checkpoints off.
    checkpoint_minutes: Annotated[float, Meta(ge=0, le=24 * 60)] = 10
    #: Also append every checkpoint as one JSON line to this file (relative to the data
    #: dir). Put it where database administrators cannot write: another host's share, WORM
    #: storage. ``citygate audit verify --anchor-file`` checks the chain against it.
    checkpoint_file: str = ""


class AgencyAccessConfig(Base):
    """``[agency-access]``: other agencies ask in writing for cameras (access requests)."""

    #: The commitment an agency accepts with every request; the request stores the text.
    commitment: Annotated[str, Meta(min_length=1, max_length=4000)] = (
        "We will use the cameras and recordings granted only for the purpose stated in this request, "
        "only during the period granted, and will not copy, publish or pass them on."
    )
    #: The longest period one request may cover.
    max_hours: Annotated[float, Meta(gt=0, le=24 * 366)] = 24 * 31
    #: Cameras in one request (areas are resolved to their cameras when filed).
    max_cameras: Annotated[int, Meta(ge=1, le=1000)] = 64


class EventsConfig(Base):
    webhooks: tuple[WebhookConfig, ...] = ()
    #: Event sink plugins by id (``[events.sinks.<id>]``): each table is the sink's own
    #: options; after ``load()`` with the sink registry, an instance of its ``Options``.
    sinks: dict[str, Any] = {}


class IncidentCategory(Base):
    """One kind of incident an operator signals, and whom it concerns."""

    #: Short id used in the API, the register and events ("violence").
    id: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    title: Annotated[str, Meta(min_length=1, max_length=200)]
    #: The services concerned, named in the ``incident.opened`` event (webhooks and the
    #: dispatch systems behind them route on them).
    services: tuple[str, ...] = ()
    #: Station accounts that get the incident's cameras pushed (an emergency push by the
    #: operator who opened it); empty: no push.
    push_stations: tuple[str, ...] = ()
    push_minutes: Annotated[float, Meta(ge=0.05, le=7 * 24 * 60)] = 30.0


#: The categories the operators of Częstochowa's monitoring centre signal (their own page).
DEFAULT_INCIDENT_CATEGORIES = (
    IncidentCategory(id="violence", title="Violence", services=("police",)),
    IncidentCategory(id="unattended-child", title="Unattended child", services=("police",)),
    IncidentCategory(id="person-lying", title="Person lying on the ground", services=("ambulance", "city-guard")),
    IncidentCategory(id="theft", title="Theft", services=("police",)),
    IncidentCategory(id="vandalism", title="Vandalism", services=("city-guard", "police")),
    IncidentCategory(id="traffic-hazard", title="Traffic hazard", services=("police", "roads")),
    IncidentCategory(id="littering", title="Littering", services=("city-guard",)),
    IncidentCategory(id="broken-sign", title="Broken traffic sign", services=("roads",)),
)


class IncidentsConfig(Base):
    """Incidents (``[incidents]``): categories, and the evidence hold each one places."""

    #: The hold on the incident's cameras starts this long before the moment seen ...
    hold_before_minutes: Annotated[float, Meta(ge=0, le=24 * 60)] = 10.0
    #: ... and ends this long after it (extendable while the incident is open).
    hold_after_minutes: Annotated[float, Meta(gt=0, le=24 * 60)] = 30.0
    #: The longest one extension may add.
    max_extend_minutes: Annotated[float, Meta(gt=0, le=7 * 24 * 60)] = 24 * 60
    #: Further cameras one incident may name.
    max_cameras: Annotated[int, Meta(ge=1, le=64)] = 16
    categories: tuple[IncidentCategory, ...] = DEFAULT_INCIDENT_CATEGORIES

    def __post_init__(self) -> None:
        ids = [c.id for c in self.categories]
        if not ids:
            raise ValueError("categories must list at least one category")
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate incident category {dup[0]!r}")


class MaskingConfig(Base):
    """The mask stage's encoder: one libx264 encode per masked camera, shared by every reader."""

    #: libx264 preset; ultrafast costs the least CPU per camera.
    preset: str = "ultrafast"
    #: Target bits per second of the masked stream.
    bitrate: Annotated[int, Meta(ge=50_000, le=50_000_000)] = 2_000_000
    #: Seconds between keyframes of the masked stream (a new viewer waits at most this long
    #: without the hub's GOP cache; recordings cut segments on keyframes).
    keyframe_interval: Annotated[float, Meta(ge=0.2, le=20)] = 2.0
    #: libx264 threads per camera; 1 is cheapest per camera, 0 lets x264 choose.
    encoder_threads: Annotated[int, Meta(ge=0, le=16)] = 1

    def __post_init__(self) -> None:
        presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
        if self.preset not in presets:
            raise ValueError(f"preset {self.preset!r} must be one of {', '.join(presets)}")


class MaskConfig(Base):
    """A privacy mask kept as code; the database can add masks but never weaken these."""

    #: Polygon corners as ``[x, y]`` pairs, normalised to 0..1 (origin top left).
    points: tuple[tuple[float, float], ...]
    filter: str = "fill"
    #: The filter's own options (``block`` for pixelate, ``radius`` for blur).
    options: dict[str, Any] = {}
    #: ``[pan, tilt, zoom]`` (ONVIF generic spaces) where a PTZ camera stood when ``points``
    #: were drawn: the mask is then anchored to the scene and follows the camera. Without
    #: it the mask stays at the same place in the picture.
    drawn_at: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        problem = polygon_problem(self.points)
        if problem is not None:
            raise ValueError(problem)
        if self.drawn_at is not None:
            pan, tilt, zoom = self.drawn_at
            if not (-1 <= pan <= 1 and -1 <= tilt <= 1 and 0 <= zoom <= 1):
                raise ValueError(f"drawn-at {list(self.drawn_at)} must be [pan -1..1, tilt -1..1, zoom 0..1]")


class PtzOpticsConfig(Base):
    """How a PTZ camera's generic positions map onto directions, for masks anchored to the
    scene. Only needed where the vendor cannot say (the demo dome can)."""

    #: Degrees the generic pan range -1..1 spans (most domes: a full turn).
    pan_range: tuple[float, float] = (-180.0, 180.0)
    #: Degrees the generic tilt range -1..1 spans (positive up; a ceiling dome: [-90, 0]).
    tilt_range: tuple[float, float] = (-90.0, 90.0)
    #: Horizontal field of view in degrees at the widest and at the narrowest zoom.
    fov: tuple[float, float] = (60.0, 3.0)
    #: "rectilinear" (a lens) or "equirectangular" (a window on a panorama).
    projection: str = "rectilinear"
    #: A picture may have been captured this long before it reached the gateway.
    capture_latency: Annotated[float, Meta(ge=0, le=5)] = 0.25
    #: A position reading may describe the camera this long before or after it arrived.
    position_latency: Annotated[float, Meta(ge=0, le=5)] = 0.1

    def __post_init__(self) -> None:
        wide, narrow = self.fov
        if not 0 < narrow <= wide < 180:
            raise ValueError(f"fov {list(self.fov)} must be [widest, narrowest] degrees with 0 < narrowest <= widest < 180")
        if self.projection not in ("rectilinear", "equirectangular"):
            raise ValueError(f"projection {self.projection!r} must be rectilinear or equirectangular")
        if self.pan_range[0] >= self.pan_range[1] or self.tilt_range[0] >= self.tilt_range[1]:
            raise ValueError("pan-range and tilt-range must each be [low, high] with low < high")


class RtspOutConfig(Base):
    """``[rtsp-out]``: the authenticated RTSP/RTSPS re-stream of every camera's public hub.

    Off by default. Clients authenticate with RTSP Digest (RFC 7616, SHA-256; MD5 only with
    ``allow-md5``) against an account's RTSP secret, or with an API token in ``?token=``.
    """

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: Port = 8554
    #: Host name clients use in URLs (ONVIF GetStreamUri, federation); unset: ``bind``.
    public_host: str | None = None
    #: Accept Digest with MD5 (for old clients) beside SHA-256.
    allow_md5: bool = False
    #: Offer RTP over UDP beside TCP-interleaved.
    udp: bool = True
    #: A Digest nonce is accepted this long after it was issued.
    nonce_lifetime: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    realm: Annotated[str, Meta(min_length=1)] = "citygate"
    #: Certificate and key for RTSPS (RTSP over TLS); both or neither.
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls-cert and tls-key must be given together")


class OnvifServerConfig(Base):
    """``[onvif-server]``: Citygate as an ONVIF Profile S device, on a port of its own. Off by
    default."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    #: 0: any free port (tests).
    port: Port = 8000
    #: Host name clients use in service addresses and URIs; unset: the host the client used.
    public_host: str | None = None
    #: Certificate and key for HTTPS; both or neither. Only over HTTPS may a client send
    #: PasswordText (the account's RTSP secret or an API token of the account).
    tls_cert: str | None = None
    tls_key: str | None = None
    #: A snapshot URI (it carries a signed token) works this long after GetSnapshotUri.
    snapshot_uri_seconds: Annotated[float, Meta(gt=0, le=86400)] = 300.0
    #: A WS-UsernameToken ``Created`` time may differ from the gateway's clock by this much.
    max_clock_skew: Annotated[float, Meta(ge=5, le=3600)] = 300.0
    #: Answer WS-Discovery probes (UDP multicast 239.255.255.250 on the LAN).
    discovery: bool = False
    discovery_port: Port = 3702

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls-cert and tls-key must be given together")


class HealthConfig(Base):
    """Camera health: samples, history and the thresholds of its alarms (``[health]``)."""

    #: Seconds between samples of each camera's state, bitrate and frame rate.
    sample_seconds: Annotated[float, Meta(ge=0.2, le=300)] = 5.0
    #: Minutes of bitrate and frame-rate history kept in memory per camera.
    history_minutes: Annotated[int, Meta(ge=1, le=1440)] = 60
    #: The same decoded keyframe for this long raises the "frozen" alarm.
    frozen_seconds: Annotated[float, Meta(ge=1, le=86400)] = 60.0
    #: At most one keyframe per camera is decoded and hashed this often (cheap: only keyframes).
    frozen_check_seconds: Annotated[float, Meta(ge=0.2, le=600)] = 5.0
    #: Bitrate below this share of the camera's median over the history raises "bitrate collapse".
    bitrate_collapse_ratio: Annotated[float, Meta(gt=0, lt=1)] = 0.2
    #: Offline this long raises the "offline" alarm (0: at once).
    offline_seconds: Annotated[float, Meta(ge=0, le=86400)] = 0.0
    #: A recorded camera online without a new segment for this long raises "recording stopped".
    recording_stalled_seconds: Annotated[float, Meta(ge=10, le=86400)] = 180.0


class MapConfig(Base):
    """The camera map (``[map]``): the city's own tile server, else a GeoJSON background.

    No default tile URL: the map works without internet."""

    #: ``https://tiles.city.example/{z}/{x}/{y}.png``; empty: no tiles.
    tile_url: str = ""
    tile_attribution: str = ""
    max_zoom: Annotated[int, Meta(ge=1, le=24)] = 19
    #: GeoJSON drawn under the cameras (streets, district borders), relative to the conf dir.
    background: str = ""
    #: ``[latitude, longitude]`` the map opens on; default: around the cameras.
    center: tuple[float, float] | None = None
    zoom: Annotated[int, Meta(ge=1, le=24)] = 15

    def __post_init__(self) -> None:
        if self.tile_url and not (self.tile_url.startswith(("https://", "http://", "/")) and "{z}" in self.tile_url
                                  and "{x}" in self.tile_url and "{y}" in self.tile_url):
            raise ValueError("tile-url must be an http(s) URL or a path with {z}, {x} and {y}")
        if "{" in "/".join(self.tile_url.split("/", 3)[:3]):
            raise ValueError("tile-url: the server's name must be written out (no {s} subdomains)")


class GatewayFile(Base):
    agency_access: AgencyAccessConfig = AgencyAccessConfig()
    #: ``[auth.<provider>]``: directory sign-in (``[auth.ldap]``), each table checked
    #: against its provider's ``Options``; providers are asked in this order.
    auth: dict[str, Any] = {}
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    cluster: ClusterConfig = ClusterConfig()
    security: SecurityConfig = SecurityConfig()
    ingest: IngestConfig = IngestConfig()
    live: LiveConfig = LiveConfig()
    hls: HlsConfig = HlsConfig()
    storage: StorageConfig = StorageConfig()
    recording: RecordingConfig = RecordingConfig()
    ptz: PtzConfig = PtzConfig()
    push: PushConfig = PushConfig()
    events: EventsConfig = EventsConfig()
    masking: MaskingConfig = MaskingConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    audit: AuditConfig = AuditConfig()
    rtsp_out: RtspOutConfig = RtspOutConfig()
    onvif_server: OnvifServerConfig = OnvifServerConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    health: HealthConfig = HealthConfig()
    map: MapConfig = MapConfig()


class AnalyticsConfig(Base):
    """One ``[[camera.analytics]]`` entry: an analyzer plugin and its validated options.

    In ``cameras.toml`` the analyzer's own keys sit beside ``analyzer`` and ``fps``::

        [[camera.analytics]]
        analyzer = "vehicle-count"
        fps = 5
        [[camera.analytics.lines]]
        ...
    """

    analyzer: str
    #: Pictures per second it is given; None: the analyzer's ``default_fps``.
    fps: Annotated[float, Meta(gt=0, le=60)] | None = None
    #: The camera stream it analyses (None: the analyzer's ``default_stream``): "sub" (a
    #: quarter of the decoding, for counting) while the camera offers one and has no privacy
    #: masks; otherwise the main stream.
    stream: Literal["main", "sub"] | None = None
    #: The analyzer's ``Options`` instance (the raw table when ``load()`` got no analyzers).
    options: Any = {}


#: The keys of a ``[[camera.analytics]]`` table that are not the analyzer's own options.
ANALYTICS_COMMON_KEYS = ("analyzer", "fps", "stream")


class CameraConfig(Base):
    #: Appears in URLs and storage keys, hence the restricted alphabet.
    id: str
    vendor: str
    #: District or area; users see only cameras of their areas.
    area: Annotated[str, Meta(min_length=1)]
    name: str = ""
    tags: tuple[str, ...] = ()
    enabled: bool = True
    record: bool = True
    retention_days: Annotated[int, Meta(ge=1, le=3650)] = 45
    #: The vendor's own options; after ``load()`` an instance of the vendor's ``Options``.
    options: Any = {}
    #: Privacy masks declared in config (``[[camera.masks]]``); applied before every reader.
    masks: tuple[MaskConfig, ...] = ()
    #: The optics of a PTZ camera (``[camera.ptz-optics]``), for scene-anchored masks.
    ptz_optics: PtzOpticsConfig = PtzOpticsConfig()
    #: The organisation that owns and answers for the camera (for the city's camera register).
    owner: str = ""
    #: Where the camera stands, as a postal address or a description of the place.
    address: str = ""
    #: ``[latitude, longitude]`` in decimal degrees (WGS 84); checked by ``load()``.
    location: tuple[float, float] | None = None
    #: The RTSP client for this camera ("ffmpeg" or "native"); unset: ``[ingest] client``.
    ingest_client: Literal["ffmpeg", "native"] | None = None
    #: Where the camera looks, degrees clockwise from north (for the map's heading cone).
    heading: Annotated[float, Meta(ge=0, lt=360)] | None = None
    #: Horizontal field of view in degrees (the cone's width on the map).
    fov_degrees: Annotated[float, Meta(gt=0, le=360)] | None = None
    #: Video analytics (``[[camera.analytics]]`` tables); after ``load()``, ``AnalyticsConfig``s.
    analytics: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not _CAMERA_ID.match(self.id):
            raise ValueError(
                f"camera id {self.id!r} must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
            )

    @property
    def title(self) -> str:
        return self.name or self.id


class CamerasFile(Base):
    camera: tuple[CameraConfig, ...] = ()


class Config(msgspec.Struct, kw_only=True, frozen=True):
    """The whole, validated configuration."""

    root: str  #: the conf directory
    agency_access: AgencyAccessConfig = AgencyAccessConfig()
    #: Provider id -> its validated ``Options`` (raw tables when ``load()`` got no providers).
    auth: dict[str, Any] = {}
    server: ServerConfig
    database: DatabaseConfig
    ingest: IngestConfig
    live: LiveConfig
    hls: HlsConfig
    storage: StorageConfig
    cameras: tuple[CameraConfig, ...]
    cluster: ClusterConfig = ClusterConfig()
    security: SecurityConfig = SecurityConfig()
    recording: RecordingConfig = RecordingConfig()
    ptz: PtzConfig = PtzConfig()
    push: PushConfig = PushConfig()
    events: EventsConfig = EventsConfig()
    masking: MaskingConfig = MaskingConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    audit: AuditConfig = AuditConfig()
    rtsp_out: RtspOutConfig = RtspOutConfig()
    onvif_server: OnvifServerConfig = OnvifServerConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    health: HealthConfig = HealthConfig()
    map: MapConfig = MapConfig()

    @property
    def data_dir(self) -> Path:
        return (Path(self.root) / self.server.data_dir).resolve()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.data_dir / 'citygate.db'}"

    def camera(self, camera_id: str) -> CameraConfig | None:
        return next((c for c in self.cameras if c.id == camera_id), None)


# --------------------------------------------------------------------------------------
# loading


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"field `(?P<field>[^`]+)`")


def _split_validation(exc: msgspec.ValidationError, prefix: str) -> tuple[str, str]:
    """Turn msgspec's ``"... - at `$.a.b[0]`"`` into (key path, reason)."""
    m = _AT.match(str(exc))
    msg = m.group("msg") if m else str(exc)
    path = (m.group("path") or "") if m else ""
    key = _join(prefix, path.lstrip("."))
    field = _FIELD.search(msg)
    if field and ("unknown field" in msg or "missing required field" in msg):
        key = _join(key, field.group("field"))
        msg = "unknown key" if "unknown field" in msg else "required key is missing"
    return key, _friendly(msg)


def _friendly(msg: str) -> str:
    return msg.replace("Expected `", "expected `").replace("Object", "table")


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    if not prefix:
        return path
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def _read_toml(path: Path, type_: type, display: str) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return type_()
    except OSError as exc:
        raise ConfigError(display, "", f"cannot read: {exc.strerror}") from exc
    try:
        return msgspec.toml.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        key, reason = _split_validation(exc, "")
        raise ConfigError(display, key, reason) from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(display, "", f"not valid TOML: {exc}") from exc


def resolve_env(obj: Any, env: Mapping[str, str], *, file: str, key: str, errors: list[ConfigError]) -> Any:
    """Fill every ``<name>`` from the environment variable named by ``<name>-env``."""
    if not isinstance(obj, msgspec.Struct):
        return obj
    changes: dict[str, Any] = {}
    encode = {f.name: f.encode_name for f in msgspec.structs.fields(obj)}
    for name, encoded in encode.items():
        value = getattr(obj, name)
        if isinstance(value, msgspec.Struct):
            changes[name] = resolve_env(value, env, file=file, key=_join(key, encoded), errors=errors)
        elif isinstance(value, tuple) and value and all(isinstance(v, msgspec.Struct) for v in value):
            changes[name] = tuple(
                resolve_env(v, env, file=file, key=f"{_join(key, encoded)}[{i}]", errors=errors) for i, v in enumerate(value)
            )
        if name.endswith("_env") and value is not None and name[: -len("_env")] in encode:
            target = name[: -len("_env")]
            if value not in env:
                errors.append(ConfigError(file, _join(key, encoded), f"environment variable {value!r} is not set"))
            else:
                changes[target] = env[value]
    return msgspec.structs.replace(obj, **changes) if changes else obj


def _plugin_options(
    options: Any, plugin_cls: type, *, file: str, key: str, env: Mapping[str, str], errors: list[ConfigError]
) -> Any:
    options_type = getattr(plugin_cls, "Options", None)
    if options_type is None:
        return options
    try:
        converted = msgspec.convert(options or {}, type=options_type, str_keys=True)
    except msgspec.ValidationError as exc:
        errors.append(ConfigError(file, *_split_validation(exc, key)))
        return None
    return resolve_env(converted, env, file=file, key=key, errors=errors)


def load(
    root: str | os.PathLike[str],
    *,
    vendors: Mapping[str, type],
    storage_backends: Mapping[str, type] | None = None,
    env: Mapping[str, str] | None = None,
    mask_filters: Mapping[str, type] | None = None,
    export_formats: Mapping[str, type] | None = None,
    auth_providers: Mapping[str, type] | None = None,
    event_sinks: Mapping[str, type] | None = None,
    analyzers: Mapping[str, type] | None = None,
) -> Config:
    """Load and validate the configuration directory ``root``.

    ``vendors``, ``storage_backends``, ``mask_filters`` and ``export_formats`` are the
    registries from the plugin manager; a camera naming an unknown vendor or mask filter is
    an error (without ``mask_filters``, the gateway checks mask filters again when it
    starts), and so are defaults for an unknown export format or options it does not
    take. Raises ``ConfigErrors`` listing every mistake found.
    """
    env = os.environ if env is None else env
    root_path = Path(root)
    if not root_path.is_dir():
        raise ConfigErrors([ConfigError(str(root_path), "", "not a directory")])
    gw_display = str(root_path / GATEWAY_FILE)
    cam_display = str(root_path / CAMERAS_FILE)
    errors: list[ConfigError] = []

    gateway = GatewayFile()
    cameras_file = CamerasFile()
    try:
        gateway = _read_toml(root_path / GATEWAY_FILE, GatewayFile, gw_display)
    except ConfigError as exc:
        errors.append(exc)
    try:
        cameras_file = _read_toml(root_path / CAMERAS_FILE, CamerasFile, cam_display)
    except ConfigError as exc:
        errors.append(exc)

    live = resolve_env(gateway.live, env, file=gw_display, key="live", errors=errors)
    database = resolve_env(gateway.database, env, file=gw_display, key="database", errors=errors)
    events = resolve_env(gateway.events, env, file=gw_display, key="events", errors=errors)

    errors.extend(cluster_errors(gateway.cluster, database, gateway.storage, file=gw_display))

    storage = gateway.storage
    if storage_backends is not None:
        backend = storage_backends.get(storage.backend)
        if backend is None:
            known = ", ".join(sorted(storage_backends)) or "none installed"
            errors.append(ConfigError(gw_display, "storage.backend", f"unknown storage backend {storage.backend!r} (known: {known})"))
        else:
            opts = _plugin_options(storage.options, backend, file=gw_display, key="storage.options", env=env, errors=errors)
            storage = msgspec.structs.replace(storage, options=opts)

    recording = gateway.recording
    replica = recording.replicate_to
    if replica is not None and storage_backends is not None:
        backend = storage_backends.get(replica.backend)
        if backend is None:
            known = ", ".join(sorted(storage_backends)) or "none installed"
            errors.append(
                ConfigError(gw_display, "recording.replicate-to.backend", f"unknown storage backend {replica.backend!r} (known: {known})")
            )
        else:
            opts = _plugin_options(replica.options, backend, file=gw_display, key="recording.replicate-to.options", env=env, errors=errors)
            recording = msgspec.structs.replace(recording, replicate_to=msgspec.structs.replace(replica, options=opts))

    if export_formats is not None:
        errors.extend(format_option_errors(gateway.evidence, export_formats, file=gw_display))

    auth = gateway.auth
    if auth_providers is not None:
        auth = auth_options(gateway.auth, auth_providers, file=gw_display, env=env, errors=errors)

    if event_sinks is not None and events.sinks:
        sinks = event_sink_options(events.sinks, event_sinks, file=gw_display, env=env, errors=errors)
        events = msgspec.structs.replace(events, sinks=sinks)

    cameras: list[CameraConfig] = []
    seen: dict[str, int] = {}
    for index, camera in enumerate(cameras_file.camera):
        key = f"camera[{index}]"
        if camera.id in seen:
            errors.append(ConfigError(cam_display, f"{key}.id", f"duplicate camera id {camera.id!r} (also camera[{seen[camera.id]}])"))
            continue
        seen[camera.id] = index
        checked = check_camera(
            camera, vendors=vendors, file=cam_display, key=key, env=env, errors=errors, mask_filters=mask_filters, analyzers=analyzers
        )
        if checked is not None:
            cameras.append(checked)

    if errors:
        raise ConfigErrors(errors)
    return Config(
        root=str(root_path.resolve()),
        server=gateway.server,
        database=database,
        ingest=gateway.ingest,
        live=live,
        hls=gateway.hls,
        storage=storage,
        cameras=tuple(cameras),
        cluster=gateway.cluster,
        security=gateway.security,
        recording=recording,
        ptz=gateway.ptz,
        push=gateway.push,
        events=events,
        masking=gateway.masking,
        evidence=gateway.evidence,
        agency_access=gateway.agency_access,
        auth=auth,
        audit=gateway.audit,
        rtsp_out=gateway.rtsp_out,
        onvif_server=gateway.onvif_server,
        incidents=gateway.incidents,
        health=gateway.health,
        map=gateway.map,
    )


def check_camera(
    camera: CameraConfig,
    *,
    vendors: Mapping[str, type],
    file: str,
    key: str,
    env: Mapping[str, str],
    errors: list[ConfigError],
    mask_filters: Mapping[str, type] | None = None,
    analyzers: Mapping[str, type] | None = None,
) -> CameraConfig | None:
    """One ``[[camera]]`` table checked against the plugins (vendor and its options, place,
    mask filters, analyzers); mistakes go to ``errors``. Cameras managed through the API
    are checked by the same function, so they get the same errors."""
    vendor = vendors.get(camera.vendor)
    if vendor is None:
        known = ", ".join(sorted(vendors)) or "none installed"
        errors.append(ConfigError(file, f"{key}.vendor", f"unknown vendor {camera.vendor!r} (known: {known})"))
        return None
    opts = _plugin_options(camera.options, vendor, file=file, key=f"{key}.options", env=env, errors=errors)
    problem = location_problem(camera.location)
    if problem is not None:
        errors.append(ConfigError(file, f"{key}.location", problem))
    if mask_filters is not None:
        errors.extend(mask_filter_errors(camera, mask_filters, file=file, key=key))
    analytics = analytics_entries(camera.analytics, analyzers, file=file, key=f"{key}.analytics", env=env, errors=errors, camera=camera.id)
    return msgspec.structs.replace(camera, options=opts, analytics=analytics)


def camera_from_table(
    table: Any, *, vendors: Mapping[str, type], file: str, key: str, env: Mapping[str, str], errors: list[ConfigError],
    mask_filters: Mapping[str, type] | None = None, analyzers: Mapping[str, type] | None = None,
) -> CameraConfig | None:
    """A ``[[camera]]`` table given as data (JSON from the API), decoded and checked exactly
    like one read from ``cameras.toml``."""
    try:
        camera = msgspec.convert(table, type=CameraConfig, str_keys=True)
    except msgspec.ValidationError as exc:
        errors.append(ConfigError(file, *_split_validation(exc, key)))
        return None
    return check_camera(camera, vendors=vendors, file=file, key=key, env=env, errors=errors, mask_filters=mask_filters, analyzers=analyzers)


def cluster_errors(cluster: ClusterConfig, database: DatabaseConfig, storage: StorageConfig, *, file: str) -> list[ConfigError]:
    """Nodes on several machines need a database and a storage every machine reaches:
    SQLite and local disk serve ``--workers N`` on one machine only."""
    if not cluster.enabled or cluster.advertise_url is None:
        return []
    if loopback_host(urllib.parse.urlsplit(cluster.advertise_url).hostname or ""):
        return []
    errors = []
    if not database.url and not database.url_env:
        errors.append(ConfigError(file, "database.url", "nodes on several machines (cluster.advertise-url is not loopback) "
                                                        "need PostgreSQL: SQLite is one machine's file"))
    if storage.backend == "local":
        errors.append(ConfigError(file, "storage.backend", "nodes on several machines need storage every node reads "
                                                           "(an S3 backend); local disk serves one machine only"))
    return errors


def loopback_host(host: str) -> bool:
    """``localhost``, an empty host or a loopback address."""
    if host in ("", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def location_problem(location: tuple[float, float] | None) -> str | None:
    """What is wrong with a camera's ``location = [lat, lon]``, or None."""
    if location is None:
        return None
    lat, lon = location
    if not -90.0 <= lat <= 90.0:  # also refuses NaN
        return f"latitude {lat} must be between -90 and 90 (location is [latitude, longitude])"
    if not -180.0 <= lon <= 180.0:
        return f"longitude {lon} must be between -180 and 180 (location is [latitude, longitude])"
    return None


def format_option_errors(evidence: EvidenceConfig, formats: Mapping[str, type], *, file: str) -> list[ConfigError]:
    """Mistakes in ``[evidence.format-options.*]``: unknown formats, options they do not take."""
    errors: list[ConfigError] = []
    for fid, options in evidence.format_options.items():
        key = f"evidence.format-options.{fid}"
        fmt = formats.get(fid)
        if fmt is None:
            known = ", ".join(sorted(formats)) or "none installed"
            errors.append(ConfigError(file, key, f"unknown export format {fid!r} (known: {known})"))
        else:
            _plugin_options(options, fmt, file=file, key=key, env={}, errors=errors)
    return errors


def auth_options(
    auth: Mapping[str, Any], providers: Mapping[str, type], *, file: str, env: Mapping[str, str], errors: list[ConfigError]
) -> dict[str, Any]:
    """``[auth.<id>]`` tables checked against each sign-in provider's ``Options``."""
    checked: dict[str, Any] = {}
    for pid, options in auth.items():
        provider = providers.get(pid)
        if provider is None:
            known = ", ".join(sorted(providers)) or "none installed"
            errors.append(ConfigError(file, f"auth.{pid}", f"unknown sign-in provider {pid!r} (known: {known})"))
        elif not isinstance(options, dict):
            errors.append(ConfigError(file, f"auth.{pid}", "expected a table"))
        else:
            checked[pid] = _plugin_options(options, provider, file=file, key=f"auth.{pid}", env=env, errors=errors)
    return checked


def analytics_entries(
    tables: tuple[Any, ...],
    analyzers: Mapping[str, type] | None,
    *,
    file: str,
    key: str,
    env: Mapping[str, str],
    errors: list[ConfigError],
    camera: str = "",
) -> tuple[AnalyticsConfig, ...]:
    """``[[camera.analytics]]`` tables as ``AnalyticsConfig``s, each analyzer's keys checked
    against its ``Options`` (left as raw tables without ``analyzers``; the analytics runner
    checks them again when it starts the camera's analyzers). Reasons name the camera."""
    found: list[ConfigError] = []
    entries = _analytics_entries(tables, analyzers, file=file, key=key, env=env, errors=found)
    suffix = f" (camera {camera!r})" if camera else ""
    errors.extend(ConfigError(e.file, e.key, e.reason + suffix) for e in found)
    return entries


def _analytics_entries(
    tables: tuple[Any, ...],
    analyzers: Mapping[str, type] | None,
    *,
    file: str,
    key: str,
    env: Mapping[str, str],
    errors: list[ConfigError],
) -> tuple[AnalyticsConfig, ...]:
    entries: list[AnalyticsConfig] = []
    for index, table in enumerate(tables):
        where = f"{key}[{index}]"
        if isinstance(table, AnalyticsConfig):
            table = {"analyzer": table.analyzer, "fps": table.fps, "stream": table.stream, **_raw_options(table.options)}
        if not isinstance(table, dict):
            errors.append(ConfigError(file, where, "expected a table ([[camera.analytics]])"))
            continue
        common = {k: v for k, v in table.items() if k in ANALYTICS_COMMON_KEYS and v is not None}
        try:
            entry = msgspec.convert(common, type=AnalyticsConfig, str_keys=True)
        except msgspec.ValidationError as exc:
            errors.append(ConfigError(file, *_split_validation(exc, where)))
            continue
        options: Any = {k: v for k, v in table.items() if k not in ANALYTICS_COMMON_KEYS}
        if analyzers is not None:
            cls = analyzers.get(entry.analyzer)
            if cls is None:
                known = ", ".join(sorted(analyzers)) or "none installed"
                errors.append(ConfigError(file, f"{where}.analyzer", f"unknown analyzer {entry.analyzer!r} (known: {known})"))
                continue
            options = _plugin_options(options, cls, file=file, key=where, env=env, errors=errors)
            if options is None:
                continue
        entries.append(msgspec.structs.replace(entry, options=options))
    return tuple(entries)


def _raw_options(options: Any) -> dict[str, Any]:
    if isinstance(options, msgspec.Struct):
        return msgspec.to_builtins(options)
    return dict(options or {})


def event_sink_options(
    sinks: Mapping[str, Any], registry: Mapping[str, type], *, file: str, env: Mapping[str, str], errors: list[ConfigError]
) -> dict[str, Any]:
    """``[events.sinks.<id>]`` tables checked against each event sink's ``Options``."""
    checked: dict[str, Any] = {}
    for sid, options in sinks.items():
        sink = registry.get(sid)
        options_type = getattr(sink, "Options", None)
        if sink is None:
            known = ", ".join(sorted(registry)) or "none installed"
            errors.append(ConfigError(file, f"events.sinks.{sid}", f"unknown event sink {sid!r} (known: {known})"))
        elif options_type is not None and isinstance(options, options_type):
            checked[sid] = options  # validated already
        elif not isinstance(options, dict):
            errors.append(ConfigError(file, f"events.sinks.{sid}", "expected a table"))
        else:
            checked[sid] = _plugin_options(options, sink, file=file, key=f"events.sinks.{sid}", env=env, errors=errors)
    return checked


def mask_filter_errors(camera: CameraConfig, filters: Mapping[str, type], *, file: str, key: str) -> list[ConfigError]:
    """One error per config mask of ``camera`` naming a filter no plugin provides or options
    its filter does not take (checked against the filter's ``Options``)."""
    known = ", ".join(sorted(filters)) or "none installed"
    errors: list[ConfigError] = []
    for i, mask in enumerate(camera.masks):
        flt = filters.get(mask.filter)
        if flt is None:
            errors.append(ConfigError(file, f"{key}.masks[{i}].filter", f"unknown mask filter {mask.filter!r} (known: {known})"))
        else:
            _plugin_options(mask.options, flt, file=file, key=f"{key}.masks[{i}].options", env={}, errors=errors)
    return errors
