"""Individual accounts, sign-in, sessions and API tokens: ``Identity``, one object over three jobs.

- ``gateway.access.accounts``: accounts (create, change, disable, unlock, reset), the
  two-person rule, changing one's own password;
- ``gateway.access.sign_in``: password, directory and redirect sign-in, throttling and locks;
- ``gateway.access.sessions``: sessions and API tokens, checked on every request through a
  cache, ended, purged.

``Identity`` holds the state the three share (the database, the audit log, the caches of
sessions and accounts, the throttle) and the change listeners (told when an account changes,
so live views and sockets of that account are re-checked). Its parts' names are re-exported
here for callers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from argon2 import PasswordHasher

from gateway.access.accounts import (
    CHANGE_KINDS,
    GUARDED_ACTIONS,
    NO_CHOSEN_PASSWORD,
    USERNAME_RE,
    USERNAME_RULE,
    Accounts,
    CachedUser,
    PendingChange,
    User,
)
from gateway.access.audit import AuditLog
from gateway.access.directory import Directory
from gateway.access.policy import Policy
from gateway.access.sessions import (
    CACHE_IDLE_DROP,
    CACHE_TTL,
    KINDS,
    LAST_SEEN_WRITE_INTERVAL,
    SESSION_COOKIE,
    CachedSession,
    Sessions,
    hash_token,
)
from gateway.access.sign_in import ANY_ADDRESS, THROTTLE_WINDOW, WRONG_CREDENTIALS, SignIn, Throttle, lock_message
from gateway.config import SecurityConfig
from gateway.db import Database

__all__ = [
    "ANY_ADDRESS", "CACHE_IDLE_DROP", "CACHE_TTL", "CHANGE_KINDS", "GUARDED_ACTIONS", "KINDS", "LAST_SEEN_WRITE_INTERVAL",
    "NO_CHOSEN_PASSWORD", "SESSION_COOKIE", "THROTTLE_WINDOW", "USERNAME_RE", "USERNAME_RULE", "WRONG_CREDENTIALS",
    "Identity", "Listener", "PendingChange", "User", "hash_token", "lock_message",
]

logger = logging.getLogger(__name__)

Listener = Callable[[int], Any]


class Identity(Accounts, SignIn, Sessions):
    """Accounts, sign-in and sessions over one database, audit log and set of caches."""

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
        self._sessions: dict[str, CachedSession] = {}
        self._users: dict[int, CachedUser] = {}
        self._loading: dict[str, asyncio.Future[bool]] = {}
        self._throttle: dict[str, Throttle] = {}
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
