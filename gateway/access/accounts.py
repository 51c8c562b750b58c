"""Individual accounts (one ``Identity`` job): create, change, disable, unlock, reset; the
two-person rule; changing one's own password.

Every person has their own account (no shared logins): a role, a set of areas, a password
hashed with Argon2id. New accounts and reset passwords are random and must be changed at
the first sign-in.

Two-person rule: giving an account ``export.approve``, ``export.produce`` or
``users.manage`` (creating it with such a role, changing its role or areas, resetting its
password) is recorded as a pending change that a second administrator confirms
(``request_change`` / ``confirm_change``); the requester cannot confirm their own. Only
while no enabled account holds ``users.manage`` (bootstrapping, rescue from the shell) do
such changes apply at once. Each account records who created and who last changed it.

Changing one's own password needs the current one; ``max-password-change-failures`` wrong
ones in a row end the session and lock its address out of sign-in like failed sign-ins.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlalchemy.exc import IntegrityError

from gateway.access import passwords
from gateway.access.audit import AuditLog
from gateway.access.directory import directory_source
from gateway.access.guard import Principal
from gateway.access.policy import Policy, Subject
from gateway.config import SecurityConfig
from gateway.db import Database, login_addresses, pending_account_changes, sessions, users
from gateway.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unauthorized

logger = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[a-z0-9._-]{2,64}$")
USERNAME_RULE = "a username is 2-64 characters: lower-case letters, digits, '.', '_' or '-'"
#: Actions whose grant needs a second administrator's confirmation (two-person rule).
#: ``users.manage`` is among them: otherwise one administrator could make a second
#: administrator account and confirm their own changes with it.
GUARDED_ACTIONS = frozenset({"export.approve", "export.produce", "users.manage"})
CHANGE_KINDS = ("create", "update", "reset-password")
NO_CHOSEN_PASSWORD = (
    "a password cannot be chosen for an account that needs a second administrator's confirmation: "
    "the confirming administrator receives its one-time password"
)


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
class CachedUser:
    user: User
    loaded_at: float


def user_from_row(row: Any) -> User:
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


def pending_from_row(row: Any) -> PendingChange:
    return PendingChange(**{c.name: row[c.name] for c in pending_account_changes.c})


USER_COLUMNS = [c for c in users.c if c.name != "password_hash"]


class Accounts:
    """The accounts part of ``Identity`` (``gateway.access.identity``), which holds the state
    below. Uses the sign-in part's locks (``_lock``, ``_clear_locks``) and the sessions part's
    ``end_session``/``_revoke``."""

    db: Database
    audit: AuditLog
    security: SecurityConfig
    _clock: Callable[[], float]
    policy: Policy
    _hasher: PasswordHasher
    _users: dict[int, CachedUser]

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
            rows = (await conn.execute(sa.select(*USER_COLUMNS).order_by(users.c.username))).mappings().all()
        return [user_from_row(r) for r in rows]

    async def get_user(self, username: str) -> User:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(*USER_COLUMNS).where(users.c.username == username))).mappings().first()
        if row is None:
            raise NotFound(f"no user {username!r}")
        return user_from_row(row)

    async def _load_user(self, user_id: int) -> User | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(*USER_COLUMNS).where(users.c.id == user_id))).mappings().first()
        if row is None:
            self._users.pop(user_id, None)
            return None
        user = user_from_row(row)
        self._users[user_id] = CachedUser(user, time.monotonic())
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
        return pending_from_row(row)

    async def pending_changes(self) -> list[PendingChange]:
        """Changes still waiting for a confirmation, oldest first."""
        p = pending_account_changes
        async with self.db.connect() as conn:
            rows = (
                await conn.execute(sa.select(p).where(p.c.status == "pending", p.c.expires_at > self._clock()).order_by(p.c.id))
            ).mappings().all()
        return [pending_from_row(r) for r in rows]

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
            rows = (await conn.execute(sa.select(*USER_COLUMNS).where(users.c.username.in_(names)))).mappings().all()
        return {r["username"]: user_from_row(r).provenance() for r in rows}

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
