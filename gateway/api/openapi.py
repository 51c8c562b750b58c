"""The OpenAPI 3.1 document, generated from the routes themselves (never written by hand).

Each handler declares what it takes and answers with ``@api(...)``; the guard's decorators
(``gateway.access.guard``) already say who may call it. ``openapi_document(app)`` walks
``app.router``, joins the two declarations and turns the msgspec types into JSON Schema with
``msgspec.json.schema_components``, so the schema a client reads is the one the handler
decodes with. ``GET /api/openapi.json`` serves it to signed-in users.

A route without an ``@api`` declaration is listed in ``undeclared(app)``; the test of this
module fails on it, so no route can join the API without a contract.

Declarations::

    @api(summary="...", query={"limit": Limit}, body=NewThing, responses={201: ThingView})
    @requires("things.make", camera_param=None)
    async def make_thing(request): ...

``responses`` maps a status to a msgspec type (JSON), to ``Media("video/mp4")`` (a body that
is not JSON) or to ``None`` (no body). Every operation also answers ``4XX`` with
``ErrorBody``, the error middleware's one shape; ``extra_errors`` adds 5xx codes a handler
gives on purpose (503 while a camera has no picture).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from aiohttp import web

from gateway import __version__
from gateway.access.guard import authenticated, route_access

API_ATTR = "__citygate_api__"
#: The document's own route; the web client's docs page reads it.
OPENAPI_PATH = "/api/openapi.json"
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every refusal and mistake: the reason in words and the HTTP status."""

    error: str
    status: int


@dataclass(frozen=True, slots=True)
class Media:
    """A response (or request) body that is not JSON: playlists, video, CSV, SDP, PEM."""

    media_type: str
    binary: bool = False


#: Any JSON object / array of objects: for answers whose shape is built from a dict.
JsonObject = dict[str, Any]
JsonObjects = list[dict[str, Any]]
#: Any JSON at all: a loose declaration, for a route whose owner has not typed it yet.
JsonAny = Any
#: A time in a query: epoch seconds or ISO 8601 (``2026-11-21T14:00:00Z``).
Time = Annotated[str, msgspec.Meta(
    pattern=r"^(-?\d+(\.\d+)?|\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?)?)$",
    description="epoch seconds or ISO 8601",
)]
#: A database id in a path or a query: a positive 64-bit integer.
Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
#: A short free-text filter.
Text = Annotated[str, msgspec.Meta(max_length=200)]


def whole(low: int, high: int) -> Any:
    """A whole number from ``low`` to ``high`` (a query or path parameter)."""
    return Annotated[int, msgspec.Meta(ge=low, le=high)]


def enum_of(*values: str) -> Any:
    """A string that must be one of ``values`` (a filter with a fixed set of choices)."""
    from typing import Literal

    return Literal[tuple(str(getattr(v, "value", v)) for v in values)]  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class ApiSpec:
    summary: str = ""
    query: Mapping[str, Any] = field(default_factory=dict)
    #: Query parameters that must be present.
    required_query: frozenset[str] = frozenset()
    #: Types of path parameters (default: a string).
    path: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None
    responses: Mapping[int, Any] = field(default_factory=lambda: {200: JsonObject})
    extra_errors: tuple[int, ...] = ()
    tag: str = ""


def api(
    *,
    summary: str = "",
    query: Mapping[str, Any] | None = None,
    required_query: tuple[str, ...] = (),
    path: Mapping[str, Any] | None = None,
    body: Any = None,
    responses: Mapping[int, Any] | None = None,
    extra_errors: tuple[int, ...] = (),
    tag: str = "",
) -> Callable[[Any], Any]:
    """Declare a handler's request and responses for the OpenAPI document."""
    spec = ApiSpec(
        summary=summary, query=dict(query or {}), required_query=frozenset(required_query), path=dict(path or {}),
        body=body, responses=dict(responses) if responses is not None else {200: JsonObject},
        extra_errors=extra_errors, tag=tag,
    )

    def wrap(handler: Any) -> Any:
        setattr(handler, API_ATTR, spec)
        return handler

    return wrap


def api_spec(handler: Any) -> ApiSpec | None:
    spec = getattr(handler, API_ATTR, None)
    if spec is None and hasattr(handler, "__func__"):
        spec = getattr(handler.__func__, API_ATTR, None)
    return spec


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str  #: OpenAPI template: ``/api/cameras/{camera_id}``
    handler: Any
    pattern: Mapping[str, str]  #: path parameter → its regular expression, where the route has one


def operations(app: web.Application) -> list[Operation]:
    """Every API route of the app (HEAD twins and static files left out)."""
    found = []
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        if "directory" in info or "prefix" in info:
            continue  # static files
        raw = info.get("formatter") or info.get("path")
        if raw is None:
            continue
        pattern = {}
        if "pattern" in info:
            for m in re.finditer(r"\{([^}:]+):([^}]*)\}", getattr(route.resource, "_formatter", "") or ""):
                pattern[m.group(1)] = m.group(2)
        found.append(Operation(route.method, raw, route.handler, pattern))
    return found


def undeclared(app: web.Application) -> list[str]:
    """Routes without an ``@api`` declaration (the test of this module fails on any)."""
    return [f"{op.method} {op.path}" for op in operations(app) if api_spec(op.handler) is None]


def _name(handler: Any) -> str:
    fn = getattr(handler, "__func__", handler)
    return f"{getattr(fn, '__module__', 'gateway').rsplit('.', 1)[-1]}.{getattr(fn, '__name__', 'handler')}"


def _kinds(t: Any) -> tuple[Any, ...]:
    """A response's alternatives: one type, or a tuple of them (JSON or CSV by ``format``)."""
    if t is None:
        return ()
    return t if isinstance(t, tuple) else (t,)


def _content(kind: Any, schema: dict | None) -> dict:
    if isinstance(kind, Media):
        body: dict[str, Any] = {"type": "string"}
        if kind.binary:
            body["contentMediaType"] = kind.media_type
        return {kind.media_type: {"schema": body}}
    return {"application/json": {"schema": schema}}


def openapi_document(app: web.Application, *, title: str = "Citygate API") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared route of ``app``."""
    ops = [(op, api_spec(op.handler), route_access(op.handler)) for op in operations(app)]
    ops = [(op, spec, access) for op, spec, access in ops if spec is not None]
    # every msgspec type once, so shared types become shared components
    types: list[Any] = [ErrorBody]
    for _, spec, _ in ops:
        types.extend(spec.query.values())
        types.extend(spec.path.values())
        if spec.body is not None and not isinstance(spec.body, Media):
            types.append(spec.body)
        types.extend(k for t in spec.responses.values() for k in _kinds(t) if not isinstance(k, Media))
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    schema_of = {id(t): s for t, s in zip(types, schemas)}

    def schema(t: Any) -> dict:
        return schema_of[id(t)]

    error = {"description": "refused or invalid: the reason in words", "content": _content(ErrorBody, schema(ErrorBody))}
    paths: dict[str, dict[str, Any]] = {}
    for op, spec, access in ops:
        params = []
        for name in _PARAM.findall(op.path):
            ps = dict(schema(spec.path[name])) if name in spec.path else {"type": "string", "minLength": 1}
            if name in op.pattern and "pattern" not in ps and ps.get("type") == "string":
                ps["pattern"] = f"^{op.pattern[name]}$"
            params.append({"name": name, "in": "path", "required": True, "schema": ps})
        for name, t in spec.query.items():
            params.append({"name": name, "in": "query", "required": name in spec.required_query, "schema": schema(t)})
        responses: dict[str, Any] = {}
        for status, t in sorted(spec.responses.items()):
            entry: dict[str, Any] = {"description": "success" if status < 300 else "answer"}
            for k in _kinds(t):
                entry.setdefault("content", {}).update(_content(k, None if isinstance(k, Media) else schema(k)))
            responses[str(status)] = entry
        responses["4XX"] = error
        for status in spec.extra_errors:
            responses[str(status)] = error
        operation: dict[str, Any] = {
            "operationId": f"{op.method.lower()}:{op.path}",
            "summary": spec.summary or (getattr(op.handler, "__doc__", None) or "").strip().split("\n")[0],
            "tags": [spec.tag or _name(op.handler).split(".")[0]],
            "responses": responses,
        }
        if params:
            operation["parameters"] = params
        if spec.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": _content(spec.body, None if isinstance(spec.body, Media) else schema(spec.body)),
            }
        if access is not None and access.public:
            operation["security"] = []
            operation["x-citygate-access"] = {"public": True}
        else:
            operation["x-citygate-access"] = {
                "public": False,
                "action": str(access.action.value if hasattr(access.action, "value") else access.action)
                if access is not None and access.action is not None else None,
                "camera": access.camera_param if access is not None else None,
            }
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    components["ErrorBody"] = components.get("ErrorBody", schema(ErrorBody))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": "Generated from the gateway's routes and their msgspec types. "
            "x-citygate-access names the action each operation needs (on the camera in the path, "
            "where 'camera' is set); an account without it is refused with 403 and an audit entry.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "citygate_session"},
                "token": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"session": []}, {"token": []}],
    }


class _Document:
    """The generated document, built at the first request (the router is frozen by then)."""

    def __init__(self) -> None:
        self.body: bytes | None = None


OPENAPI = web.AppKey("openapi_document", _Document)


@api(summary="This document: OpenAPI 3.1 of every route, with the action each needs", responses={200: JsonObject})
@authenticated
async def get_openapi(request: web.Request) -> web.Response:
    cache = request.app[OPENAPI]
    if cache.body is None:
        cache.body = msgspec.json.encode(openapi_document(request.app))
    return web.Response(body=cache.body, content_type="application/json")


def setup(app: web.Application) -> None:
    app[OPENAPI] = _Document()
    app.router.add_get(OPENAPI_PATH, get_openapi, name="openapi")
