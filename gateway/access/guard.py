"""Deny by default: every route declares who may reach it, and one middleware enforces it.

A handler without a declaration is refused for everyone (and the router test fails), so
no future route can be left open by forgetting. Declarations:

``@public``                         reachable without a session (login, the login page)
``@authenticated``                  any signed-in user (the handler filters what it shows)
``@requires("live.view")``          the action on the camera named by ``{camera_id}``
``@requires("audit.read", camera_param=None)``  a global action

The authenticated principal is ``request[PRINCIPAL]``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

ACCESS_ATTR = "__citygate_access__"
PRINCIPAL = web.RequestKey("principal", object)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RouteAccess:
    public: bool = False
    action: str | None = None
    camera_param: str | None = None
    #: Reachable while the user still has to change their first password.
    pending_password_ok: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as of this request."""

    user_id: int
    username: str
    role: str
    areas: frozenset[str]
    all_areas: bool
    session_id: str
    kind: str  #: "cookie" or "token"
    csrf_token: str
    must_change_password: bool = False
    expires_at: float = 0.0


def _mark(handler: Any, access: RouteAccess) -> Any:
    setattr(handler, ACCESS_ATTR, access)
    return handler


def public(handler: Handler) -> Handler:
    return _mark(handler, RouteAccess(public=True))


def authenticated(handler: Handler | None = None, *, pending_password_ok: bool = False) -> Any:
    def wrap(h: Handler) -> Handler:
        return _mark(h, RouteAccess(pending_password_ok=pending_password_ok))

    return wrap(handler) if handler is not None else wrap


def requires(action: str, *, camera_param: str | None = "camera_id") -> Callable[[Handler], Handler]:
    def wrap(h: Handler) -> Handler:
        return _mark(h, RouteAccess(action=action, camera_param=camera_param))

    return wrap


def route_access(handler: Any) -> RouteAccess | None:
    """The declaration of a handler (functions, bound methods, class-based views)."""
    access = getattr(handler, ACCESS_ATTR, None)
    if access is None and hasattr(handler, "__func__"):
        access = getattr(handler.__func__, ACCESS_ATTR, None)
    return access


def principal(request: web.Request) -> Principal:
    """The signed-in user of a request that passed the guard."""
    return request[PRINCIPAL]
