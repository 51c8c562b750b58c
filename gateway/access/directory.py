"""Sign-in through a directory: the configured providers, and the recheck of their accounts.

A provider (``gateway.interfaces.AuthProvider``, registered through the login hook
``gateway_register_auth_providers``) is configured by an ``[auth.<id>]`` table. Accounts it
creates keep no local password: their ``password_hash`` is the marker ``!directory:<id>``,
which no password matches, so such an account signs in only through its directory. An
administrator's password reset turns it back into a local account (the rescue path).

``Directory.running(identity)`` enters every provider (``async with``: the OIDC plugin
fetches its provider's discovery document there) and runs one loop per provider that can
look people up: every ``recheck_seconds`` each of its accounts with open sessions is looked
up again; role and areas follow the directory, and an account removed or disabled there (or
in no mapped group any more) loses its sessions. While the directory cannot be reached,
sessions are kept and a warning logged.

Password sign-ins go to the providers whose ``sign_in`` has ``"password"`` (LDAP); redirect
sign-ins (OIDC) are begun and finished by ``gateway.api.sign_in_redirect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from gateway import config as config_mod
from gateway.errors import ConfigError, ConfigErrors, Unavailable
from gateway.interfaces import AuthProvider, DirectoryAccount

if TYPE_CHECKING:
    from gateway.access.identity import Identity

logger = logging.getLogger(__name__)

DIRECTORY_HASH_PREFIX = "!directory:"


def directory_hash(provider_id: str) -> str:
    """The ``password_hash`` of an account that signs in through ``provider_id``."""
    return DIRECTORY_HASH_PREFIX + provider_id


def directory_source(password_hash: str | None) -> str | None:
    """The provider id of a directory account, or None for a local account."""
    if password_hash and password_hash.startswith(DIRECTORY_HASH_PREFIX):
        return password_hash[len(DIRECTORY_HASH_PREFIX):]
    return None


class Directory:
    """The configured sign-in providers, asked in the order of ``[auth]``."""

    def __init__(self, providers: Mapping[str, AuthProvider]) -> None:
        self.providers = dict(providers)

    @property
    def takes_passwords(self) -> bool:
        """True when a provider checks passwords (else password sign-ins are local only)."""
        return any("password" in p.sign_in for p in self.providers.values())

    def redirect_providers(self) -> dict[str, AuthProvider]:
        """The providers people sign in with by a redirect, in the order of ``[auth]``."""
        return {pid: p for pid, p in self.providers.items() if "redirect" in p.sign_in}

    @classmethod
    def from_config(
        cls, config: config_mod.Config, registry: Mapping[str, type[AuthProvider]], roles: frozenset[str]
    ) -> Directory | None:
        """The providers ``[auth.*]`` configures (None when none is); mistakes raise
        ``ConfigErrors`` naming ``gateway.toml`` and the key."""
        if not config.auth:
            return None
        file = f"{config.root}/{config_mod.GATEWAY_FILE}"
        errors: list[ConfigError] = []
        raw = {pid: opts for pid, opts in config.auth.items() if isinstance(opts, dict)}
        checked = dict(config.auth)
        if raw:  # load() was not given the providers: check the tables now
            checked.update(config_mod.auth_options(raw, registry, file=file, env=os.environ, errors=errors))
        providers: dict[str, AuthProvider] = {}
        for pid, options in checked.items():
            provider_cls = registry.get(pid)
            if provider_cls is None:
                if not errors:
                    known = ", ".join(sorted(registry)) or "none installed"
                    errors.append(ConfigError(file, f"auth.{pid}", f"unknown sign-in provider {pid!r} (known: {known})"))
                continue
            if options is None:  # its errors are listed already
                continue
            provider = provider_cls(options)
            errors.extend(ConfigError(file, f"auth.{pid}.{key}" if key else f"auth.{pid}", reason) for key, reason in provider.problems(roles))
            providers[pid] = provider
        if errors:
            raise ConfigErrors(errors)
        return cls(providers)

    async def login(self, username: str, password: str) -> tuple[str, DirectoryAccount] | None:
        """(provider id, account) of the first provider that accepts the password, else None.

        Raises ``Unavailable`` when a provider cannot be reached and none accepted."""
        unavailable: Unavailable | None = None
        for pid, provider in self.providers.items():
            if "password" not in provider.sign_in:
                continue
            try:
                account = await provider.login(username, password)
            except Unavailable as exc:
                logger.warning("directory %s: sign-in of %s not checked: %s", pid, username, exc)
                unavailable = exc
                continue
            if account is not None:
                return pid, account
        if unavailable is not None:
            raise unavailable
        return None

    @contextlib.asynccontextmanager
    async def running(self, identity: Identity) -> AsyncIterator[None]:
        """Every provider entered, and rechecking its accounts, while inside."""
        async with contextlib.AsyncExitStack() as stack:
            for provider in self.providers.values():
                await stack.enter_async_context(provider)
            async with self.rechecking(identity):
                yield

    @contextlib.asynccontextmanager
    async def rechecking(self, identity: Identity) -> AsyncIterator[None]:
        """Recheck every provider's accounts with open sessions while inside."""
        tasks = [
            asyncio.create_task(self._recheck_loop(identity, pid, p, p.recheck_seconds), name=f"directory-recheck-{pid}")
            for pid, p in self.providers.items()
            if p.recheck_seconds is not None
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _recheck_loop(self, identity: Identity, pid: str, provider: AuthProvider, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.recheck(identity, pid)
            except Exception:
                logger.exception("directory %s: rechecking accounts failed", pid)

    async def recheck(self, identity: Identity, pid: str) -> int:
        """Look up ``pid``'s accounts with open sessions once; returns how many were checked."""
        provider = self.providers[pid]
        checked = 0
        for username in await identity.directory_accounts_in_use(pid):
            try:
                account = await provider.lookup(username)
            except Unavailable as exc:
                logger.warning("directory %s: cannot recheck accounts, sessions kept: %s", pid, exc)
                return checked
            await identity.apply_directory_lookup(pid, username, account)
            checked += 1
        return checked


def describe(account: DirectoryAccount) -> dict[str, Any]:
    """The account's directory facts for audit entries."""
    return {"role": account.role, "areas": sorted(account.areas), "all_areas": account.all_areas, "groups": list(account.groups)}
