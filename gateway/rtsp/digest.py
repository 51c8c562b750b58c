"""HTTP/RTSP Digest access authentication (RFC 7616), server side.

Pure protocol code: challenges, the parsing of ``Authorization: Digest ...`` and the
check of a response against a password. SHA-256 always; MD5 only when the caller allows it
(old clients: FFmpeg 5 and GStreamer 1.22 know MD5 only). ``qop=auth`` is offered; a
response without ``qop`` (RFC 2069 style, as GStreamer sends it) is accepted too, since
the nonce itself expires.

Nonces are stateless: ``issued-at || random || HMAC(key, issued-at || random)``, so any
node holding the key can check them. A nonce older than ``lifetime`` is answered with a
fresh challenge carrying ``stale=true`` (the client retries without asking the user).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Strongest first: clients use the first challenge they understand (RFC 7616 3.7);
#: FFmpeg uses the *last* Digest challenge it sees, so MD5, when offered, comes last.
ALGORITHMS = ("SHA-256", "MD5")
_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
_NONCE = struct.Struct("!d8s16s")


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """The parameters of an ``Authorization: Digest`` header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_authorization(header: str) -> DigestCredentials | None:
    """The Digest credentials in an ``Authorization`` header value, or None if it is not
    a well-formed Digest header (``userhash`` is not supported)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
    if params.get("userhash", "false").lower() == "true":
        return None
    try:
        creds = DigestCredentials(
            username=params["username"], realm=params["realm"], nonce=params["nonce"], uri=params["uri"],
            response=params["response"].lower(), algorithm=params.get("algorithm", "MD5").upper(),
            qop=params.get("qop"), nc=params.get("nc"), cnonce=params.get("cnonce"), opaque=params.get("opaque"),
        )
    except KeyError:
        return None
    if creds.algorithm not in _HASHES:
        return None
    if creds.qop is not None and (creds.qop != "auth" or not creds.nc or not creds.cnonce):
        return None
    return creds


def parse_bearer(header: str) -> str | None:
    scheme, _, rest = header.strip().partition(" ")
    return rest.strip() or None if scheme.lower() == "bearer" else None


def expected_response(creds: DigestCredentials, method: str, password: str) -> str:
    """The ``response`` a client knowing ``password`` sends for this request."""
    algorithm = creds.algorithm
    ha1 = _h(algorithm, f"{creds.username}:{creds.realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{creds.uri}")
    if creds.qop:
        return _h(algorithm, f"{ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{creds.nonce}:{ha2}")


class DigestAuth:
    """Issues and checks nonces and challenges for one realm.

    ``key`` signs the nonces; ``clock`` is injectable for tests of expiry.
    """

    def __init__(
        self, key: bytes, *, realm: str = "citygate", allow_md5: bool = False, lifetime: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < 16:
            raise ValueError("a Digest nonce key needs at least 16 bytes")
        self._key = key
        self.realm = realm
        self.algorithms = ALGORITHMS if allow_md5 else ALGORITHMS[:1]
        self.lifetime = lifetime
        self._clock = clock
        self.opaque = hmac.new(key, b"opaque", hashlib.sha256).hexdigest()[:32]

    def nonce(self) -> str:
        issued = self._clock()
        salt = secrets.token_bytes(8)
        mac = hmac.new(self._key, struct.pack("!d", issued) + salt, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(_NONCE.pack(issued, salt, mac)).decode("ascii").rstrip("=")

    def nonce_state(self, nonce: str) -> str:
        """``"fresh"``, ``"stale"`` (ours, expired) or ``"invalid"``."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
            issued, salt, mac = _NONCE.unpack(raw)
        except (ValueError, struct.error):
            return "invalid"
        good = hmac.new(self._key, struct.pack("!d", issued) + salt, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, good):
            return "invalid"
        age = self._clock() - issued
        if age < -5.0:
            return "invalid"
        return "fresh" if age <= self.lifetime else "stale"

    def challenges(self, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, strongest first, one nonce for all."""
        nonce = self.nonce()
        return [
            f'Digest realm="{self.realm}", qop="auth", algorithm={algorithm}, nonce="{nonce}", '
            f'opaque="{self.opaque}"' + (", stale=true" if stale else "")
            for algorithm in self.algorithms
        ]

    def check(self, creds: DigestCredentials, method: str, uri: str, password: str) -> str:
        """``"ok"``, ``"stale"`` (retry with a new nonce) or a reason for refusing."""
        if creds.algorithm not in self.algorithms:
            return f"Digest algorithm {creds.algorithm} is not accepted here"
        if creds.realm != self.realm:
            return "wrong realm"
        if not _same_uri(creds.uri, uri):
            return "the Digest uri does not match the request"
        good = hmac.compare_digest(creds.response, expected_response(creds, method, password))
        state = self.nonce_state(creds.nonce)
        if state == "invalid":
            return "unknown nonce"
        if not good:
            return "wrong username or secret"
        return "ok" if state == "fresh" else "stale"


def _same_uri(given: str, request_uri: str) -> bool:
    """The Digest ``uri`` names the request's URI (absolute, or its path and query)."""
    if given == request_uri:
        return True
    if "://" in request_uri:
        rest = request_uri.split("://", 1)[1]
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return given == path
    return False
