"""The webhook event sink: signed JSON POSTs of chosen events to other systems.

Configured in ``gateway.toml`` (see ``gateway.config.WebhookConfig``)::

    [[events.webhooks]]
    url = "https://dispatch.example/citygate"
    secret-env = "CITYGATE_WEBHOOK_SECRET"
    kinds = ["push.*"]          # shell-style patterns of event kinds
    timeout = 10.0              # seconds per attempt
    retries = 5                 # further attempts, 1 s, 2 s, 4 s ... apart (backoff-initial, backoff-max)

Each matching event is POSTed as JSON::

    {"id": "<delivery id>", "kind": "push.created", "at": 1767000000.123,
     "camera": null, "user": "operator1", "detail": {...}}

with the headers

``X-Citygate-Event``      the event kind
``X-Citygate-Delivery``   the delivery id (the same on every retry: receivers de-duplicate on it)
``X-Citygate-Timestamp``  Unix time of this attempt, whole seconds, decimal
``X-Citygate-Signature``  ``sha256=`` + hex HMAC-SHA256, keyed with the secret, of the bytes
                          ``<timestamp> + "." + <raw request body>``

A receiver recomputes the HMAC over the timestamp header, a dot and the body exactly as
received, compares in constant time, and refuses timestamps more than a few minutes old
(replays). ``verify_signature`` below does exactly that.

Any 2xx answer is success. Network errors, timeouts, 408, 429 and 5xx are retried with
exponential backoff; other 4xx answers are final. After the last attempt the sink gives up
with an alarm: an error in the log and a ``webhook.failed`` event on the bus (for the
events channel and other sinks). A ``webhook.failed`` event is never sent to the receiver
that failed, and a failed delivery of a ``webhook.failed`` event raises no further alarm,
so a broken receiver cannot start a loop.

The gateway never waits for a receiver: events go into a bounded queue per receiver
(``queue-size``); when it is full, new events for that receiver are dropped and logged.
Deliveries to one receiver are made one at a time, in order.

The plugin module only starts the sink; the sink itself is a small stateful object
registered with the plugin manager under ``webhook_sink.<app>`` while the gateway runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from gateway.plugin_api import Event, Gateway, WebhookConfig, hookimpl

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Citygate-Signature"
TIMESTAMP_HEADER = "X-Citygate-Timestamp"
EVENT_HEADER = "X-Citygate-Event"
DELIVERY_HEADER = "X-Citygate-Delivery"
FAILED_KIND = "webhook.failed"
#: Seconds the sink waits at shutdown for queued deliveries before dropping them.
SHUTDOWN_GRACE = 2.0
USER_AGENT = "citygate-webhook/1"

_encoder = msgspec.json.Encoder()


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Citygate-Signature`` value for ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """For receivers: is ``signature`` right for ``body``, and the timestamp recent?"""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def redacted(url: str) -> str:
    """The receiver's URL without credentials or query (for logs and alarm events)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


@dataclass(eq=False)
class _Delivery:
    id: str
    event: Event
    body: bytes


@dataclass(eq=False)
class _Receiver:
    config: WebhookConfig
    queue: asyncio.Queue[_Delivery]
    name: str
    task: asyncio.Task[None] | None = None
    dropped: int = 0
    delivered: int = 0
    failed: int = 0
    retried: int = 0

    def wants(self, kind: str) -> bool:
        return any(fnmatch.fnmatchcase(kind, pattern) for pattern in self.config.kinds)


class WebhookSink:
    """Delivers events to the configured receivers; ``gateway_handle_event`` only queues."""

    def __init__(
        self,
        webhooks: Sequence[WebhookConfig],
        *,
        publish: Callable[[Event], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._publish = publish
        self._clock = clock
        self.receivers = [
            _Receiver(config=w, queue=asyncio.Queue(w.queue_size), name=redacted(w.url)) for w in webhooks
        ]
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        for receiver in self.receivers:
            receiver.task = asyncio.create_task(self._run(receiver), name=f"webhook {receiver.name}")
        logger.info("webhooks: delivering to %s", ", ".join(r.name for r in self.receivers))

    async def aclose(self, grace: float = SHUTDOWN_GRACE) -> None:
        pending = [r.queue.join() for r in self.receivers if r.queue.qsize()]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), grace)
        for receiver in self.receivers:
            if receiver.task is not None:
                receiver.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver.task
            left = receiver.queue.qsize()
            if left:
                logger.warning("webhook %s: %d events not delivered at shutdown", receiver.name, left)
        if self._session is not None:
            await self._session.close()

    # -- the hook ------------------------------------------------------------------------
    @hookimpl
    def gateway_handle_event(self, event: Event) -> None:
        """Queue the event for every receiver that wants it; never waits."""
        failed_target = event.detail.get("target") if event.kind == FAILED_KIND else None
        body: bytes | None = None
        delivery_id = ""
        for receiver in self.receivers:
            if not receiver.wants(event.kind) or failed_target == receiver.name:
                continue
            if body is None:
                delivery_id = uuid.uuid4().hex
                try:
                    body = _encoder.encode(
                        {"id": delivery_id, "kind": event.kind, "at": event.at, "camera": event.camera,
                         "user": event.user, "detail": event.detail}
                    )
                except (TypeError, msgspec.EncodeError) as exc:
                    logger.error("webhooks: cannot encode %s as JSON: %s", event.kind, exc)
                    return
            try:
                receiver.queue.put_nowait(_Delivery(delivery_id, event, body))
            except asyncio.QueueFull:
                receiver.dropped += 1
                logger.error("webhook %s: queue full (%d); dropping %s", receiver.name, receiver.queue.maxsize, event.kind)

    # -- delivery ------------------------------------------------------------------------
    async def _run(self, receiver: _Receiver) -> None:
        while True:
            delivery = await receiver.queue.get()
            try:
                await self._deliver(receiver, delivery)
            except Exception:
                logger.exception("webhook %s: delivering %s failed", receiver.name, delivery.event.kind)
            finally:
                receiver.queue.task_done()

    async def _attempt(self, receiver: _Receiver, delivery: _Delivery) -> tuple[bool, bool, str]:
        """One POST: (delivered, worth retrying, what happened)."""
        assert self._session is not None
        config = receiver.config
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: delivery.event.kind,
            DELIVERY_HEADER: delivery.id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(config.secret or "", timestamp, delivery.body),
        }
        try:
            async with self._session.post(
                config.url, data=delivery.body, headers=headers, timeout=aiohttp.ClientTimeout(total=config.timeout),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return True, False, f"HTTP {resp.status}"
                retry = resp.status >= 500 or resp.status in (408, 429)
                return False, retry, f"HTTP {resp.status}"
        except TimeoutError:
            return False, True, f"no answer within {config.timeout:g} s"
        except aiohttp.ClientError as exc:
            return False, True, f"{type(exc).__name__}: {exc}"

    async def _deliver(self, receiver: _Receiver, delivery: _Delivery) -> None:
        config = receiver.config
        attempts = 1 + config.retries
        outcome = ""
        for attempt in range(1, attempts + 1):
            ok, retry, outcome = await self._attempt(receiver, delivery)
            if ok:
                receiver.delivered += 1
                logger.debug("webhook %s: delivered %s (%s)", receiver.name, delivery.event.kind, delivery.id)
                return
            if not retry or attempt == attempts:
                break
            receiver.retried += 1
            delay = min(config.backoff_max, config.backoff_initial * 2 ** (attempt - 1))
            logger.warning(
                "webhook %s: %s for %s (attempt %d of %d); retrying in %.1fs",
                receiver.name, outcome, delivery.event.kind, attempt, attempts, delay,
            )
            await asyncio.sleep(delay)
        receiver.failed += 1
        logger.error(
            "webhook %s: gave up on %s (delivery %s) after %d attempt(s): %s",
            receiver.name, delivery.event.kind, delivery.id, attempt, outcome,
        )
        if delivery.event.kind == FAILED_KIND:
            return  # an alarm about an alarm would never end
        self._publish(
            Event(
                kind=FAILED_KIND, at=self._clock(),
                detail={"target": receiver.name, "event": delivery.event.kind, "delivery": delivery.id,
                        "attempts": attempt, "error": outcome},
            )
        )


# ---------------------------------------------------------------------------------------
# the plugin: starts a sink per gateway when webhooks are configured


class _Closer:
    """Stops one gateway's sink at that gateway's shutdown (registered beside the sink)."""

    def __init__(self, sink: WebhookSink, gateway: Gateway, name: str) -> None:
        self.sink, self.gateway, self.name = sink, gateway, name

    @hookimpl
    async def gateway_shutdown(self, gateway: Gateway) -> None:
        if gateway is not self.gateway:
            return
        self.gateway.unregister_plugin(self.name)
        self.gateway.unregister_plugin(self.name + ".closer")
        await self.sink.aclose()


@hookimpl
async def gateway_startup(gateway: Gateway) -> None:
    webhooks = gateway.config.events.webhooks
    if not webhooks:
        return
    sink = WebhookSink(webhooks, publish=gateway.publish)
    await sink.start()
    name = f"webhook_sink.{id(gateway):x}"
    gateway.register_plugin(sink, name=name)
    gateway.register_plugin(_Closer(sink, gateway, name), name=name + ".closer")
