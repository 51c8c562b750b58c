"""HTTP API: routes grouped by resource, one error middleware, JSON through msgspec."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web

from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json", headers=headers)


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
    except Exception:
        logger.exception("%s %s: internal error", request.method, request.path)
        return error_body(500, "internal error")
