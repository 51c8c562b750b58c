"""The events channel: ``GET /api/events`` upgrades to a WebSocket carrying notices.

Only signed-in users connect (no session: 401 before the upgrade; a foreign ``Origin``:
403). Each connection sees only what its user may see:

- ``push.*``: a station receives the pushes sent to it (other stations are not named);
  senders receive their pushes, and holders of ``push.send`` every push;
- events about a camera (``camera.online``, ``camera.offline``, ``ptz.*``,
  ``recording.*``): users who may view that camera;
- observations of video analytics (``analytics.<kind>``: ``analytics.count``,
  ``analytics.wrong-direction``...): holders of ``analytics.view`` on that camera;
  plate reads (``analytics.plate``: personal data) only to holders of ``plates.search`` there;
- ``plates.watchlist.hit`` (a read matching the plate watchlist): users who may view that
  camera, like other camera events (operators, stations it was pushed to);
- ``webhook.failed``: holders of ``push.send`` and administrators (``users.manage``);
- anything else (audit entries included) is not sent.

Messages are JSON text frames:

``{"type": "state", "now": <epoch>, "user": "<name>", "pushes": [...]}``
    first, right after connecting: the pushes active for this user as a station, so a
    station that connects late (or reconnects) shows them at once;
``{"type": "event", "event": {"kind", "at", "camera", "user", "detail"}}``
``{"type": "ping", "now": <epoch>}``
    every ``PING_INTERVAL`` seconds, so clients notice a dead connection (WebSocket
    ping frames run as well, so the server notices dead clients).

The session is re-checked every second and at once when an account changes: when it
ends, expires or the account is disabled, the socket closes with code 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from gateway.access.control import VIEW_ACTIONS
from gateway.access.guard import Principal, authenticated, principal
from gateway.api.openapi import JsonObject, api
from gateway.access.policy import Action
from gateway.appkeys import ACCESS, EVENTS, EVENTS_CHANNEL, IDENTITY, PUSHES
from gateway.errors import Forbidden, NotFound
from gateway.interfaces import Event

logger = logging.getLogger(__name__)

PING_INTERVAL = 15.0
SESSION_CHECK = 1.0
#: Close code for "your session ended" (4000-4999 are the application's).
CLOSE_SESSION_ENDED = 4401

_encoder = msgspec.json.Encoder()


class EventsChannel:
    """The open sockets of one gateway, and the rule of who sees which event."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.sockets: set[web.WebSocketResponse] = set()

    def view(self, who: Principal, event: Event) -> dict[str, Any] | None:
        """The event as ``who`` may see it, or None when it is not for them."""
        kind = event.kind
        if kind.startswith("audit."):
            return None
        if kind.startswith("push."):
            return self._push_view(who, event)
        if kind == "webhook.failed":
            access = self.app[ACCESS]
            actions = access.actions_for(who)
            return _plain(event) if Action.PUSH_SEND in actions or Action.USERS_MANAGE in actions else None
        if event.camera is not None:
            access = self.app[ACCESS]
            # observations of analyzers (counts, rule events): for holders of analytics.view
            actions = (Action.ANALYTICS_VIEW,) if kind.startswith("analytics.") else VIEW_ACTIONS
            if kind == "analytics.plate":  # a plate is personal data: for those who may search plates
                actions = (Action.PLATES_SEARCH,)
            try:
                visible = any(access.decide(who, action, event.camera) for action in actions)
            except NotFound:
                return None
            return _plain(event) if visible else None
        return None

    def _push_view(self, who: Principal, event: Event) -> dict[str, Any] | None:
        detail = event.detail
        stations = detail.get("stations") or []
        service = self.app[PUSHES]
        if event.user == who.username or service.is_sender(who):
            return _plain(event)
        if who.username in stations:
            return _plain(event, detail={**detail, "stations": [who.username], "ended_by": None})
        return None

    def state(self, who: Principal) -> dict[str, Any]:
        service = self.app[PUSHES]
        now = service.now()
        return {
            "type": "state",
            "now": now,
            "user": who.username,
            "pushes": [p.view(now, station=who.username) for p in service.active_for_station(who.username)],
        }

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"gateway shutting down")


def _plain(event: Event, *, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": event.kind, "at": event.at, "camera": event.camera, "user": event.user,
        "detail": event.detail if detail is None else detail,
    }


def _same_origin(request: web.Request) -> bool:
    """Browsers send Origin with every WebSocket handshake; it must be this gateway."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (API clients, tests): the session token is the proof
    return urlsplit(origin).netloc.lower() == request.host.lower()


@api(summary="Events over a WebSocket (upgrade required)", responses={101: None}, tag="events")
@authenticated
async def events_socket(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    if not _same_origin(request):
        raise Forbidden("the events channel is open to this gateway's own pages only")
    channel = request.app[EVENTS_CHANNEL]
    ws = web.WebSocketResponse(heartbeat=PING_INTERVAL * 2, max_msg_size=4096)
    await ws.prepare(request)
    channel.sockets.add(ws)
    identity = request.app[IDENTITY]
    changed = asyncio.Event()
    listener = lambda _user_id: changed.set()  # noqa: E731
    identity.add_listener(listener)
    current = {"who": who}
    subscription = request.app[EVENTS].subscribe()

    async def forward() -> None:
        async for event in subscription:
            message = channel.view(current["who"], event)
            if message is not None:
                await ws.send_str(_encoder.encode({"type": "event", "event": message}).decode())

    async def watch_session() -> None:
        last_ping = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), SESSION_CHECK)
            changed.clear()
            now_who = await identity.principal_for_session(who.session_id)
            if now_who is None:
                logger.info("events: closing %s's channel: the session ended", who.username)
                await ws.close(code=CLOSE_SESSION_ENDED, message=b"session ended")
                return
            current["who"] = now_who
            if time.monotonic() - last_ping >= PING_INTERVAL:
                last_ping = time.monotonic()
                await ws.send_str(_encoder.encode({"type": "ping", "now": time.time()}).decode())

    forwarder = asyncio.create_task(forward(), name=f"events-forward-{who.username}")
    watcher = asyncio.create_task(watch_session(), name=f"events-session-{who.username}")
    try:
        await asyncio.sleep(0)  # let the forwarder subscribe before the state is taken
        await ws.send_str(_encoder.encode(channel.state(who)).decode())
        async for msg in ws:  # clients send nothing that matters; read to see the close
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
            if watcher.done() or forwarder.done():
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        for task in (forwarder, watcher):
            task.cancel()
        for task in (forwarder, watcher):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await subscription.aclose()
        identity.remove_listener(listener)
        channel.sockets.discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


async def close_on_shutdown(app: web.Application) -> None:
    """``on_shutdown``: every events socket closed before aiohttp waits for open requests."""
    await app[EVENTS_CHANNEL].close_all()


def setup(app: web.Application) -> None:
    app.router.add_get("/api/events", events_socket, name="events")
