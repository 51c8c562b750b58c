"""Who may do what, on which camera: roles, areas and time-limited grants.

A user may act on a camera only if their role allows the action AND the camera's area is
one of the user's areas (or the user holds all areas), or an active grant names the user
(or the user's role), the camera and the action. Everything else is refused: deny by
default. Pure logic, no I/O: the callers hand in the user, the camera and the grants.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from gateway.errors import ConfigError, ConfigErrors

ROLES_FILE = "roles.toml"


class Action(enum.StrEnum):
    LIVE_VIEW = "live.view"
    PLAYBACK_VIEW = "playback.view"
    SNAPSHOT_VIEW = "snapshot.view"
    PTZ_CONTROL = "ptz.control"
    EXPORT_REQUEST = "export.request"
    EXPORT_APPROVE = "export.approve"
    EXPORT_PRODUCE = "export.produce"
    PUSH_SEND = "push.send"
    MASK_EDIT = "mask.edit"
    CAMERAS_MANAGE = "cameras.manage"
    USERS_MANAGE = "users.manage"
    AUDIT_READ = "audit.read"
    SYSTEM_MONITOR = "system.monitor"
    #: The camera register (GET /api/cameras/inventory) of the cameras in the user's areas.
    CAMERAS_INVENTORY = "cameras.inventory"
    #: Another agency asks in writing for cameras (``POST /api/access-requests``).
    ACCESS_REQUEST = "access.request"
    #: Decide agencies' access requests for cameras of one's areas (never one's own).
    ACCESS_APPROVE = "access.approve"
    #: A federating gateway's service account: may name the user it acts for
    #: (``X-Citygate-On-Behalf-Of``), which the audit log then records.
    FEDERATION_RELAY = "federation.relay"
    #: Open an incident on cameras of one's areas, bookmark it, hand over and close one's own.
    INCIDENT_OPEN = "incident.open"
    #: The incident register of one's areas: read, hand over, extend and close any incident there.
    INCIDENT_MANAGE = "incident.manage"
    #: Vehicle counts and other traffic statistics of cameras in one's areas (JSON, CSV, charts).
    ANALYTICS_VIEW = "analytics.view"
    #: Search the number-plate reads of cameras in one's areas (with a purpose; audited).
    PLATES_SEARCH = "plates.search"
    #: Keep the plate watchlist of one's areas (every change audited with its purpose).
    PLATES_WATCH = "plates.watch"


#: Actions that are about the whole system, not one camera: no area applies. Approving an
#: export is about its cameras: a district's leadership approves for the district only.
GLOBAL_ACTIONS = frozenset({Action.USERS_MANAGE, Action.AUDIT_READ, Action.SYSTEM_MONITOR, Action.FEDERATION_RELAY})
ALL_ACTIONS = frozenset(Action)


class RoleSpec(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    title: str = ""
    actions: tuple[str, ...] = ()
    #: Who may take PTZ control from whom: higher wins.
    ptz_priority: Annotated[int, Meta(ge=0, le=1000)] = 0
    description: str = ""


class RolesFile(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    role: dict[str, RoleSpec] = {}


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    title: str
    actions: frozenset[Action]
    ptz_priority: int


@dataclass(frozen=True, slots=True)
class Subject:
    """The user as the policy sees them."""

    username: str
    role: str
    areas: frozenset[str]
    all_areas: bool
    user_id: int | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    id: int
    user_id: int | None
    role: str | None
    cameras: frozenset[str]  #: camera ids; "*" for all
    actions: frozenset[str]
    starts_at: float
    expires_at: float
    reason: str
    source: str = "manual"
    revoked_at: float | None = None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and self.starts_at <= now < self.expires_at

    def covers(self, subject: Subject, action: str, camera: str | None, now: float) -> bool:
        if not self.active(now) or action not in self.actions:
            return False
        if self.user_id is not None and self.user_id != subject.user_id:
            return False
        if self.role is not None and self.role != subject.role:
            return False
        return camera is None or "*" in self.cameras or camera in self.cameras


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    grant: int | None = None

    def __bool__(self) -> bool:
        return self.allowed


class Policy:
    def __init__(self, roles: dict[str, Role]) -> None:
        self.roles = roles

    def role(self, name: str) -> Role | None:
        return self.roles.get(name)

    def decide(
        self,
        subject: Subject,
        action: str,
        *,
        camera: str | None = None,
        camera_area: str | None = None,
        grants: Iterable[Grant] = (),
        now: float,
    ) -> Decision:
        """May ``subject`` do ``action`` (on ``camera`` in ``camera_area``)?"""
        role = self.roles.get(subject.role)
        if role is None:
            return Decision(False, f"role {subject.role!r} is not defined")
        if action in role.actions:
            if camera is None or action in GLOBAL_ACTIONS:
                return Decision(True, f"role {role.name} allows {action}")
            if subject.all_areas or camera_area in subject.areas:
                return Decision(True, f"role {role.name} allows {action} in area {camera_area}")
        for grant in grants:
            if grant.covers(subject, action, camera, now):
                return Decision(True, f"grant {grant.id} ({grant.reason})", grant.id)
        if action not in role.actions:
            return Decision(False, f"role {role.name} does not allow {action}")
        return Decision(False, f"camera {camera} is in area {camera_area!r}, outside {subject.username}'s areas")

    def may_sometimes(self, subject: Subject, action: str, grants: Iterable[Grant], now: float) -> bool:
        """Could the subject do ``action`` on some camera (to show or hide a feature)?"""
        role = self.roles.get(subject.role)
        if role is not None and action in role.actions:
            return True
        return any(g.active(now) and action in g.actions and g.covers(subject, action, None, now) for g in grants)


def load_roles(root: str | Path) -> Policy:
    """Read ``roles.toml``; every mistake names the file and key."""
    path = Path(root) / ROLES_FILE
    display = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigErrors([ConfigError(display, "", "missing: the roles file defines who may do what")]) from None
    try:
        spec = msgspec.toml.decode(raw, type=RolesFile)
    except msgspec.ValidationError as exc:
        from gateway.config import _split_validation

        raise ConfigErrors([ConfigError(display, *_split_validation(exc, ""))]) from exc
    except msgspec.DecodeError as exc:
        raise ConfigErrors([ConfigError(display, "", f"not valid TOML: {exc}")]) from exc
    errors: list[ConfigError] = []
    roles: dict[str, Role] = {}
    known = ", ".join(sorted(ALL_ACTIONS))
    for name, role in spec.role.items():
        actions: set[Action] = set()
        for i, action in enumerate(role.actions):
            try:
                actions.add(Action(action))
            except ValueError:
                errors.append(ConfigError(display, f"role.{name}.actions[{i}]", f"unknown action {action!r} (known: {known})"))
        roles[name] = Role(name, role.title or name, frozenset(actions), role.ptz_priority)
    if errors:
        raise ConfigErrors(errors)
    return Policy(roles)
