"""Sign-in (one ``Identity`` job): password sign-in, directory (``[auth.*]``) and redirect
sign-in, throttling and locks.

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

A directory (LDAP, OIDC; ``gateway.access.directory``) answers for names without a local
password; its accounts are created and updated at sign-in, and their sessions end when the
directory no longer knows them.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlalchemy.exc import IntegrityError

from gateway.access import passwords
from gateway.access.accounts import USERNAME_RE, USERNAME_RULE, user_from_row
from gateway.access.audit import AuditLog
from gateway.access.directory import Directory, describe, directory_hash, directory_source
from gateway.access.guard import Principal
from gateway.access.sessions import KINDS
from gateway.config import SecurityConfig
from gateway.db import Database, login_addresses, sessions, users
from gateway.errors import BadRequest, Forbidden, Locked, TooManyRequests, Unauthorized, Unavailable
from gateway.interfaces import DirectoryAccount

logger = logging.getLogger(__name__)

THROTTLE_WINDOW = 60.0
WRONG_CREDENTIALS = "wrong username or password"
#: The ``client`` of the row counting an account's failures from every address.
ANY_ADDRESS = "*"


@dataclass(slots=True)
class Throttle:
    attempts: deque[float] = field(default_factory=deque)
    reported: bool = False


def lock_message(until: float) -> str:
    return f"account locked until {time.strftime('%H:%M', time.gmtime(until))} UTC after too many failed sign-ins"


class SignIn:
    """The sign-in part of ``Identity`` (``gateway.access.identity``), which holds the state
    below. Opens sessions through the sessions part (``_open_session``) and checks names, roles
    and areas through the accounts part."""

    db: Database
    audit: AuditLog
    security: SecurityConfig
    _clock: Callable[[], float]
    directory: Directory | None
    _hasher: PasswordHasher
    _throttle: dict[str, Throttle]
    _throttle_pruned_at: float
    _dummy_hash: str | None

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
        entry = self._throttle.setdefault(client, Throttle())
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
        user = user_from_row(row)
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
        user = user_from_row(row)
        if user.disabled:
            await refuse("account disabled", "this account is disabled; ask an administrator")
        async with self.db.begin() as conn:
            await conn.execute(users.update().where(users.c.id == user.id).values(last_login_at=now))
        return await self._open_session(user, kind="cookie", client=client, user_agent=user_agent, now=now, source=pid)

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
