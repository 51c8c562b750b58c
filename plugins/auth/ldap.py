"""Sign-in through LDAP or Active Directory (``[auth.ldap]``).

The person's password is checked by binding as them over LDAPS or StartTLS (never in
plain text). Their entry is found under ``user-base`` with ``user-filter`` and
``username-attribute`` (with ``lookup-dn``'s bind, or anonymously), their groups under
``group-base`` with ``group-filter``; ``[[auth.ldap.groups]]`` map group DNs to a Citygate
role and areas. The first mapped group (in the order of the list) with a role gives the
role; the areas of every mapped group the person is in add up. A person whose entry no
longer matches ``user-filter`` counts as disabled (Active Directory:
``(!(userAccountControl:1.2.840.113556.1.4.803:=2))``).

ldap3 is synchronous: every directory call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from gateway.plugin_api import AuthProvider, DirectoryAccount, Unavailable, hookimpl

logger = logging.getLogger(__name__)


class _Base(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    pass


class GroupMapping(_Base, kw_only=True):
    """``[[auth.ldap.groups]]``: what membership of one directory group gives in Citygate."""

    #: The group's DN, e.g. ``cn=cctv-operators,ou=groups,dc=city,dc=example`` (case-insensitive).
    group: Annotated[str, Meta(min_length=3)]
    #: The role (from roles.toml) members get; empty: the group only adds areas.
    role: str = ""
    areas: tuple[str, ...] = ()
    all_areas: bool = False


class LdapOptions(_Base, kw_only=True):
    #: ``ldaps://host:636``, or ``ldap://host:389`` with ``start-tls = true``.
    url: str
    start_tls: bool = False
    #: PEM file of the CA that signed the directory's certificate; empty: the system's CAs.
    ca_file: str = ""
    #: The account that finds people and rechecks them; empty: anonymous searches.
    lookup_dn: str = ""
    lookup_password: str | None = None
    lookup_password_env: str | None = None
    user_base: Annotated[str, Meta(min_length=1)]
    user_filter: str = "(objectClass=person)"
    #: The attribute holding the name people sign in with (Active Directory: sAMAccountName).
    username_attribute: str = "uid"
    display_name_attribute: str = "cn"
    group_base: Annotated[str, Meta(min_length=1)]
    #: ``{dn}`` is the person's DN (AD nested groups: ``(member:1.2.840.113556.1.4.1941:={dn})``).
    group_filter: str = "(|(member={dn})(uniqueMember={dn}))"
    groups: tuple[GroupMapping, ...]
    #: Seconds per directory request.
    timeout: Annotated[float, Meta(gt=0, le=120)] = 10.0
    #: Accounts with open sessions are looked up again this often: a person disabled or
    #: removed in the directory loses their sessions within this time.
    cache_seconds: Annotated[float, Meta(ge=0.5, le=86400)] = 60.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("ldaps", "ldap") or not parts.hostname:
            raise ValueError(f"url {self.url!r} must be ldaps://host[:port] or ldap://host[:port]")
        if parts.scheme == "ldap" and not self.start_tls:
            raise ValueError("an ldap:// url needs start-tls = true: passwords never cross the network in plain text")
        if parts.scheme == "ldaps" and self.start_tls:
            raise ValueError("start-tls is for ldap:// urls; ldaps:// is TLS from the start")
        if "{dn}" not in self.group_filter:
            raise ValueError("group-filter must contain {dn}")
        if not self.groups:
            raise ValueError("groups must map at least one directory group to a role")
        if not any(g.role for g in self.groups):
            raise ValueError("no group in groups gives a role")


class LdapProvider(AuthProvider):
    Options = LdapOptions

    @staticmethod
    def id() -> str:
        return "ldap"

    def __init__(self, options: LdapOptions) -> None:
        super().__init__(options)
        self.recheck_seconds = options.cache_seconds
        parts = urlsplit(options.url)
        self._host = parts.hostname or ""
        self._port = parts.port or (636 if parts.scheme == "ldaps" else 389)
        self._ssl = parts.scheme == "ldaps"

    def problems(self, roles: frozenset[str]) -> list[tuple[str, str]]:
        known = ", ".join(sorted(roles))
        return [
            (f"groups[{i}].role", f"unknown role {g.role!r} (known: {known})")
            for i, g in enumerate(self.options.groups) if g.role and g.role not in roles
        ]

    # -- the hook's two questions --------------------------------------------------------
    async def login(self, username: str, password: str) -> DirectoryAccount | None:
        if not password:  # an empty password would be an unauthenticated bind that "succeeds"
            return None
        return await asyncio.to_thread(self._login, username, password)

    async def lookup(self, username: str) -> DirectoryAccount | None:
        return await asyncio.to_thread(self._lookup, username)

    # -- in a worker thread --------------------------------------------------------------
    def _connection(self, user: str | None, password: str | None) -> Any:
        import ldap3

        o = self.options
        timeout = max(1, math.ceil(o.timeout))  # ldap3 packs socket timeouts as whole seconds
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=o.ca_file or None, version=ssl.PROTOCOL_TLS_CLIENT)
        server = ldap3.Server(self._host, port=self._port, use_ssl=self._ssl, tls=tls, get_info=ldap3.NONE, connect_timeout=timeout)
        conn = ldap3.Connection(
            server, user=user, password=password, read_only=True, receive_timeout=timeout,
            auto_bind=ldap3.AUTO_BIND_NONE, raise_exceptions=False,
        )
        try:
            conn.open()
            if o.start_tls and not conn.start_tls():
                raise Unavailable(f"LDAP StartTLS with {self._host} failed: {conn.result.get('description')}")
        except ldap3.core.exceptions.LDAPException as exc:
            raise Unavailable(f"cannot reach the directory at {o.url}: {exc}") from None
        return conn

    def _lookup_connection(self) -> Any:
        import ldap3

        o = self.options
        conn = self._connection(o.lookup_dn or None, o.lookup_password if o.lookup_dn else None)
        try:
            ok = conn.bind()
        except ldap3.core.exceptions.LDAPException as exc:
            raise Unavailable(f"directory lookup bind failed: {exc}") from None
        if not ok:
            conn.unbind()
            raise Unavailable(f"directory lookup bind as {o.lookup_dn or 'anonymous'} refused: {conn.result.get('description')}")
        return conn

    def _find(self, conn: Any, username: str) -> tuple[str, str] | None:
        """(DN, display name) of the enabled person signing in as ``username``."""
        from ldap3.utils.conv import escape_filter_chars

        o = self.options
        query = f"(&{o.user_filter}({o.username_attribute}={escape_filter_chars(username)}))"
        if not conn.search(o.user_base, query, attributes=[o.display_name_attribute], size_limit=2):
            return None
        entries = conn.entries
        if len(entries) != 1:
            if len(entries) > 1:
                logger.warning("ldap: %d entries match %s; refusing an ambiguous name", len(entries), username)
            return None
        entry = entries[0]
        values = entry.entry_attributes_as_dict.get(o.display_name_attribute) or [""]
        return entry.entry_dn, str(values[0])

    def _account(self, conn: Any, username: str, dn: str, display_name: str) -> DirectoryAccount:
        from ldap3.utils.conv import escape_filter_chars

        o = self.options
        conn.search(o.group_base, o.group_filter.replace("{dn}", escape_filter_chars(dn)), attributes=[])
        member_of = {e.entry_dn.lower() for e in conn.entries}
        role: str | None = None
        areas: set[str] = set()
        all_areas = False
        groups: list[str] = []
        for mapping in o.groups:
            if mapping.group.lower() not in member_of:
                continue
            groups.append(mapping.group)
            if mapping.role and role is None:
                role = mapping.role
            areas.update(mapping.areas)
            all_areas = all_areas or mapping.all_areas
        if role is None:  # areas without a role give nothing
            areas, all_areas = set(), False
        return DirectoryAccount(username, role, frozenset(areas), all_areas, display_name, tuple(groups))

    def _login(self, username: str, password: str) -> DirectoryAccount | None:
        import ldap3

        lookup = self._lookup_connection()
        try:
            found = self._find(lookup, username)
        finally:
            lookup.unbind()
        if found is None:
            return None
        dn, display_name = found
        conn = self._connection(dn, password)
        try:
            try:
                if not conn.bind():
                    return None  # invalidCredentials (or a locked account: the same answer)
            except ldap3.core.exceptions.LDAPException as exc:
                raise Unavailable(f"directory bind failed: {exc}") from None
            return self._account(conn, username, dn, display_name)
        finally:
            conn.unbind()

    def _lookup(self, username: str) -> DirectoryAccount | None:
        conn = self._lookup_connection()
        try:
            found = self._find(conn, username)
            if found is None:
                return None
            return self._account(conn, username, *found)
        finally:
            conn.unbind()


@hookimpl
def gateway_register_auth_providers(register: Any) -> None:
    register(LdapProvider)
