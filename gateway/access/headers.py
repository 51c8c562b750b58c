"""Security headers on every response, and the session cookie's name and flags.

Every response (API, static files, errors, WebSocket upgrades) carries:

* ``Content-Security-Policy``: scripts, styles, workers and connections from the gateway
  only (no inline script or style, no ``eval``), media from the gateway or ``blob:`` (MSE),
  no plugins, no ``<base>``, and ``frame-ancestors 'none'`` (plus ``X-Frame-Options: DENY``
  for older browsers): no other site can frame the video wall.
* ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
* ``Strict-Transport-Security`` when browsers reach the gateway over HTTPS.

Every response but the web client's own static files also carries
``Cache-Control: private, no-store``: API JSON, playlists, segments, snapshots and packages
carry video or personal data and must not stay in a browser's or a proxy's cache.

Whether browsers use HTTPS is ``server.public-scheme`` when set (a TLS-terminating reverse
proxy in front), else whether this request came over TLS. Under HTTPS the session cookie is
``Secure`` and named ``__Host-citygate_session`` (bound to this host, path ``/``, so no
sibling domain nor plain-HTTP page can plant one); over plain HTTP it is ``citygate_session``.
"""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import CONFIG

SESSION_COOKIE = "citygate_session"
SECURE_SESSION_COOKIE = "__Host-" + SESSION_COOKIE

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HSTS = "max-age=31536000"
NO_STORE = "private, no-store"
STATIC_PREFIX = "/static/"


def is_https(request: web.Request) -> bool:
    """True when browsers reach the gateway over HTTPS (see the module docstring)."""
    config = request.app.get(CONFIG)
    scheme = config.server.public_scheme if config is not None else None
    if scheme is not None:
        return scheme == "https"
    return request.secure


def session_cookie_name(request: web.Request) -> str:
    return SECURE_SESSION_COOKIE if is_https(request) else SESSION_COOKIE


def set_session_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    secure = is_https(request)
    response.set_cookie(
        SECURE_SESSION_COOKIE if secure else SESSION_COOKIE, token, httponly=True, samesite="Strict", path="/", secure=secure
    )


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    secure = is_https(request)
    response.del_cookie(SECURE_SESSION_COOKIE if secure else SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="Strict")


def content_security_policy(config: object | None) -> str:
    """The policy; the map's own tile server (``[map] tile-url``) may serve images too."""
    tiles = getattr(getattr(config, "map", None), "tile_url", "")
    if not tiles.startswith(("https://", "http://")):
        return CONTENT_SECURITY_POLICY
    origin = "/".join(tiles.split("/", 3)[:3])
    return CONTENT_SECURITY_POLICY.replace("img-src 'self' data: blob:", f"img-src 'self' data: blob: {origin}")


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(request.app.get(CONFIG))
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if is_https(request):
        headers["Strict-Transport-Security"] = HSTS
    if not request.path.startswith(STATIC_PREFIX):
        headers["Cache-Control"] = NO_STORE


def setup(app: web.Application) -> None:
    """Add the headers to every response the application sends (``on_response_prepare``
    runs for handler results, errors and files alike, before the headers go out)."""
    app.on_response_prepare.append(_add_headers)
