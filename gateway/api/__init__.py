"""HTTP API: routes grouped by resource, one error middleware, JSON through msgspec."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web

from gateway.db import is_unavailable
from gateway.errors import BadRequest, GatewayError

logger = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json", headers=headers)


#: The largest id a database row can have (a signed 64-bit integer).
MAX_ID = 2**63 - 1


def whole_number(name: str, raw: str, *, low: int = 1, high: int = MAX_ID) -> int:
    """``raw`` as a whole number from ``low`` to ``high``, else a 400 naming ``name``
    (a number beyond 64 bits must never reach the database)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, not {raw[:40]!r}")
    return int(raw)


def path_id(request: web.Request, name: str) -> int:
    """The path parameter ``name`` as a database id (400 with the reason otherwise)."""
    return whole_number(name, request.match_info[name])


def error_body(status: int, message: str) -> web.Response:
    return json_response({"error": message, "status": status}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Map ``GatewayError`` to its status with a JSON reason; never leak a traceback."""
    try:
        return await handler(request)
    except GatewayError as exc:
        if exc.status >= 500:
            logger.warning("%s %s: %s", request.method, request.path, exc.message)
        return error_body(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.empty_body or exc.status < 400:
            raise
        return error_body(exc.status, exc.reason)
    except Exception as exc:
        if is_unavailable(exc):  # locked or unreachable for now: say so, let the client retry
            logger.warning("%s %s: database unavailable: %s", request.method, request.path, exc)
            response = error_body(503, "database unavailable; try again in a moment")
            response.headers["Retry-After"] = "5"
            return response
        logger.exception("%s %s: internal error", request.method, request.path)
        return error_body(500, "internal error")
