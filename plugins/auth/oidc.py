"""Sign-in through an OpenID Connect provider (``[auth.oidc]``): Keycloak, a national or
regional identity provider, Azure AD / Entra ID, any certified OpenID provider.

The web client's sign-in page shows "Sign in with <display-name>". The browser goes to the
provider with an authorization-code request protected by PKCE (S256), a random ``state``
and a ``nonce``; these, and the PKCE verifier, wait in a cookie of that browser only,
encrypted and authenticated (JWE, ``dir`` + A256GCM, with a key derived from the client
secret by HKDF), and expire after ``sign-in-minutes``. When the browser comes back, the
state must match, the provider's ``iss`` answer (RFC 9207) must name the issuer, and the
code is exchanged at the token endpoint (client secret, the verifier). The ID token must be
signed by a key of the provider's JWKS (looked up by ``kid``; an unknown ``kid`` fetches the
JWKS again, which is how a provider's key rotation is followed), be issued by ``issuer``
for ``client-id``, be unexpired (``clock-skew-seconds`` of leeway) and carry the nonce.
Claims missing from the ID token are read from the userinfo endpoint (same ``sub``).

Claims give the Citygate account: ``username-claim`` (lower-cased; it must be a valid
Citygate username), ``display-name-claim`` and ``groups-claim`` (a list or a string; a
dotted path reaches nested claims, e.g. Keycloak's ``realm_access.roles``);
``[[auth.oidc.groups]]`` map group names to a role and areas exactly like ``[auth.ldap]``:
the first mapped group with a role gives the role, the areas of all mapped groups add up.
The local account is created or updated at each sign-in (role and areas follow the
provider); OIDC cannot look people up between sign-ins, so a person removed at the provider
keeps a running session until it ends (``[security] session-absolute-hours``).

Sign-out ends the Citygate session and sends the browser to the provider's
``end_session_endpoint`` (RP-initiated logout, with ``id_token_hint``), which returns it to
``post-logout-redirect-url``.

The discovery document (``<issuer>/.well-known/openid-configuration``) and the JWKS are
fetched when the gateway starts; if the provider cannot be reached then, an error says so,
the gateway still starts (local accounts are the rescue path) and the next OIDC sign-in
tries again. Nothing else is fetched.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from ipaddress import ip_address
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwe, jws, jwt
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import KeySet, OctKey
from msgspec import Meta

from gateway.plugin_api import (
    REDIRECT_CALLBACK_PATH, AuthProvider, DirectoryAccount, RedirectSignIn, RedirectStart, Unauthorized, Unavailable, hookimpl,
)

logger = logging.getLogger(__name__)

#: Signature algorithms an ID token may use (never "none", never a MAC with the secret).
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519")
#: Between two attempts to reach a provider that could not be reached.
RETRY_SECONDS = 10.0
#: An unknown ``kid`` fetches the JWKS again at most this often (per kid).
JWKS_REFETCH_SECONDS = 60.0


class _Base(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    pass


class GroupMapping(_Base, kw_only=True):
    """``[[auth.oidc.groups]]``: what one group (or role) named in the groups claim gives."""

    #: As the provider writes it in the claim (Keycloak's group mapper with full path: ``/cctv-operators``).
    group: Annotated[str, Meta(min_length=1)]
    #: The role (from roles.toml) members get; empty: the group only adds areas.
    role: str = ""
    areas: tuple[str, ...] = ()
    all_areas: bool = False


class OidcOptions(_Base, kw_only=True):
    #: The provider's issuer URL exactly as its discovery document names it
    #: (Keycloak: ``https://sso.city.example/realms/city``).
    issuer: str
    client_id: Annotated[str, Meta(min_length=1)]
    #: A file holding the client secret (and nothing else but a trailing newline).
    client_secret_file: Annotated[str, Meta(min_length=1)]
    #: This gateway's callback as registered at the provider:
    #: ``https://<gateway>/api/session/redirect/oidc/callback``.
    redirect_url: str
    #: Where the provider sends the browser after signing out (registered at the provider
    #: too); empty: the gateway's root (``redirect-url``'s origin + ``/``).
    post_logout_redirect_url: str = ""
    #: The button reads "Sign in with <display-name>".
    display_name: Annotated[str, Meta(min_length=1, max_length=60)] = "single sign-on"
    scopes: tuple[str, ...] = ("openid", "profile")
    username_claim: Annotated[str, Meta(min_length=1)] = "preferred_username"
    display_name_claim: str = "name"
    groups_claim: Annotated[str, Meta(min_length=1)] = "groups"
    groups: tuple[GroupMapping, ...]
    #: PEM file of the CA that signed the provider's certificate; empty: the system's CAs.
    ca_file: str = ""
    #: Seconds per request to the provider.
    timeout: Annotated[float, Meta(gt=0, le=120)] = 10.0
    #: Leeway for the ID token's times against this gateway's clock.
    clock_skew_seconds: Annotated[int, Meta(ge=0, le=600)] = 60
    #: How long a person may take at the provider's sign-in page.
    sign_in_minutes: Annotated[float, Meta(gt=0, le=60)] = 10.0


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host or "").is_loopback
    except ValueError:
        return False


def _url_problem(url: str) -> str | None:
    """Why ``url`` may not be used (https only; http only on loopback, for tests), or None."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return None
    return f"{url!r} must be an https:// URL (http:// only on loopback)"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at ``path``; dots reach into nested objects (``realm_access.roles``)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class OidcProvider(AuthProvider):
    Options = OidcOptions
    sign_in = frozenset({"redirect"})
    recheck_seconds = None  # nobody can be looked up between their own sign-ins

    @staticmethod
    def id() -> str:
        return "oidc"

    def __init__(self, options: OidcOptions, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(options)
        #: Wall clock for the ID token's times (tests move it).
        self.clock = clock
        self._secret = ""
        self._secret_problem: str | None = None
        try:  # called in a worker thread (gateway.app builds the directory there)
            with open(options.client_secret_file, encoding="utf-8") as f:
                self._secret = f.read().strip()
            if not self._secret:
                self._secret_problem = f"{options.client_secret_file} is empty"
        except OSError as exc:
            self._secret_problem = f"cannot read {options.client_secret_file}: {exc.strerror}"
        self._pending_key = self._derive_key(b"citygate oidc: pending sign-in")
        self._logout_key = self._derive_key(b"citygate oidc: logout state")
        self._http: aiohttp.ClientSession | None = None
        self._meta: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._kid_fetched: dict[str, float] = {}
        self._last_attempt = 0.0
        self._last_problem = ""
        self._lock = asyncio.Lock()

    def _derive_key(self, info: bytes) -> OctKey:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=self.options.client_id.encode(), info=info)
        return OctKey.import_key(hkdf.derive(self._secret.encode() or b"\0"))

    def title(self) -> str:
        return self.options.display_name

    def problems(self, roles: frozenset[str]) -> list[tuple[str, str]]:
        o = self.options
        found: list[tuple[str, str]] = []
        for key, url in (("issuer", o.issuer), ("redirect-url", o.redirect_url), ("post-logout-redirect-url", o.post_logout_redirect_url)):
            if url and (problem := _url_problem(url)):
                found.append((key, problem))
        callback = REDIRECT_CALLBACK_PATH.format(provider=self.id())
        if not urlsplit(o.redirect_url).path.endswith(callback):
            found.append(("redirect-url", f"must end in {callback} (the gateway's callback)"))
        if self._secret_problem:
            found.append(("client-secret-file", self._secret_problem))
        if "openid" not in o.scopes:
            found.append(("scopes", "must include 'openid'"))
        if not o.groups:
            found.append(("groups", "must map at least one group to a role"))
        elif not any(g.role for g in o.groups):
            found.append(("groups", "no group gives a role"))
        known = ", ".join(sorted(roles))
        found += [
            (f"groups[{i}].role", f"unknown role {g.role!r} (known: {known})")
            for i, g in enumerate(o.groups) if g.role and g.role not in roles
        ]
        return found

    # -- lifecycle: discovery at start -------------------------------------------------
    async def __aenter__(self) -> OidcProvider:
        context: ssl.SSLContext | bool = True
        if self.options.ca_file:
            context = await asyncio.to_thread(ssl.create_default_context, cafile=self.options.ca_file)
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.timeout), connector=aiohttp.TCPConnector(ssl=context),
        )
        try:
            await self._discover()
        except Unavailable as exc:
            self._last_problem = str(exc)
            logger.error("auth.oidc: %s; sign-in through %s is unavailable until it can be reached (local accounts still sign in)",
                         exc, self.options.issuer)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _get_json(self, url: str, what: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        assert self._http is not None, "the provider is used outside its async with"
        try:
            async with self._http.get(url, headers=headers) as resp:
                if resp.status != 200:
                    raise Unavailable(f"cannot fetch the {what} {url}: HTTP {resp.status}")
                body = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Unavailable(f"cannot fetch the {what} {url}: {exc or type(exc).__name__}") from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise Unavailable(f"the {what} {url} is not JSON") from None
        if not isinstance(doc, dict):
            raise Unavailable(f"the {what} {url} is not a JSON object")
        return doc

    async def _discover(self) -> dict[str, Any]:
        self._last_attempt = time.monotonic()
        issuer = self.options.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._get_json(url, "discovery document")
        if doc.get("issuer") != issuer:
            raise Unavailable(f"the discovery document {url} names the issuer {doc.get('issuer')!r}, not {issuer!r}")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(key), str) or _url_problem(doc[key]):
                raise Unavailable(f"the discovery document {url} has no usable {key}")
        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise Unavailable(f"the provider at {issuer} does not offer PKCE with S256")
        self._keys = await self._fetch_keys(doc["jwks_uri"])
        self._meta = doc
        logger.info("auth.oidc: provider %s discovered (%d signing keys)", issuer, len(self._keys.keys))
        return doc

    async def _fetch_keys(self, uri: str) -> KeySet:
        doc = await self._get_json(uri, "JWKS")
        usable = [k for k in doc.get("keys") or () if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        try:
            return KeySet.import_key_set({"keys": usable})
        except (JoseError, ValueError, TypeError) as exc:
            raise Unavailable(f"the JWKS {uri} cannot be read: {exc}") from None

    async def _metadata(self) -> dict[str, Any]:
        if self._meta is not None:
            return self._meta
        async with self._lock:
            if self._meta is not None:
                return self._meta
            if time.monotonic() - self._last_attempt < RETRY_SECONDS:
                raise Unavailable(f"the OpenID provider cannot be reached ({self._last_problem}); try again in a moment")
            try:
                return await self._discover()
            except Unavailable as exc:
                self._last_problem = str(exc)
                raise

    # -- sealed values kept in the browser -------------------------------------------
    @staticmethod
    def _seal(key: OctKey, value: dict[str, Any]) -> str:
        return jwe.encrypt_compact({"alg": "dir", "enc": "A256GCM"}, json.dumps(value).encode(), key)

    @staticmethod
    def _unseal(key: OctKey, sealed: str) -> dict[str, Any] | None:
        try:
            value = json.loads(jwe.decrypt_compact(sealed.encode("ascii"), key, algorithms=["dir", "A256GCM"]).plaintext)
        except (JoseError, ValueError, UnicodeError):
            return None
        return value if isinstance(value, dict) else None

    # -- the redirect sign-in ------------------------------------------------------------
    async def redirect_start(self) -> RedirectStart:
        meta = await self._metadata()
        o = self.options
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
        query = {
            "response_type": "code", "client_id": o.client_id, "redirect_uri": o.redirect_url, "scope": " ".join(o.scopes),
            "state": state, "nonce": nonce,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode("ascii")).digest()), "code_challenge_method": "S256",
        }
        endpoint = meta["authorization_endpoint"]
        url = endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)
        expires = self.clock() + o.sign_in_minutes * 60
        return RedirectStart(url, self._seal(self._pending_key, {"state": state, "nonce": nonce, "verifier": verifier, "exp": expires}))

    async def redirect_finish(self, params: Mapping[str, str], pending: str) -> RedirectSignIn:
        o = self.options
        if not pending:
            raise Unauthorized("no sign-in was started in this browser (or its cookie was lost)")
        kept = self._unseal(self._pending_key, pending)
        if kept is None:
            raise Unauthorized("the sign-in cookie is not valid (altered, or from another configuration)")
        if not isinstance(kept.get("exp"), (int, float)) or self.clock() > kept["exp"]:
            raise Unauthorized(f"the sign-in took longer than {o.sign_in_minutes:g} minutes")
        if not secrets.compare_digest(str(params.get("state", "")).encode(), str(kept.get("state", "")).encode()):
            raise Unauthorized("the state does not match the sign-in this browser started")
        if "error" in params:
            detail = params.get("error_description", "")
            raise Unauthorized(f"the provider refused: {params['error'][:100]}{': ' + detail[:200] if detail else ''}")
        meta = await self._metadata()
        if "iss" in params or meta.get("authorization_response_iss_parameter_supported"):
            if params.get("iss") != o.issuer:
                raise Unauthorized(f"the answer names the issuer {params.get('iss')!r}, not {o.issuer!r}")
        code = params.get("code", "")
        if not code:
            raise Unauthorized("the provider's answer has no code")
        tokens = await self._exchange(meta, code, str(kept.get("verifier", "")))
        claims = await self._validate_id_token(meta, tokens["id_token"], str(kept.get("nonce", "")))
        claims = await self._with_userinfo(meta, claims, tokens.get("access_token"))
        account = self._account(claims)
        return RedirectSignIn(account, self._seal(self._logout_key, {"id_token": tokens["id_token"]}))

    async def _exchange(self, meta: Mapping[str, Any], code: str, verifier: str) -> dict[str, Any]:
        """Trade the code for tokens at the token endpoint (client secret + PKCE verifier)."""
        assert self._http is not None
        o = self.options
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": o.redirect_url, "code_verifier": verifier}
        headers = {"Accept": "application/json"}
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if "client_secret_basic" in methods or "client_secret_post" not in methods:  # RFC 6749 2.3.1: form-encoded, then Basic
            pair = f"{quote(o.client_id, safe='')}:{quote(self._secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form.update(client_id=o.client_id, client_secret=self._secret)
        url = meta["token_endpoint"]
        try:
            async with self._http.post(url, data=form, headers=headers) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Unavailable(f"cannot reach the token endpoint {url}: {exc or type(exc).__name__}") from None
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise Unauthorized(f"the token endpoint answered HTTP {status} without JSON")
        if status != 200:
            raise Unauthorized(f"the token endpoint refused the code: {answer.get('error')}: {answer.get('error_description', '')}"[:300])
        if not isinstance(answer.get("id_token"), str):
            raise Unauthorized("the token endpoint sent no ID token")
        return answer

    async def _key_set_for(self, meta: Mapping[str, Any], kid: str | None) -> KeySet:
        keys = self._keys
        assert keys is not None
        if kid is None:
            return keys
        try:
            keys.get_by_kid(kid)
            return keys
        except (JoseError, ValueError):
            pass
        now = time.monotonic()
        if now - self._kid_fetched.get(kid, -JWKS_REFETCH_SECONDS) >= JWKS_REFETCH_SECONDS:  # the provider rotated its keys
            self._kid_fetched[kid] = now
            self._keys = keys = await self._fetch_keys(meta["jwks_uri"])
            logger.info("auth.oidc: fetched the JWKS again for key %r (%d keys)", kid, len(keys.keys))
        return keys

    async def _validate_id_token(self, meta: Mapping[str, Any], token: str, nonce: str) -> dict[str, Any]:
        o = self.options
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError):
            raise Unauthorized("the ID token is not a signed JWT") from None
        offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        allowed = [a for a in SIGNING_ALGORITHMS if a in offered] or ["RS256"]
        if header.get("alg") not in allowed:
            raise Unauthorized(f"the ID token is signed with {header.get('alg')!r}; allowed: {', '.join(allowed)}")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        keys = await self._key_set_for(meta, kid)
        try:
            decoded = jwt.decode(token, keys, algorithms=allowed)
        except BadSignatureError:
            raise Unauthorized("the ID token's signature is not valid (altered, or not signed by the provider)") from None
        except JoseError as exc:
            if kid is not None and "kid" in str(exc):
                raise Unauthorized(f"the ID token is signed with key {kid!r}, which the provider does not publish") from None
            raise Unauthorized(f"the ID token cannot be verified: {exc}") from None
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            now=int(self.clock()), leeway=o.clock_skew_seconds,
            iss={"essential": True, "value": o.issuer}, aud={"essential": True, "value": o.client_id},
            sub={"essential": True}, exp={"essential": True}, iat={"essential": True}, nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise Unauthorized(f"the ID token expired at {claims.get('exp')} (clock skew allowed: {o.clock_skew_seconds} s)") from None
        except ClaimError as exc:
            reasons = {
                "iss": f"the ID token was issued by {claims.get('iss')!r}, not {o.issuer!r}",
                "aud": f"the ID token is meant for {claims.get('aud')!r}, not this client {o.client_id!r}",
                "nonce": "the ID token's nonce does not match this sign-in",
            }
            raise Unauthorized(reasons.get(exc.claim, f"the ID token's {exc.claim!r} claim is not valid: {exc.description}")) from None
        except JoseError as exc:  # e.g. iat in the future
            raise Unauthorized(f"the ID token is not valid: {exc}") from None
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != o.client_id:
            raise Unauthorized(f"the ID token names several audiences and its azp {claims.get('azp')!r} is not this client")
        return dict(claims)

    async def _with_userinfo(self, meta: Mapping[str, Any], claims: dict[str, Any], access_token: Any) -> dict[str, Any]:
        """Claims the ID token lacks, from the userinfo endpoint (which must agree on ``sub``)."""
        o = self.options
        wanted = [c for c in (o.username_claim, o.groups_claim, o.display_name_claim) if c and _claim(claims, c) is None]
        endpoint = meta.get("userinfo_endpoint")
        if not wanted or not isinstance(endpoint, str) or not isinstance(access_token, str):
            return claims
        info = await self._get_json(endpoint, "userinfo", headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"})
        if info.get("sub") != claims.get("sub"):
            raise Unauthorized("the userinfo answer is about another subject than the ID token")
        return {**info, **claims}

    def _account(self, claims: Mapping[str, Any]) -> DirectoryAccount:
        o = self.options
        username = _claim(claims, o.username_claim)
        if not isinstance(username, str) or not username.strip():
            raise Unauthorized(f"the provider sent no {o.username_claim!r} claim (the Citygate username)")
        display = _claim(claims, o.display_name_claim) if o.display_name_claim else None
        raw = _claim(claims, o.groups_claim)
        member_of = {raw} if isinstance(raw, str) else {g for g in raw if isinstance(g, str)} if isinstance(raw, list) else set()
        member_of = {g.lower() for g in member_of}
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
        return DirectoryAccount(username.strip().lower(), role, frozenset(areas), all_areas, display if isinstance(display, str) else "", tuple(groups))

    # -- the provider's sign-out ---------------------------------------------------------
    async def logout_url(self, logout_state: str) -> str | None:
        meta = self._meta
        endpoint = meta.get("end_session_endpoint") if meta else None
        if not isinstance(endpoint, str):
            return None
        o = self.options
        parts = urlsplit(o.redirect_url)
        query = {"client_id": o.client_id, "post_logout_redirect_uri": o.post_logout_redirect_url or f"{parts.scheme}://{parts.netloc}/"}
        kept = self._unseal(self._logout_key, logout_state) if logout_state else None
        if kept and isinstance(kept.get("id_token"), str):
            query["id_token_hint"] = kept["id_token"]
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)


@hookimpl
def gateway_register_auth_providers(register: Any) -> None:
    register(OidcProvider)
