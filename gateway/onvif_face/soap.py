"""SOAP 1.2 and WS-Security for the ONVIF face: parsing requests, answers and faults, and
checking WS-UsernameToken credentials. Protocol helpers only: nothing of the app.

A request is parsed only if it declares no DTD (so no entity expansion, ever) and is at most
``MAX_REQUEST_BYTES`` long. The UsernameToken check follows the WS-Security UsernameToken
Profile 1.0 as ONVIF devices apply it: ``Base64(SHA-1(nonce + created + secret))``, the
``Created`` time within the allowed skew of our clock, and no nonce accepted twice while
its ``Created`` time is still fresh.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape

ENV = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"

TDS = "http://www.onvif.org/ver10/device/wsdl"
TRT = "http://www.onvif.org/ver10/media/wsdl"
TPTZ = "http://www.onvif.org/ver20/ptz/wsdl"
TT = "http://www.onvif.org/ver10/schema"
TER = "http://www.onvif.org/ver10/error"

NAMESPACES = {"env": ENV, "ter": TER, "tt": TT, "tds": TDS, "trt": TRT, "tptz": TPTZ}
#: The service (and its prefix in our answers) of each request namespace.
SERVICES = {TDS: "tds", TRT: "trt", TPTZ: "tptz"}

MAX_REQUEST_BYTES = 256 * 1024
#: Nonces remembered against replay (oldest forgotten first beyond this).
MAX_NONCES = 50_000


class SoapFault(Exception):
    """Answered as a SOAP 1.2 fault: ``code`` is ``env:Sender`` or ``env:Receiver``,
    ``subcodes`` the ONVIF ``ter:`` subcodes, outermost first."""

    def __init__(self, code: str, subcodes: tuple[str, ...], reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.subcodes = subcodes
        self.reason = reason
        self.status = status if status is not None else (400 if code == "env:Sender" else 500)


def not_authorized(reason: str = "Sender not Authorized") -> SoapFault:
    return SoapFault("env:Sender", ("ter:NotAuthorized",), reason)


def invalid_arg(reason: str, subcode: str | None = None) -> SoapFault:
    return SoapFault("env:Sender", ("ter:InvalidArgVal",) + ((subcode,) if subcode else ()), reason)


def not_supported(operation: str) -> SoapFault:
    return SoapFault("env:Receiver", ("ter:ActionNotSupported",), f"{operation} is not supported by this device")


@dataclass(frozen=True, slots=True)
class SoapRequest:
    namespace: str  #: of the operation element
    operation: str  #: its local name
    body: ET.Element  #: the operation element
    header: ET.Element | None

    @property
    def service(self) -> str:
        return SERVICES.get(self.namespace, "?")


def parse_request(payload: bytes) -> SoapRequest:
    """The operation of a SOAP 1.2 request; a ``SoapFault`` if it is not one."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise SoapFault("env:Sender", ("ter:InvalidArgs",), f"request larger than {MAX_REQUEST_BYTES} bytes")
    if b"<!DOCTYPE" in payload or b"<!ENTITY" in payload:
        raise SoapFault("env:Sender", ("ter:WellFormed",), "a DTD is not allowed in a SOAP message")
    try:
        root = ET.fromstring(payload)
    except ET.ParseError:
        raise SoapFault("env:Sender", ("ter:WellFormed",), "not well-formed XML") from None
    if root.tag != f"{{{ENV}}}Envelope":
        raise SoapFault("env:VersionMismatch", (), "a SOAP 1.2 envelope is expected", status=400)
    body = root.find(f"{{{ENV}}}Body")
    operation = body[0] if body is not None and len(body) else None
    if operation is None or not operation.tag.startswith("{"):
        raise SoapFault("env:Sender", ("ter:InvalidArgs",), "the SOAP body names no operation")
    namespace, _, name = operation.tag[1:].partition("}")
    return SoapRequest(namespace, name, operation, root.find(f"{{{ENV}}}Header"))


def envelope(body: str) -> bytes:
    xmlns = " ".join(f'xmlns:{p}="{u}"' for p, u in NAMESPACES.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {xmlns}><env:Body>{body}</env:Body></env:Envelope>'.encode()


def fault_body(fault: SoapFault) -> str:
    sub = ""
    for code in reversed(fault.subcodes):
        sub = f"<env:Subcode><env:Value>{code}</env:Value>{sub}</env:Subcode>"
    return (
        f"<env:Fault><env:Code><env:Value>{fault.code}</env:Value>{sub}</env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{escape(fault.reason)}</env:Text></env:Reason></env:Fault>'
    )


def text(value: object) -> str:
    """Escape a value for element content or an attribute in double quotes."""
    return escape(str(value), {'"': "&quot;"})


def xml_datetime(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------
# WS-UsernameToken


@dataclass(frozen=True, slots=True)
class UsernameToken:
    username: str
    password: str
    digest: bool  #: PasswordDigest; False: PasswordText
    nonce: bytes
    created: str


def username_token(header: ET.Element | None) -> UsernameToken | None:
    """The UsernameToken of a request, or None if it carries none. Malformed: a fault."""
    if header is None:
        return None
    token = header.find(f"{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    if token is None:
        return None
    username = (token.findtext(f"{{{WSSE}}}Username") or "").strip()
    password_el = token.find(f"{{{WSSE}}}Password")
    if not username or password_el is None:
        raise not_authorized("the UsernameToken lacks a username or password")
    kind = password_el.get("Type", PASSWORD_TEXT)
    if kind not in (PASSWORD_DIGEST, PASSWORD_TEXT):
        raise not_authorized(f"password type {kind!r} is not supported")
    nonce_text = (token.findtext(f"{{{WSSE}}}Nonce") or "").strip()
    try:
        nonce = base64.b64decode(nonce_text, validate=True) if nonce_text else b""
    except (binascii.Error, ValueError):
        raise not_authorized("the UsernameToken nonce is not Base64") from None
    created = (token.findtext(f"{{{WSU}}}Created") or "").strip()
    return UsernameToken(username, (password_el.text or "").strip(), kind == PASSWORD_DIGEST, nonce, created)


def password_digest(nonce: bytes, created: str, secret: str) -> str:
    """WS-Security UsernameToken profile 1.0: Base64(SHA-1(nonce + created + secret))."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + secret.encode()).digest()).decode()


def parse_created(created: str) -> float | None:
    try:
        value = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class NonceCache:
    """Nonces seen while their ``Created`` time is fresh: a replayed digest is refused."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.time) -> None:
        self._max_age = max_age
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def first_use(self, nonce: bytes) -> bool:
        now = self._clock()
        while self._seen and (len(self._seen) > MAX_NONCES or next(iter(self._seen.values())) < now - 2 * self._max_age):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


def check_digest(token: UsernameToken, secret: str, *, now: float, max_skew: float, nonces: NonceCache) -> str | None:
    """Why a digest token fails against ``secret`` (None: it passes)."""
    if len(token.nonce) < 8:
        return "a PasswordDigest needs a nonce of at least 8 bytes"
    created = parse_created(token.created)
    if created is None:
        return "the UsernameToken has no valid Created time"
    if abs(created - now) > max_skew:
        return f"the UsernameToken was created {created - now:+.0f}s from the device clock (allowed: {max_skew:g}s)"
    expected = password_digest(token.nonce, token.created, secret)
    if not hmac.compare_digest(expected.encode(), token.password.encode()):
        return "wrong username or password digest"
    if not nonces.first_use(token.nonce):
        return "the nonce was used before (a replayed request)"
    return None
