"""Individual accounts, sign-in, sessions and API tokens.

Every person has their own account (no shared logins): a role, a set of areas, a password
hashed with Argon2id. New accounts and reset passwords are random and must be changed at
the first sign-in.

Sign-in is throttled per client address. The password is always checked first (unknown
usernames hash a dummy password), and unknown names and wrong passwords get the same answer,
locks included: failures are counted per (username as typed, client address), whether the
account exists or not. ``max-failed-logins`` wrong passwords within ``failed-login-window``
seconds lock that pair for ``lockout-minutes``, each further lock of the pair twice as long
(up to ``lockout-max-minutes``); other addresses are not affected, so nobody can lock an
administrator out from elsewhere. ``max-failed-logins-per-account`` failures from any address
lock the name for addresses it never signed in from. The right password from a known-good
address (one the account signed in from before) always gets through. An administrator's
unlock or password reset lifts every lock. Every success, failure, lock and unlock is
audited; passwords never.

Changing one's own password needs the current one; ``max-password-change-failures`` wrong
ones in a row end the session and lock its address out of sign-in like failed sign-ins.

Two-person rule: giving an account ``export.approve``, ``export.produce`` or
``users.manage`` (creating it with such a role, changing its role or areas, resetting its
password) is recorded as a pending change that a second administrator confirms
(``request_change`` / ``confirm_change``); the requester cannot confirm their own. Only
while no enabled account holds ``users.manage`` (bootstrapping, rescue from the shell) do
such changes apply at once. Each account records who created and who last changed it.

A session is a random token (``secrets.token_urlsafe(32)``) of which only the SHA-256 is
stored. Browser sessions (``kind="cookie"``) end after an idle time and at an absolute
expiry and carry a CSRF token; API tokens (``kind="token"``) live ``token-days`` and have no
idle timeout (``idle_timeout = 0`` in the table).

``authenticate`` runs on every request, HLS parts included, so sessions and users are
cached in memory. The database stays the truth: a cache entry is re-read when older than
``CACHE_TTL`` seconds (so a change made by another node or a CLI command applies within
that time), and dropped at once on any change made through this object. ``last_seen_at``
is written at most every ``LAST_SEEN_WRITE_INTERVAL`` seconds per session.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlalchemy.exc import IntegrityError

from gateway.access import headers, passwords
from gateway.access.audit import AuditLog
from gateway.access.directory import Directory, describe, directory_hash, directory_source
from gateway.access.guard import Principal
from gateway.access.policy import Policy, Subject
from gateway.config import SecurityConfig
from gateway.db import Database, login_addresses, pending_account_changes, sessions, users
from gateway.errors import BadRequest, Conflict, Forbidden, Gone, Locked, NotFound, TooManyRequests, Unauthorized, Unavailable
from gateway.interfaces import DirectoryAccount

logger = logging.getLogger(__name__)

CACHE_TTL = 2.0
LAST_SEEN_WRITE_INTERVAL = 30.0
THROTTLE_WINDOW = 60.0
#: Forget cached sessions nobody used for this long (they are re-read if they come back).
CACHE_IDLE_DROP = 600.0
USERNAME_RE = re.compile(r"^[a-z0-9._-]{2,64}$")
USERNAME_RULE = "a username is 2-64 characters: lower-case letters, digits, '.', '_' or '-'"
WRONG_CREDENTIALS = "wrong username or password"
KINDS = ("cookie", "token")
#: The ``client`` of the row counting an account's failures from every address.
ANY_ADDRESS = "*"
#: Actions whose grant needs a second administrator's confirmation (two-person rule).
#: ``users.manage`` is among them: otherwise one administrator could make a second
#: administrator account and confirm their own changes with it.
GUARDED_ACTIONS = frozenset({"export.approve", "export.produce", "users.manage"})
CHANGE_KINDS = ("create", "update", "reset-password")
NO_CHOSEN_PASSWORD = (
    "a password cannot be chosen for an account that needs a second administrator's confirmation: "
    "the confirming administrator receives its one-time password"
)
#: The browser session cookie (HttpOnly, SameSite=Strict; Secure and ``__Host-`` under HTTPS).
SESSION_COOKIE = headers.SESSION_COOKIE

Listener = Callable[[int], Any]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    role: str
    areas: frozenset[str]
    all_areas: bool
    disabled: bool
    must_change_password: bool
    failed_logins: int
    locked_until: float | None
    created_at: float
    last_login_at: float | None
    password_changed_at: float | None
    created_by: str | None = None
    created_confirmed_by: str | None = None
    changed_by: str | None = None
    changed_confirmed_by: str | None = None
    changed_at: float | None = None

    def locked(self, now: float) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def subject(self) -> Subject:
        return Subject(self.username, self.role, self.areas, self.all_areas, self.id)

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role,
            "areas": sorted(self.areas),
            "all_areas": self.all_areas,
            "disabled": self.disabled,
            "must_change_password": self.must_change_password,
            "locked_until": self.locked_until if self.locked(now) else None,
            "created_at": self.created_at,
            "last_login_at": self.last_login_at,
            **self.provenance(),
        }

    def provenance(self) -> dict[str, Any]:
        """Who created the account and who last changed it (with the confirming administrator)."""
        return {
            "created_by": self.created_by,
            "created_confirmed_by": self.created_confirmed_by,
            "changed_by": self.changed_by,
            "changed_confirmed_by": self.changed_confirmed_by,
            "changed_at": self.changed_at,
        }


@dataclass(frozen=True, slots=True)
class PendingChange:
    """An account change waiting for a second administrator (two-person rule)."""

    id: int
    kind: str  #: create | update | reset-password
    username: str
    payload: dict[str, Any]
    requested_by: str
    requested_at: float
    expires_at: float
    status: str  #: pending | confirmed | cancelled | failed
    decided_by: str | None
    decided_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "username": self.username, "changes": self.payload,
            "requested_by": self.requested_by, "requested_at": self.requested_at, "expires_at": self.expires_at,
            "status": self.status, "decided_by": self.decided_by, "decided_at": self.decided_at,
        }


@dataclass(slots=True)
class _CachedSession:
    id: str
    user_id: int
    kind: str
    name: str
    csrf_token: str
    expires_at: float
    idle_timeout: float  #: 0 for API tokens: no idle expiry
    last_seen: float  #: newest known activity (memory may be ahead of the database)
    written: float  #: last_seen value last written to the database
    loaded_at: float  #: monotonic time of the last database read


@dataclass(slots=True)
class _CachedUser:
    user: User
    loaded_at: float


@dataclass(slots=True)
class _Throttle:
    attempts: deque[float] = field(default_factory=deque)
    reported: bool = False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def lock_message(until: float) -> str:
    return f"account locked until {time.strftime('%H:%M', time.gmtime(until))} UTC after too many failed sign-ins"


def _user(row: Any) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        role=row["role"],
        areas=frozenset(row["areas"] or ()),
        all_areas=bool(row["all_areas"]),
        disabled=bool(row["disabled"]),
        must_change_password=bool(row["must_change_password"]),
        failed_logins=row["failed_logins"],
        locked_until=row["locked_until"],
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
        password_changed_at=row["password_changed_at"],
        created_by=row["created_by"],
        created_confirmed_by=row["created_confirmed_by"],
        changed_by=row["changed_by"],
        changed_confirmed_by=row["changed_confirmed_by"],
        changed_at=row["changed_at"],
    )


def _pending(row: Any) -> PendingChange:
    return PendingChange(**{c.name: row[c.name] for c in pending_account_changes.c})


_USER_COLUMNS = [c for c in users.c if c.name != "password_hash"]


class Identity:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        security: SecurityConfig,
        policy: Policy,
        *,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
        cache_ttl: float = CACHE_TTL,
        directory: Directory | None = None,
    ) -> None:
        self.db = db
        #: Sign-in providers (``[auth.*]``) asked for names without a local password.
        self.directory = directory
        self.audit = audit
        self.security = security
        self.policy = policy
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self._cache_ttl = cache_ttl
        self._sessions: dict[str, _CachedSession] = {}
        self._users: dict[int, _CachedUser] = {}
        self._loading: dict[str, asyncio.Future[bool]] = {}
        self._throttle: dict[str, _Throttle] = {}
        self._throttle_pruned_at = 0.0
        self._listeners: list[Listener] = []
        self._dummy_hash: str | None = None

    # ----------------------------------------------------------------------------------
    # change notifications

    def add_listener(self, callback: Listener) -> None:
        """``callback(user_id)`` runs after a user is disabled, re-roled, re-areaed or reset."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        self._listeners.remove(callback)

    async def _changed(self, user_id: int) -> None:
        self._forget_user(user_id)
        for callback in list(self._listeners):
            try:
                result = callback(user_id)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("identity: a change listener failed for user %d", user_id)

    def _forget_user(self, user_id: int) -> None:
        self._users.pop(user_id, None)
        for sid in [sid for sid, s in self._sessions.items() if s.user_id == user_id]:
            del self._sessions[sid]

    # ----------------------------------------------------------------------------------
    # accounts

    def _check_username(self, username: str) -> str:
        if not USERNAME_RE.match(username):
            raise BadRequest(f"invalid username {username!r}: {USERNAME_RULE}")
        return username

    def check_role(self, role: str) -> str:
        if role not in self.policy.roles:
            known = ", ".join(sorted(self.policy.roles))
            raise BadRequest(f"unknown role {role!r} (known: {known})")
        return role

    @staticmethod
    def _check_areas(areas: Iterable[str]) -> list[str]:
        clean = sorted({a.strip() for a in areas if a.strip()})
        for area in clean:
            if len(area) > 64:
                raise BadRequest(f"area name {area[:20]!r}... is longer than 64 characters")
        return clean

    def check_password(self, password: str, username: str) -> None:
        passwords.check_password(password, username=username, min_length=self.security.password_min_length)

    async def create_user(
        self,
        username: str,
        *,
        role: str,
        areas: Iterable[str] = (),
        all_areas: bool = False,
        display_name: str = "",
        password: str | None = None,
        by: str | None = None,
        confirmed_by: str | None = None,
    ) -> tuple[User, str | None]:
        """Create an account that must change its password at first sign-in.

        Returns the user and the generated password when none was given (shown once).
        The two-person rule is the caller's (``needs_second_person``): this applies at once.
        """
        self._check_username(username)
        self.check_role(role)
        area_list = self._check_areas(areas)
        if len(display_name) > 200:
            raise BadRequest("display name is longer than 200 characters")
        generated = None
        if password is None:
            password = generated = passwords.generate_password(username=username, min_length=self.security.password_min_length)
        else:
            self.check_password(password, username)
        password_hash = await passwords.hash_password(password, self._hasher)
        now = self._clock()
        try:
            async with self.db.begin() as conn:
                result = await conn.execute(
                    users.insert().values(
                        username=username, display_name=display_name, password_hash=password_hash, role=role,
                        areas=area_list, all_areas=all_areas, disabled=False, must_change_password=True,
                        failed_logins=0, created_at=now, updated_at=now, created_by=by, created_confirmed_by=confirmed_by,
                    )
                )
                user_id = result.inserted_primary_key[0]
        except IntegrityError:
            raise Conflict(f"user {username!r} already exists") from None
        detail = {"username": username, "role": role, "areas": area_list, "all_areas": all_areas}
        if confirmed_by is not None:
            detail["confirmed_by"] = confirmed_by
        await self.audit.record("user.create", user=by, detail=detail)
        logger.info("identity: created user %s (role %s)", username, role)
        user = await self._load_user(user_id)
        assert user is not None
        return user, generated

    async def ensure_first_admin(self) -> tuple[str, str] | None:
        """With no users at all, create ``admin`` (all areas, must change password).

        Returns the one-time credentials for ``citygate serve`` to print, else None.
        """
        async with self.db.connect() as conn:
            count = (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one()
        if count:
            return None
        if "admin" not in self.policy.roles:
            raise BadRequest("roles.toml defines no 'admin' role; create the first user with 'citygate users add'")
        try:
            _, password = await self.create_user("admin", role="admin", all_areas=True, display_name="Administrator", by="system")
        except Conflict:  # another node created it at the same moment
            return None
        assert password is not None
        return "admin", password

    async def list_users(self) -> list[User]:
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(*_USER_COLUMNS).order_by(users.c.username))).mappings().all()
        return [_user(r) for r in rows]

    async def get_user(self, username: str) -> User:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(*_USER_COLUMNS).where(users.c.username == username))).mappings().first()
        if row is None:
            raise NotFound(f"no user {username!r}")
        return _user(row)

    async def _load_user(self, user_id: int) -> User | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(*_USER_COLUMNS).where(users.c.id == user_id))).mappings().first()
        if row is None:
            self._users.pop(user_id, None)
            return None
        user = _user(row)
        self._users[user_id] = _CachedUser(user, time.monotonic())
        return user

    async def _update_user(self, username: str, *, by: str | None = None, confirmed_by: str | None = None, **values: Any) -> User:
        """Change the account (as ``by``, an administrator); returns it as it was before."""
        user = await self.get_user(username)
        now = self._clock()
        if by is not None:
            values.update(changed_by=by, changed_confirmed_by=confirmed_by, changed_at=now)
        async with self.db.begin() as conn:
            await conn.execute(users.update().where(users.c.id == user.id).values(updated_at=now, **values))
        return user

    @staticmethod
    def not_self(username: str, by: str | None, what: str) -> None:
        if by is not None and by == username:
            raise BadRequest(f"you cannot {what} your own account; ask another administrator")

    async def set_disabled(self, username: str, disabled: bool, *, by: str | None) -> User:
        """Disable (ends every session at once) or enable an account."""
        if disabled:
            self.not_self(username, by, "disable")
        user = await self._update_user(username, by=by, disabled=disabled)
        if disabled:
            await self._revoke(user.id)
        await self.audit.record("user.disable" if disabled else "user.enable", user=by, detail={"username": username})
        await self._changed(user.id)
        return await self.get_user(username)

    async def set_role(self, username: str, role: str, *, by: str | None, confirmed_by: str | None = None) -> User:
        self.check_role(role)
        self.not_self(username, by, "change the role of")
        before = await self._update_user(username, by=by, confirmed_by=confirmed_by, role=role)
        detail: dict[str, Any] = {"username": username, "role": role, "was": before.role}
        if confirmed_by is not None:
            detail["confirmed_by"] = confirmed_by
        await self.audit.record("user.set-role", user=by, detail=detail)
        await self._changed(before.id)
        return await self.get_user(username)

    async def set_areas(
        self, username: str, areas: Iterable[str], all_areas: bool, *, by: str | None, confirmed_by: str | None = None
    ) -> User:
        area_list = self._check_areas(areas)
        before = await self._update_user(username, by=by, confirmed_by=confirmed_by, areas=area_list, all_areas=all_areas)
        detail: dict[str, Any] = {
            "username": username, "areas": area_list, "all_areas": all_areas, "was": sorted(before.areas), "was_all_areas": before.all_areas,
        }
        if confirmed_by is not None:
            detail["confirmed_by"] = confirmed_by
        await self.audit.record("user.set-areas", user=by, detail=detail)
        await self._changed(before.id)
        return await self.get_user(username)

    async def set_display_name(self, username: str, display_name: str, *, by: str | None) -> User:
        if len(display_name) > 200:
            raise BadRequest("display name is longer than 200 characters")
        user = await self._update_user(username, by=by, display_name=display_name)
        await self.audit.record("user.set-name", user=by, detail={"username": username, "display_name": display_name})
        self._forget_user(user.id)
        return await self.get_user(username)

    async def _clear_locks(self, username: str) -> None:
        """Lift every sign-in lock of the name (from any address)."""
        async with self.db.begin() as conn:
            await conn.execute(
                login_addresses.update().where(login_addresses.c.username == username)
                .values(locked_until=None, failures=0, window_start=None, lockouts=0)
            )

    async def unlock(self, username: str, *, by: str | None) -> User:
        user = await self._update_user(username, by=by, locked_until=None, failed_logins=0, first_failed_at=None)
        await self._clear_locks(username)
        if user.locked(self._clock()):
            await self.audit.record("account.unlocked", user=by, detail={"username": username, "reason": "unlocked by administrator"})
        self._forget_user(user.id)
        return await self.get_user(username)

    async def reset_password(self, username: str, *, by: str | None, confirmed_by: str | None = None) -> str:
        """A new random password that must be changed; unlocks and ends every session."""
        user = await self.get_user(username)
        password = passwords.generate_password(username=username, min_length=self.security.password_min_length)
        password_hash = await passwords.hash_password(password, self._hasher)
        now = self._clock()
        await self._update_user(
            username, by=by, confirmed_by=confirmed_by, password_hash=password_hash, must_change_password=True,
            password_changed_at=now, locked_until=None, failed_logins=0, first_failed_at=None,
        )
        await self._clear_locks(username)
        revoked = await self._revoke(user.id)
        detail: dict[str, Any] = {"username": username, "sessions_revoked": revoked}
        if confirmed_by is not None:
            detail["confirmed_by"] = confirmed_by
        await self.audit.record("user.reset-password", user=by, detail=detail)
        if user.locked(now):
            await self.audit.record("account.unlocked", user=by, detail={"username": username, "reason": "password reset"})
        await self._changed(user.id)
        return password

    # ----------------------------------------------------------------------------------
    # two-person rule

    def guarded_role(self, role: str) -> bool:
        """True if the role carries an action whose grant needs a second administrator."""
        spec = self.policy.role(role)
        return spec is not None and bool(spec.actions & GUARDED_ACTIONS)

    async def _any_administrator(self) -> bool:
        roles = [name for name, role in self.policy.roles.items() if "users.manage" in role.actions]
        async with self.db.connect() as conn:
            found = (
                await conn.execute(sa.select(users.c.id).where(users.c.role.in_(roles), sa.not_(users.c.disabled)).limit(1))
            ).first()
        return found is not None

    async def needs_second_person(self, kind: str, username: str, changes: dict[str, Any]) -> bool:
        """Whether this change gives (or re-opens) an account a guarded action.

        ``create``: the new role is guarded. ``update``: the new role is guarded, or the
        account's (new) role is guarded and it gains areas. ``reset-password``: the account's
        role is guarded. While no enabled account holds ``users.manage`` nobody could confirm,
        so nothing needs it (bootstrapping the first administrators from the shell).
        """
        if kind == "create":
            guarded = self.guarded_role(changes["role"])
        else:
            user = await self.get_user(username)
            if kind == "reset-password":
                guarded = self.guarded_role(user.role)
            else:
                role = changes.get("role", user.role)
                new_role = "role" in changes and changes["role"] != user.role and self.guarded_role(role)
                areas = set(self._check_areas(changes.get("areas", user.areas)))
                all_areas = changes.get("all_areas", user.all_areas)
                wider = (all_areas and not user.all_areas) or (not user.all_areas and not areas <= user.areas)
                guarded = new_role or (self.guarded_role(role) and wider)
        return guarded and await self._any_administrator()

    async def request_change(self, kind: str, username: str, changes: dict[str, Any], *, by: str, client: str | None = None) -> PendingChange:
        """Record a change for a second administrator to confirm (validated now, applied then)."""
        if kind not in CHANGE_KINDS:
            raise BadRequest(f"unknown change {kind!r}")
        if kind == "create":
            self._check_username(username)
            self.check_role(changes["role"])
            changes = {**changes, "areas": self._check_areas(changes.get("areas", ()))}
            if "password" in changes:
                raise BadRequest(NO_CHOSEN_PASSWORD)
            async with self.db.connect() as conn:
                taken = (await conn.execute(sa.select(users.c.id).where(users.c.username == username))).first()
            if taken is not None:
                raise Conflict(f"user {username!r} already exists")
        else:
            await self.get_user(username)  # 404 before anything is recorded
            if "role" in changes:
                self.check_role(changes["role"])
                self.not_self(username, by, "change the role of")
            if "areas" in changes:
                changes = {**changes, "areas": self._check_areas(changes["areas"])}
        now = self._clock()
        expires_at = now + self.security.pending_change_hours * 3600
        async with self.db.begin() as conn:
            result = await conn.execute(
                pending_account_changes.insert().values(
                    kind=kind, username=username, payload=changes, requested_by=by, requested_at=now, expires_at=expires_at, status="pending",
                )
            )
            change_id = result.inserted_primary_key[0]
        await self.audit.record(
            "user.change-requested", user=by, client=client,
            detail={"id": change_id, "kind": kind, "username": username, "changes": changes, "reason": "needs a second administrator"},
        )
        logger.info("identity: %s asks a second administrator to confirm %s of %s (change %d)", by, kind, username, change_id)
        return await self.get_change(change_id)

    async def get_change(self, change_id: int) -> PendingChange:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(pending_account_changes).where(pending_account_changes.c.id == change_id))).mappings().first()
        if row is None:
            raise NotFound(f"no pending account change {change_id}")
        return _pending(row)

    async def pending_changes(self) -> list[PendingChange]:
        """Changes still waiting for a confirmation, oldest first."""
        p = pending_account_changes
        async with self.db.connect() as conn:
            rows = (
                await conn.execute(sa.select(p).where(p.c.status == "pending", p.c.expires_at > self._clock()).order_by(p.c.id))
            ).mappings().all()
        return [_pending(r) for r in rows]

    async def _refuse_change(self, action: str, change_id: int, by: str, client: str | None, reason: str) -> None:
        await self.audit.record(action, outcome="refused", user=by, client=client, detail={"id": change_id, "reason": reason})

    async def confirm_change(self, change_id: int, *, by: str, client: str | None = None) -> tuple[PendingChange, User, str | None]:
        """Apply a pending change as its second administrator.

        Returns the change, the account and a one-time password (created or reset accounts):
        the confirming administrator hands it over, never the requester.
        """
        change = await self.get_change(change_id)
        if change.status != "pending":
            await self._refuse_change("user.change-confirm", change_id, by, client, f"the change is {change.status}")
            raise Conflict(f"account change {change_id} is {change.status}, not pending")
        now = self._clock()
        if change.expires_at <= now:
            await self._refuse_change("user.change-confirm", change_id, by, client, "the change has expired")
            raise Gone(f"account change {change_id} expired; ask for it again")
        if change.requested_by == by:
            reason = "you asked for this change: another administrator must confirm it"
            await self._refuse_change("user.change-confirm", change_id, by, client, reason)
            raise Forbidden(reason)
        if change.username == by:
            reason = "you cannot confirm a change of your own account"
            await self._refuse_change("user.change-confirm", change_id, by, client, reason)
            raise Forbidden(reason)
        p = pending_account_changes
        async with self.db.begin() as conn:  # claim it: a concurrent confirmation loses
            claimed = await conn.execute(
                p.update().where(p.c.id == change_id, p.c.status == "pending").values(status="confirmed", decided_by=by, decided_at=now)
            )
        if claimed.rowcount == 0:
            raise Conflict(f"account change {change_id} was decided meanwhile")
        changes, requester = change.payload, change.requested_by
        password = None
        try:
            if change.kind == "create":
                user, password = await self.create_user(
                    change.username, role=changes["role"], areas=changes.get("areas", ()), all_areas=bool(changes.get("all_areas")),
                    display_name=changes.get("display_name", ""), by=requester, confirmed_by=by,
                )
            elif change.kind == "reset-password":
                password = await self.reset_password(change.username, by=requester, confirmed_by=by)
                user = await self.get_user(change.username)
            else:
                user = await self.get_user(change.username)
                if "role" in changes:
                    user = await self.set_role(change.username, changes["role"], by=requester, confirmed_by=by)
                if "areas" in changes or "all_areas" in changes:
                    user = await self.set_areas(
                        change.username, changes.get("areas", user.areas), changes.get("all_areas", user.all_areas),
                        by=requester, confirmed_by=by,
                    )
        except Exception:
            async with self.db.begin() as conn:
                await conn.execute(p.update().where(p.c.id == change_id).values(status="failed"))
            raise
        await self.audit.record(
            "user.change-confirmed", user=by, client=client,
            detail={"id": change_id, "kind": change.kind, "username": change.username, "requested_by": requester},
        )
        return await self.get_change(change_id), user, password

    async def cancel_change(self, change_id: int, *, by: str, client: str | None = None) -> PendingChange:
        """Withdraw (the requester) or reject (another administrator) a pending change."""
        change = await self.get_change(change_id)
        p = pending_account_changes
        async with self.db.begin() as conn:
            result = await conn.execute(
                p.update().where(p.c.id == change_id, p.c.status == "pending").values(status="cancelled", decided_by=by, decided_at=self._clock())
            )
        if result.rowcount == 0:
            raise Conflict(f"account change {change_id} is {change.status}, not pending")
        await self.audit.record(
            "user.change-cancelled", user=by, client=client,
            detail={"id": change_id, "kind": change.kind, "username": change.username, "requested_by": change.requested_by},
        )
        return await self.get_change(change_id)

    async def provenance(self, usernames: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Who created and who last changed each of these accounts."""
        names = sorted({u for u in usernames if u})
        if not names:
            return {}
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(*_USER_COLUMNS).where(users.c.username.in_(names)))).mappings().all()
        return {r["username"]: _user(r).provenance() for r in rows}

    async def change_password(self, principal: Principal, old: str, new: str, *, client: str | None = None) -> None:
        """The user's own change: needs the current password; ends their other sessions.

        ``max-password-change-failures`` wrong current passwords in a row end this session
        (a stolen session cannot guess the password) and lock its address out of sign-in.
        """
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(users.c.password_hash).where(users.c.id == principal.user_id))).first()
        if row is None:
            raise NotFound("the account no longer exists")
        source = directory_source(row.password_hash)
        if source is not None:
            raise BadRequest(f"this account signs in through the directory ({source}): change the password there")
        if not await passwords.verify_password(row.password_hash, old, self._hasher):
            await self._wrong_current_password(principal, client)  # raises
        self.check_password(new, principal.username)
        if new == old:
            raise BadRequest("the new password must differ from the current one")
        password_hash = await passwords.hash_password(new, self._hasher)
        now = self._clock()
        async with self.db.begin() as conn:
            await conn.execute(
                users.update().where(users.c.id == principal.user_id)
                .values(password_hash=password_hash, must_change_password=False, password_changed_at=now, updated_at=now)
            )
            await conn.execute(sessions.update().where(sessions.c.id == principal.session_id).values(password_failures=0))
        revoked = await self._revoke(principal.user_id, keep=principal.session_id)
        await self.audit.record("password.change", user=principal.username, client=client, detail={"other_sessions_revoked": revoked})
        self._forget_user(principal.user_id)

    async def _wrong_current_password(self, principal: Principal, client: str | None) -> None:
        limit = self.security.max_password_change_failures
        async with self.db.begin() as conn:
            count = (
                await conn.execute(
                    sessions.update().where(sessions.c.id == principal.session_id)
                    .values(password_failures=sessions.c.password_failures + 1)
                    .returning(sessions.c.password_failures)
                )
            ).scalar_one_or_none() or limit
        await self.audit.record(
            "password.change", outcome="failed", user=principal.username, client=client,
            detail={"reason": "wrong current password", "failures": count, "session": principal.session_id[:12]},
        )
        if count < limit:
            left = limit - count
            raise Forbidden(f"the current password is wrong ({left} attempt{'s' if left != 1 else ''} left in this session)")
        now = self._clock()
        await self.end_session(principal.session_id, client=client, reason=f"{count} wrong current passwords")
        until = await self._lock(principal.username, (client or "?")[:100], now, user_id=principal.user_id)
        await self.audit.record(
            "account.locked", user=principal.username, client=client,
            detail={"reason": f"{count} wrong current passwords in one session", "until": until, "address": client or "?"},
        )
        logger.warning("identity: ended a session of %s after %d wrong current passwords (from %s)", principal.username, count, client)
        raise Unauthorized("too many wrong current passwords: this session has ended; sign in again")

    # ----------------------------------------------------------------------------------
    # sign-in

    # ----------------------------------------------------------------------------------
    # directory accounts (``[auth.*]``, see gateway.access.directory)

    async def _directory_sign_in(self, found: tuple[str, DirectoryAccount], row: Any, client: str | None) -> Any:
        """The directory accepted the password: refuse a person in no mapped group, else
        create or update the local account from the directory's answer; the fresh row."""
        pid, account = found
        if account.role is None:
            if row is not None:
                await self._end_directory_sessions(row["id"], row["username"], pid, "in no directory group mapped to a Citygate role")
            await self.audit.record(
                "login.failed", outcome="refused", user=account.username, client=client,
                detail={"reason": "in no directory group mapped to a Citygate role", "source": pid},
            )
            raise Forbidden("your directory account is in no group that may use Citygate; ask your administrator")
        return await self._sync_directory_account(pid, account, row)

    async def _sync_directory_account(self, pid: str, account: DirectoryAccount, row: Any) -> Any:
        """Create or update the local account so role, areas and name follow the directory."""
        by = f"directory:{pid}"
        role = self.check_role(account.role or "")
        areas = self._check_areas(account.areas)
        now = self._clock()
        if row is None:
            self._check_username(account.username)
            try:
                async with self.db.begin() as conn:
                    await conn.execute(
                        users.insert().values(
                            username=account.username, display_name=account.display_name[:200], password_hash=directory_hash(pid),
                            role=role, areas=areas, all_areas=account.all_areas, disabled=False, must_change_password=False,
                            failed_logins=0, created_at=now, updated_at=now, created_by=by,
                        )
                    )
            except IntegrityError:  # a concurrent first sign-in created it
                pass
            else:
                await self.audit.record(
                    "user.create", user=by, detail={"username": account.username, "source": pid, **describe(account), "areas": areas}
                )
                logger.info("identity: created %s from directory %s (role %s)", account.username, pid, role)
        else:
            values: dict[str, Any] = {}
            if row["role"] != role:
                values["role"] = role
            if sorted(row["areas"] or ()) != areas or bool(row["all_areas"]) != account.all_areas:
                values.update(areas=areas, all_areas=account.all_areas)
            if account.display_name and row["display_name"] != account.display_name[:200]:
                values["display_name"] = account.display_name[:200]
            if row["password_hash"] != directory_hash(pid):
                values["password_hash"] = directory_hash(pid)
            if values:
                async with self.db.begin() as conn:
                    await conn.execute(
                        users.update().where(users.c.id == row["id"]).values(updated_at=now, changed_by=by, changed_at=now, **values)
                    )
                if "role" in values:
                    await self.audit.record("user.set-role", user=by, detail={"username": row["username"], "role": role, "was": row["role"]})
                if "areas" in values:
                    await self.audit.record(
                        "user.set-areas", user=by,
                        detail={"username": row["username"], "areas": areas, "all_areas": account.all_areas,
                                "was": sorted(row["areas"] or ()), "was_all_areas": bool(row["all_areas"])},
                    )
                await self._changed(row["id"])
        async with self.db.connect() as conn:
            fresh = (await conn.execute(sa.select(users).where(users.c.username == account.username))).mappings().first()
        assert fresh is not None
        return fresh

    async def _end_directory_sessions(self, user_id: int, username: str, pid: str, reason: str) -> int:
        revoked = await self._revoke(user_id)
        if revoked:
            await self.audit.record(
                "session.ended", user=f"directory:{pid}", detail={"username": username, "sessions": revoked, "reason": reason}
            )
            logger.info("identity: ended %d session(s) of %s: %s", revoked, username, reason)
        await self._changed(user_id)
        return revoked

    async def directory_accounts_in_use(self, pid: str) -> list[str]:
        """Usernames of ``pid``'s accounts that have open sessions."""
        now = self._clock()
        q = (
            sa.select(users.c.username).distinct().join_from(users, sessions, sessions.c.user_id == users.c.id)
            .where(users.c.password_hash == directory_hash(pid), sessions.c.revoked_at.is_(None), sessions.c.expires_at > now)
        )
        async with self.db.connect() as conn:
            return sorted((await conn.execute(q)).scalars().all())

    async def apply_directory_lookup(self, pid: str, username: str, account: DirectoryAccount | None) -> None:
        """What the directory says now about an account with sessions: end them if it was
        removed, disabled or left every mapped group; else role and areas follow it."""
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.username == username))).mappings().first()
        if row is None or directory_source(row["password_hash"]) != pid:
            return
        if account is None:
            await self._end_directory_sessions(row["id"], username, pid, "removed or disabled in the directory")
        elif account.role is None:
            await self._end_directory_sessions(row["id"], username, pid, "in no directory group mapped to a Citygate role")
        else:
            await self._sync_directory_account(pid, account, row)

    def _throttled(self, client: str, now: float) -> bool:
        """Count an attempt; True if the client is over its per-minute budget."""
        if now - self._throttle_pruned_at >= THROTTLE_WINDOW:  # forget quiet clients, once a window
            self._throttle_pruned_at = now
            for key in [k for k, t in self._throttle.items() if not t.attempts or t.attempts[-1] <= now - THROTTLE_WINDOW]:
                del self._throttle[key]
        entry = self._throttle.setdefault(client, _Throttle())
        while entry.attempts and entry.attempts[0] <= now - THROTTLE_WINDOW:
            entry.attempts.popleft()
        if len(entry.attempts) >= self.security.login_attempts_per_minute_per_client:
            return True
        entry.attempts.append(now)
        entry.reported = False
        return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await passwords.hash_password(secrets.token_urlsafe(16), self._hasher)
        return self._dummy_hash

    async def _addresses(self, username: str, client: str) -> dict[str, Any]:
        """The rows of (username, client) and (username, any address), by client."""
        async with self.db.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(login_addresses).where(
                        login_addresses.c.username == username, login_addresses.c.client.in_((client, ANY_ADDRESS))
                    )
                )
            ).mappings().all()
        return {r["client"]: r for r in rows}

    async def login(
        self,
        username: str,
        password: str,
        *,
        client: str | None = None,
        user_agent: str = "",
        kind: str = "cookie",
        token_name: str = "",
    ) -> tuple[Principal, str]:
        """Check the credentials and open a session; returns the principal and its token.

        Raises ``Unauthorized`` (wrong credentials, same for unknown users), ``Locked`` (this
        name is locked from this address; the same for unknown names), ``Forbidden``
        (disabled account, right password) or ``TooManyRequests`` (the address's budget).
        """
        if kind not in KINDS:
            raise BadRequest(f"kind must be 'cookie' or 'token', not {kind!r}")
        now = self._clock()
        client_key = (client or "?")[:100]
        shown = username.strip().lower()[:64]
        await self.count_attempt(client, shown)
        async with self.db.connect() as conn:
            row = (
                await conn.execute(sa.select(users).where(users.c.username == shown))
            ).mappings().first()
        # The password first, for every name: the work and the answer never tell whether
        # the account exists or is locked.
        found: tuple[str, DirectoryAccount] | None = None
        if self._directory_checks(row):
            try:  # no local password: the directory checks it (local accounts never reach it)
                found = await self.directory.login(shown, password)
            except Unavailable as exc:
                await self.audit.record(
                    "login.failed", outcome="failed", user=shown, client=client, detail={"reason": f"directory unavailable: {exc}"}
                )
                raise
            right = found is not None
        elif row is None:
            await passwords.verify_password(await self._dummy(), password, self._hasher)
            right = False
        else:
            right = await passwords.verify_password(row["password_hash"], password, self._hasher)
        rows = await self._addresses(shown, client_key)
        here, anywhere = rows.get(client_key), rows.get(ANY_ADDRESS)
        known_good = here is not None and here["last_ok_at"] is not None
        locked_until = None
        if here is not None and here["locked_until"] is not None and here["locked_until"] > now:
            locked_until = here["locked_until"]
        elif not known_good and anywhere is not None and anywhere["locked_until"] is not None and anywhere["locked_until"] > now:
            locked_until = anywhere["locked_until"]
        if locked_until is not None and not (right and known_good):
            await self.audit.record(
                "login.failed", outcome="refused", user=shown, client=client,
                detail={"reason": "locked from this address" if here is not None and locked_until == here["locked_until"]
                        else "locked for new addresses", "password": "right" if right else "wrong"},
            )
            raise Locked(lock_message(locked_until))
        if not right:
            reason = "wrong password or unknown in the directory" if self._directory_checks(row) else None
            await self._failed(shown, row, client, client_key, now, reason=reason)  # raises
        if found is not None:
            row = await self._directory_sign_in(found, row, client)
        user = _user(row)
        if user.disabled:
            await self.audit.record("login.failed", outcome="refused", user=shown, client=client, detail={"reason": "account disabled"})
            raise Forbidden("this account is disabled; ask an administrator")

        values: dict[str, Any] = {"last_login_at": now}
        if found is None and passwords.needs_rehash(row["password_hash"], self._hasher):
            values["password_hash"] = await passwords.hash_password(password, self._hasher)
        async with self.db.begin() as conn:
            await conn.execute(users.update().where(users.c.id == user.id).values(**values))
        await self._remember_address(shown, client_key, now)
        if locked_until is not None:
            await self.audit.record(
                "login.ok", user=shown, client=client, detail={"reason": "right password from a known-good address while locked"}
            )
        elif here is not None and here["locked_until"] is not None:
            await self.audit.record("account.unlocked", user=shown, client=client, detail={"reason": "lock expired"})

        return await self._open_session(user, kind=kind, token_name=token_name, client=client, user_agent=user_agent, now=now)

    async def count_attempt(self, client: str | None, username: str | None = None) -> None:
        """Count a sign-in attempt against the address's per-minute budget (password and
        redirect sign-ins alike); ``TooManyRequests`` (audited once per burst) over it."""
        now = self._clock()
        client_key = (client or "?")[:100]
        if self._throttled(client_key, now):
            entry = self._throttle[client_key]
            if not entry.reported:  # one entry per burst, so a flood cannot flood the log
                entry.reported = True
                await self.audit.record("login.throttled", outcome="refused", user=username, client=client)
            retry = max(1, int(entry.attempts[0] + THROTTLE_WINDOW - now) + 1)
            raise TooManyRequests(f"too many sign-in attempts from your address; try again in {retry} s")

    def _directory_checks(self, row: Any) -> bool:
        """Whether a password sign-in of this account (None: unknown name) goes to the
        directory: it has no local password and a configured provider checks passwords."""
        return (
            self.directory is not None and self.directory.takes_passwords
            and (row is None or directory_source(row["password_hash"]) is not None)
        )

    async def redirect_login(
        self, pid: str, account: DirectoryAccount, *, client: str | None = None, user_agent: str = ""
    ) -> tuple[Principal, str]:
        """Open a browser session for a person a redirect provider (OIDC) vouched for.

        The local account is created or updated from ``account`` (role and areas follow the
        provider). Refused (``Forbidden``, audited as ``login.failed``): a name that is not a
        valid username, a name held by a local account or another directory's account (never
        taken over), a person in no mapped group, an account disabled here.
        """
        now = self._clock()
        shown = account.username.strip().lower()[:64]

        async def refuse(reason: str, message: str) -> None:
            await self.audit.record("login.failed", outcome="refused", user=shown, client=client, detail={"reason": reason, "source": pid})
            raise Forbidden(message)

        if not USERNAME_RE.match(shown):
            await refuse(f"the provider's username {account.username!r} is not a valid Citygate username", f"{USERNAME_RULE}; ask your administrator")
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.username == shown))).mappings().first()
        if row is not None and directory_source(row["password_hash"]) != pid:
            source = directory_source(row["password_hash"])
            holder = "a local account" if source is None else f"an account of directory {source!r}"
            await refuse(f"{holder} has this name", f"the name {shown!r} belongs to {holder} here; ask your administrator")
        if shown != account.username:
            account = DirectoryAccount(shown, account.role, account.areas, account.all_areas, account.display_name, account.groups)
        row = await self._directory_sign_in((pid, account), row, client)
        user = _user(row)
        if user.disabled:
            await refuse("account disabled", "this account is disabled; ask an administrator")
        async with self.db.begin() as conn:
            await conn.execute(users.update().where(users.c.id == user.id).values(last_login_at=now))
        return await self._open_session(user, kind="cookie", client=client, user_agent=user_agent, now=now, source=pid)

    async def _open_session(
        self, user: User, *, kind: str, token_name: str = "", client: str | None, user_agent: str, now: float, source: str | None = None
    ) -> tuple[Principal, str]:
        token = secrets.token_urlsafe(32)
        sid = hash_token(token)
        csrf = secrets.token_urlsafe(24)
        if kind == "cookie":
            expires_at = now + self.security.session_absolute_hours * 3600
            idle = self.security.session_idle_minutes * 60
        else:
            expires_at = now + self.security.token_days * 86400
            idle = 0.0
        async with self.db.begin() as conn:
            await conn.execute(
                sessions.insert().values(
                    id=sid, user_id=user.id, kind=kind, name=token_name[:200], csrf_token=csrf, created_at=now,
                    last_seen_at=now, expires_at=expires_at, idle_timeout=idle, client=(client or "")[:100],
                    user_agent=user_agent[:300],
                )
            )
        await self.audit.record(
            "login.ok", user=user.username, client=client,
            detail={"kind": kind, **({"name": token_name[:200]} if token_name else {}), "session": sid[:12],
                    **({"source": source} if source else {})},
        )
        self._sessions[sid] = _CachedSession(
            sid, user.id, kind, token_name, csrf, expires_at, idle, now, now, time.monotonic()
        )
        fresh = await self._load_user(user.id)
        assert fresh is not None
        return self._principal(self._sessions[sid], fresh), token

    async def _remember_address(self, username: str, client: str, now: float) -> None:
        """A successful sign-in: the address becomes known-good and its failures are forgotten."""
        values = {"failures": 0, "window_start": None, "locked_until": None, "lockouts": 0, "last_ok_at": now}
        async with self.db.begin() as conn:
            updated = await conn.execute(
                login_addresses.update()
                .where(login_addresses.c.username == username, login_addresses.c.client == client).values(**values)
            )
            if updated.rowcount == 0:
                try:
                    async with conn.begin_nested():
                        await conn.execute(login_addresses.insert().values(username=username, client=client, **values))
                except IntegrityError:  # a concurrent sign-in inserted it
                    pass

    async def _count_failure(self, username: str, client: str, now: float) -> tuple[int, int]:
        """Count a failure of (username, client) within the window; (failures, lockouts so far)."""
        window_start = now - self.security.failed_login_window
        a = login_addresses
        restart = sa.or_(a.c.window_start.is_(None), a.c.window_start < window_start)
        for _ in range(2):
            async with self.db.begin() as conn:
                row = (
                    await conn.execute(
                        a.update().where(a.c.username == username, a.c.client == client)
                        .values(
                            failures=sa.case((restart, 1), else_=a.c.failures + 1),
                            window_start=sa.case((restart, now), else_=a.c.window_start),
                            last_failed_at=now,
                        )
                        .returning(a.c.failures, a.c.lockouts)
                    )
                ).first()
                if row is not None:
                    return row.failures, row.lockouts
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            a.insert().values(username=username, client=client, failures=1, window_start=now, lockouts=0, last_failed_at=now)
                        )
                    return 1, 0
                except IntegrityError:  # a concurrent failure inserted it: count again
                    continue
        return 1, 0

    async def _lock(self, username: str, client: str, now: float, *, user_id: int | None = None) -> float:
        """Lock (username, client); each lock in a row lasts twice as long. Returns the end."""
        a = login_addresses
        async with self.db.connect() as conn:
            lockouts = (
                await conn.execute(sa.select(a.c.lockouts).where(a.c.username == username, a.c.client == client))
            ).scalar_one_or_none() or 0
        minutes = min(self.security.lockout_minutes * 2 ** min(lockouts, 30), self.security.lockout_max_minutes)
        until = now + minutes * 60
        values = {"locked_until": until, "lockouts": lockouts + 1, "failures": 0, "window_start": None, "last_failed_at": now}
        async with self.db.begin() as conn:
            updated = await conn.execute(a.update().where(a.c.username == username, a.c.client == client).values(**values))
            if updated.rowcount == 0:
                try:
                    async with conn.begin_nested():
                        await conn.execute(a.insert().values(username=username, client=client, **values))
                except IntegrityError:
                    pass
            if user_id is not None:  # shown to administrators (the newest lock of the account)
                await conn.execute(
                    users.update().where(users.c.id == user_id, sa.or_(users.c.locked_until.is_(None), users.c.locked_until < until))
                    .values(locked_until=until)
                )
        if user_id is not None:
            self._forget_user(user_id)
        return until

    async def _failed(self, username: str, row: Any, client: str | None, client_key: str, now: float, *, reason: str | None = None) -> None:
        """A wrong password (or an unknown name, counted alike): count it, lock when due, raise."""
        user_id = row["id"] if row is not None else None
        count, _ = await self._count_failure(username, client_key, now)
        account_count, _ = await self._count_failure(username, ANY_ADDRESS, now)
        await self.audit.record(
            "login.failed", outcome="failed", user=username, client=client,
            detail={"reason": reason or ("wrong password" if row is not None else "unknown user"), "failures": count},
        )
        locked_until = None
        if count >= self.security.max_failed_logins:
            locked_until = await self._lock(username, client_key, now, user_id=user_id)
            reason = f"{count} failed sign-ins from {client_key} within {self.security.failed_login_window:g} s"
            address = client_key
        if account_count >= self.security.max_failed_logins_per_account:
            account_until = await self._lock(username, ANY_ADDRESS, now, user_id=user_id)
            if locked_until is None:
                locked_until = account_until
                reason = f"{account_count} failed sign-ins from any address within {self.security.failed_login_window:g} s"
                address = "any address it never signed in from"
        if locked_until is not None:
            await self.audit.record(
                "account.locked", outcome="ok", user=username, client=client,
                detail={"reason": reason, "until": locked_until, "address": address, **({} if row is not None else {"unknown_user": True})},
            )
            logger.warning("identity: sign-in of %s locked for %s after repeated failures", username, address)
            raise Locked(lock_message(locked_until))
        raise Unauthorized(WRONG_CREDENTIALS)

    # ----------------------------------------------------------------------------------
    # sessions

    def _principal(self, s: _CachedSession, user: User) -> Principal:
        return Principal(
            user_id=user.id,
            username=user.username,
            role=user.role,
            areas=user.areas,
            all_areas=user.all_areas,
            session_id=s.id,
            kind=s.kind,
            csrf_token=s.csrf_token,
            must_change_password=user.must_change_password,
            expires_at=s.expires_at if s.idle_timeout <= 0 else min(s.expires_at, s.last_seen + s.idle_timeout),
        )

    def _valid(self, s: _CachedSession, user: User, now: float) -> bool:
        if user.disabled or now >= s.expires_at:
            return False
        return s.idle_timeout <= 0 or now - s.last_seen < s.idle_timeout

    async def authenticate(self, token: str) -> Principal | None:
        """The principal of a session token, or None (unknown, revoked, expired, disabled).

        Counts as activity: keeps a browser session from idling out.
        """
        if not token or len(token) > 200:
            return None
        return await self.principal_for_session(hash_token(token), touch=True)

    def forget_cached(self) -> None:
        """Drop every cached session and account: another node changed some (sessions
        ended, accounts disabled), so the next check reads the database."""
        self._sessions.clear()
        self._users.clear()

    async def principal_for_session(self, session_id: str, *, touch: bool = False) -> Principal | None:
        """The current principal of a session by its id (the token's hash), or None."""
        mono = time.monotonic()
        s = self._sessions.get(session_id)
        cached_user = self._users.get(s.user_id) if s is not None else None
        if s is None or cached_user is None or mono - s.loaded_at > self._cache_ttl or mono - cached_user.loaded_at > self._cache_ttl:
            if not await self._reload(session_id):
                return None
            s = self._sessions[session_id]
            cached_user = self._users[s.user_id]
        now = self._clock()
        user = cached_user.user
        if not self._valid(s, user, now):
            self._sessions.pop(session_id, None)
            return None
        if touch:
            s.last_seen = max(s.last_seen, now)
            if s.last_seen - s.written >= LAST_SEEN_WRITE_INTERVAL:
                s.written = s.last_seen
                async with self.db.begin() as conn:
                    await conn.execute(
                        sessions.update().where(sessions.c.id == session_id, sessions.c.last_seen_at < s.last_seen)
                        .values(last_seen_at=s.last_seen)
                    )
        return self._principal(s, user)

    async def _reload(self, session_id: str) -> bool:
        """Re-read a session and its user; concurrent callers share one query."""
        pending = self._loading.get(session_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._loading[session_id] = future
        try:
            found = await self._read_session(session_id)
            future.set_result(found)
            return found
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved when nobody else waits
            raise
        finally:
            del self._loading[session_id]

    async def _read_session(self, session_id: str) -> bool:
        q = (
            sa.select(
                sessions.c.id.label("sid"), sessions.c.kind, sessions.c.name, sessions.c.csrf_token, sessions.c.expires_at,
                sessions.c.idle_timeout, sessions.c.revoked_at, sessions.c.last_seen_at, *_USER_COLUMNS,
            )
            .join_from(sessions, users, sessions.c.user_id == users.c.id)
            .where(sessions.c.id == session_id)
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(q)).mappings().first()
        if row is None or row["revoked_at"] is not None:
            self._sessions.pop(session_id, None)
            return False
        mono = time.monotonic()
        user = _user(row)
        self._users[user.id] = _CachedUser(user, mono)
        old = self._sessions.get(session_id)
        last_seen = max(row["last_seen_at"], old.last_seen if old else 0.0)
        written = max(row["last_seen_at"], old.written if old else 0.0)
        self._sessions[session_id] = _CachedSession(
            session_id, user.id, row["kind"], row["name"], row["csrf_token"], row["expires_at"], row["idle_timeout"],
            last_seen, written, mono,
        )
        return True

    async def subject_for(self, user_id: int) -> User | None:
        """The user's current role, areas and disabled flag (cached up to ``CACHE_TTL``)."""
        cached = self._users.get(user_id)
        if cached is not None and time.monotonic() - cached.loaded_at <= self._cache_ttl:
            return cached.user
        return await self._load_user(user_id)

    async def logout(self, token: str, *, client: str | None = None) -> bool:
        return await self.end_session(hash_token(token), client=client)

    async def end_session(self, session_id: str, *, client: str | None = None, reason: str | None = None) -> bool:
        """Revoke one session (sign-out, or ended for ``reason``); True if it was open."""
        now = self._clock()
        async with self.db.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(sessions.c.user_id, users.c.username)
                    .join_from(sessions, users, sessions.c.user_id == users.c.id)
                    .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
                )
            ).first()
            if row is None:
                self._sessions.pop(session_id, None)
                return False
            await conn.execute(sessions.update().where(sessions.c.id == session_id).values(revoked_at=now))
        self._sessions.pop(session_id, None)
        if reason is None:
            await self.audit.record("logout", user=row.username, client=client, detail={"session": session_id[:12]})
        else:
            await self.audit.record("session.ended", user=row.username, client=client, detail={"session": session_id[:12], "reason": reason})
        return True

    async def revoke_sessions(self, user_id: int, *, keep: str | None = None) -> int:
        """End every open session of a user (but ``keep``); returns how many."""
        revoked = await self._revoke(user_id, keep=keep)
        await self._changed(user_id)
        return revoked

    async def _revoke(self, user_id: int, *, keep: str | None = None) -> int:
        q = sessions.update().where(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
        if keep is not None:
            q = q.where(sessions.c.id != keep)
        async with self.db.begin() as conn:
            result = await conn.execute(q.values(revoked_at=self._clock()))
        for sid in [sid for sid, s in self._sessions.items() if s.user_id == user_id and sid != keep]:
            del self._sessions[sid]
        return result.rowcount

    async def purge(self) -> int:
        """Delete sessions that ended over a day ago, forget idle cache entries and sign-in
        failures of addresses that never signed in (a day after their last failure and lock)."""
        now = self._clock()
        mono = time.monotonic()
        for sid in [sid for sid, s in self._sessions.items() if mono - s.loaded_at > CACHE_IDLE_DROP]:
            del self._sessions[sid]
        for uid in [uid for uid, u in self._users.items() if mono - u.loaded_at > CACHE_IDLE_DROP]:
            del self._users[uid]
        cutoff = now - 86400
        async with self.db.begin() as conn:
            result = await conn.execute(
                sessions.delete().where(
                    sa.or_(
                        sessions.c.expires_at < cutoff,
                        sessions.c.revoked_at < cutoff,
                        sa.and_(sessions.c.idle_timeout > 0, sessions.c.last_seen_at + sessions.c.idle_timeout < cutoff),
                    )
                )
            )
            a = login_addresses
            await conn.execute(
                a.delete().where(
                    a.c.last_ok_at.is_(None), a.c.last_failed_at < cutoff, sa.or_(a.c.locked_until.is_(None), a.c.locked_until < cutoff)
                )
            )
        return result.rowcount
