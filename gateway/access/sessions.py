"""Sessions and API tokens (one ``Identity`` job): opening, checking on every request through
a cache, ending, purging.

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
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from gateway.access import headers
from gateway.access.accounts import USER_COLUMNS, CachedUser, User, user_from_row
from gateway.access.audit import AuditLog
from gateway.access.guard import Principal
from gateway.config import SecurityConfig
from gateway.db import Database, login_addresses, sessions, users

CACHE_TTL = 2.0
LAST_SEEN_WRITE_INTERVAL = 30.0
#: Forget cached sessions nobody used for this long (they are re-read if they come back).
CACHE_IDLE_DROP = 600.0
KINDS = ("cookie", "token")
#: The browser session cookie (HttpOnly, SameSite=Strict; Secure and ``__Host-`` under HTTPS).
SESSION_COOKIE = headers.SESSION_COOKIE


@dataclass(slots=True)
class CachedSession:
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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """The sessions part of ``Identity`` (``gateway.access.identity``), which holds the state
    below. Reads accounts through the accounts part's cache (``_load_user``)."""

    db: Database
    audit: AuditLog
    security: SecurityConfig
    _clock: Callable[[], float]
    _cache_ttl: float
    _sessions: dict[str, CachedSession]
    _users: dict[int, CachedUser]
    _loading: dict[str, asyncio.Future[bool]]

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
        self._sessions[sid] = CachedSession(
            sid, user.id, kind, token_name, csrf, expires_at, idle, now, now, time.monotonic()
        )
        fresh = await self._load_user(user.id)
        assert fresh is not None
        return self._principal(self._sessions[sid], fresh), token

    def _principal(self, s: CachedSession, user: User) -> Principal:
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

    def _valid(self, s: CachedSession, user: User, now: float) -> bool:
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
                sessions.c.idle_timeout, sessions.c.revoked_at, sessions.c.last_seen_at, *USER_COLUMNS,
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
        user = user_from_row(row)
        self._users[user.id] = CachedUser(user, mono)
        old = self._sessions.get(session_id)
        last_seen = max(row["last_seen_at"], old.last_seen if old else 0.0)
        written = max(row["last_seen_at"], old.written if old else 0.0)
        self._sessions[session_id] = CachedSession(
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
