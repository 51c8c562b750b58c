"""The webhook event sink against real HTTP receivers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from citygate_plugins.events.webhook import verify_signature
from gateway.errors import ConfigErrors
from tests.fixtures_app import camera_toml

SECRET = "correct horse battery staple"


@dataclass
class Receiver:
    status: int = 200
    calls: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((time.monotonic(), dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=self.status, text="ok" if self.status == 200 else "broken")

    def kinds(self) -> list[str]:
        return [json.loads(body)["kind"] for _, _, body in self.calls]


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    servers = []
    made = []
    for status in (200, 500):
        receiver = Receiver(status=status)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        receiver.url = str(server.make_url("/hook"))
        servers.append(server)
        made.append(receiver)
    try:
        yield made[0], made[1]
    finally:
        for server in servers:
            await server.close()


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_signed_delivery_retries_and_alarm(make_gateway, receivers, monkeypatch):
    good, bad = receivers
    monkeypatch.setenv("CG_TEST_WEBHOOK_SECRET", SECRET)
    gw = await make_gateway(
        camera_toml("c1", "demo", width=320, height=240),
        gateway_toml=f"""
        [[events.webhooks]]
        url = "{good.url}"
        secret-env = "CG_TEST_WEBHOOK_SECRET"
        kinds = ["push.*", "webhook.failed"]

        [[events.webhooks]]
        url = "{bad.url}"
        secret = "another secret"
        kinds = ["push.created", "webhook.failed"]
        retries = 2
        backoff-initial = 0.3
        timeout = 2
        """,
    )
    await gw.sign_in("station-a", role="rescue-station")
    ws = await gw.session.ws_connect(gw.url + "/api/events")
    async with gw.session.post(
        gw.url + "/api/pushes", json={"cameras": ["c1"], "stations": ["station-a"], "reason": "Bridge collapse", "minutes": 5}
    ) as resp:
        assert resp.status == 201
        created = await resp.json()

    # Delivered, signed over "<timestamp>.<body>" with the secret from the environment.
    await asyncio.wait_for(good.arrived.wait(), 5)
    _, headers, body = good.calls[0]
    payload = json.loads(body)
    assert payload["kind"] == "push.created" and payload["user"] == "tester"
    assert payload["detail"]["id"] == created["id"] and payload["detail"]["reason"] == "Bridge collapse"
    assert headers["X-Citygate-Event"] == "push.created" and headers["Content-Type"] == "application/json"
    timestamp = headers["X-Citygate-Timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Citygate-Signature"] == expected
    assert abs(int(timestamp) - time.time()) < 5
    assert verify_signature(SECRET, timestamp, body, headers["X-Citygate-Signature"])
    assert not verify_signature("wrong", timestamp, body, headers["X-Citygate-Signature"])
    assert not verify_signature(SECRET, timestamp, body + b" ", headers["X-Citygate-Signature"])

    # The failing receiver: tried 3 times with growing gaps; the gateway answers meanwhile.
    while len(bad.calls) < 3:
        started = time.monotonic()
        async with gw.session.get(gw.url + "/api/health") as resp:
            assert resp.status == 200
        assert time.monotonic() - started < 0.5, "the gateway stalled while a webhook was retried"
        await asyncio.sleep(0.05)
        assert len(bad.calls) <= 3
    times = [t for t, _, _ in bad.calls]
    assert times[1] - times[0] >= 0.25 and times[2] - times[1] >= 0.55, times
    deliveries = {h["X-Citygate-Delivery"] for _, h, _ in bad.calls}
    assert len(deliveries) == 1  # one delivery, retried

    # ... then given up, with an alarm: on the events channel and to the other receiver,
    # never to the failing receiver itself.
    deadline = time.monotonic() + 5
    alarm = None
    while alarm is None:
        msg = json.loads((await asyncio.wait_for(ws.receive(), max(deadline - time.monotonic(), 0.01))).data)
        if msg["type"] == "event" and msg["event"]["kind"] == "webhook.failed":
            alarm = msg["event"]["detail"]
    assert alarm["event"] == "push.created" and alarm["attempts"] == 3 and alarm["error"] == "HTTP 500"
    assert alarm["target"] == bad.url  # no query or credentials in it to redact here
    await wait_for(lambda: "webhook.failed" in good.kinds(), 3, "the alarm at the other receiver")
    await asyncio.sleep(0.5)
    assert bad.kinds() == ["push.created"] * 3

    # A revocation goes to the receiver that wants push.*, not to the one that wants only push.created.
    async with gw.session.delete(f"{gw.url}/api/pushes/{created['id']}") as resp:
        assert resp.status == 200
    await wait_for(lambda: "push.revoked" in good.kinds(), 3, "push.revoked")
    assert bad.kinds() == ["push.created"] * 3
    await ws.close()


def test_webhook_config_is_validated(tmp_path):
    from gateway import config

    (tmp_path / "gateway.toml").write_text('[[events.webhooks]]\nurl = "ftp://x"\nsecret = "s"\n')
    with pytest.raises(ConfigErrors) as err:
        config.load(tmp_path, vendors={})
    assert "events.webhooks[0]" in str(err.value) and "http" in str(err.value)
    (tmp_path / "gateway.toml").write_text('[[events.webhooks]]\nurl = "http://x/"\n')
    with pytest.raises(ConfigErrors) as err:
        config.load(tmp_path, vendors={})
    assert "secret-env" in str(err.value)
    (tmp_path / "gateway.toml").write_text('[[events.webhooks]]\nurl = "http://x/"\nsecret-env = "NOPE_NOT_SET"\nretry = 3\n')
    with pytest.raises(ConfigErrors) as err:
        config.load(tmp_path, vendors={}, env={})
    assert "retry" in str(err.value)
    (tmp_path / "gateway.toml").write_text('[[events.webhooks]]\nurl = "http://x/"\nsecret-env = "NOPE_NOT_SET"\n')
    with pytest.raises(ConfigErrors) as err:
        config.load(tmp_path, vendors={}, env={})
    assert "NOPE_NOT_SET" in str(err.value)
    (tmp_path / "gateway.toml").write_text('[push]\nmax-minutes = 30\n')
    with pytest.raises(ConfigErrors) as err:
        config.load(tmp_path, vendors={})
    assert "default-minutes" in str(err.value)
