"""A request one node forwards to another: its signed hop headers.

Kept apart from ``forward`` so the guard (``gateway.access.middleware``) can read a verified
hop's client address without importing the cluster machinery.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

NODE_HEADER = "X-Citygate-Node"
TIME_HEADER = "X-Citygate-Time"
CLIENT_HEADER = "X-Citygate-Client"
SIGNATURE_HEADER = "X-Citygate-Signature"
HOP_HEADERS = (NODE_HEADER, TIME_HEADER, CLIENT_HEADER, SIGNATURE_HEADER)


@dataclass(frozen=True, slots=True)
class Hop:
    """A forwarded request, verified: which node sent it, for which client address."""

    node: str
    client: str


HOP = web.RequestKey("cluster_hop", Hop)


def sign(secret: bytes, *, method: str, path_qs: str, node: str, at: str, client: str, body: bytes) -> str:
    """HMAC-SHA256 over the request and the hop (a body is covered by its hash)."""
    message = "\n".join((method.upper(), path_qs, node, at, client, hashlib.sha256(body).hexdigest())).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def hop_of(request: web.Request) -> Hop | None:
    """The verified hop of a forwarded request (None: it came straight from a client)."""
    return request.get(HOP)
