"""A real OpenID provider on loopback for the OIDC sign-in tests, and a browser-like client.

The provider is panva's certified ``oidc-provider`` (npm), run with Debian's Node.js from
``tests/oidc_provider/`` (``provider.mjs``; installed by ``scripts/test.sh`` with ``npm ci``
from the lock file, never at test time). Its issuer is ``http://localhost:<port>`` while the
gateway runs on ``127.0.0.1``: two sites, as a real provider and gateway are, so a browser
applies its SameSite rules to the redirects. Each test gateway registers its own client
(dynamic client registration, RFC 7591) for its own callback URL.

``follow_sign_in`` is a browser in miniature: it follows redirects one by one and submits
the provider's own HTML forms (login, consent, sign-out confirmation) as a person would.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest

OIDC_DIR = Path(__file__).resolve().parent / "oidc_provider"
NODE = shutil.which("node") or "/usr/bin/node"
INSTALLED = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"
#: Who can sign in at the test provider (the dev login form takes any password).
ACCOUNTS = {
    "alice": {"preferred_username": "alice", "name": "Alice Example", "groups": ["/cctv-operators", "/north-district"]},
    "bob": {"preferred_username": "Bob", "name": "Bob Supervisor", "groups": ["/cctv-supervisors"]},
    "carol": {"preferred_username": "carol", "name": "Carol Canteen", "groups": ["/canteen"]},
    # names the gateway's local account "tester": must never take it over
    "mallory": {"preferred_username": "tester", "name": "Mallory", "groups": ["/cctv-supervisors"]},
}


def _missing() -> str | None:
    if not Path(NODE).exists():
        return "no Node.js (apt-get install nodejs npm; scripts/test.sh does it)"
    if not INSTALLED.is_file():
        return "the test OpenID provider is not installed: npm ci --prefix tests/oidc_provider (scripts/test.sh does it)"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):  # CI installs it: a missing install step must fail, not skip
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OpenIdProvider:
    issuer: str
    log: list[str] = field(default_factory=list)

    async def register_client(self, redirect_url: str, post_logout_url: str) -> tuple[str, str]:
        """(client id, client secret) of a new confidential client (RFC 7591 registration)."""
        meta = {
            "redirect_uris": [redirect_url], "post_logout_redirect_uris": [post_logout_url],
            "grant_types": ["authorization_code"], "response_types": ["code"], "client_name": "Citygate test",
        }
        async with aiohttp.ClientSession() as s, s.post(self.issuer + "/reg", json=meta) as resp:
            body = await resp.json()
            assert resp.status == 201, body
        return body["client_id"], body["client_secret"]

    async def control(self, path: str, body: dict | None = None) -> None:
        """The harness's test controls (``/__test/next-id-token``, ``/__test/rotate-keys``)."""
        async with aiohttp.ClientSession() as s, s.post(self.issuer + path, json=body or {}) as resp:
            assert resp.status == 204, await resp.text()


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenIdProvider]:
    """oidc-provider on loopback for the whole test module; stopped afterwards."""
    reason = _missing()
    if reason:
        _skip_or_fail(reason)
    work = tmp_path_factory.mktemp("oidc")
    (work / "accounts.json").write_text(json.dumps(ACCOUNTS))
    port = free_port()
    proc = subprocess.Popen(
        [NODE, str(OIDC_DIR / "provider.mjs"), str(port), str(work / "accounts.json")],
        cwd=OIDC_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    provider = OpenIdProvider(f"http://localhost:{port}")
    ready = threading.Event()

    def read() -> None:  # keeps the pipe drained; the first "listening" line says it is up
        assert proc.stdout is not None
        for line in proc.stdout:
            provider.log.append(line.rstrip())
            if line.startswith("listening "):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(30):
            raise AssertionError("the OpenID provider did not start:\n" + "\n".join(provider.log))
        yield provider
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=5)


class _Forms(HTMLParser):
    """The forms of a page: action, method and their fields (incl. ``form=`` buttons)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self._by_id: dict[str, dict] = {}
        self._current: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = {"action": a.get("action", ""), "method": a.get("method", "get").lower(), "fields": {}}
            self.forms.append(self._current)
            if a.get("id"):
                self._by_id[a["id"]] = self._current
        elif tag == "input" and a.get("name"):
            form = self._by_id.get(a["form"]) if a.get("form") else self._current
            if form is not None:
                form["fields"].setdefault(a["name"], a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def page_forms(html: str) -> list[dict]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


@dataclass
class Journey:
    """Where a browser went: the pages it filled in and where it landed."""

    landed: str
    prompts: list[str]  #: "login", "consent", "logout" in the order met


async def follow(
    session: aiohttp.ClientSession, url: str, *, done: Callable[[str], bool], login: str = "alice",
    rewrite: Callable[[str], str] | None = None, max_steps: int = 20,
) -> Journey:
    """Request ``url``, then follow redirects and submit the provider's forms until a
    redirect to a URL for which ``done`` is true (not requested). ``rewrite`` may change
    each redirect's URL before it is followed (a tampered callback)."""
    prompts: list[str] = []
    method, data = "GET", None
    for _ in range(max_steps):
        async with session.request(method, url, data=data, allow_redirects=False) as resp:
            if resp.status in (302, 303):
                url, method, data = urljoin(url, resp.headers["Location"]), "GET", None
                if rewrite is not None:
                    url = rewrite(url)
                if done(url):
                    return Journey(url, prompts)
                continue
            body = await resp.text()
            assert resp.status == 200, f"{method} {url}: {resp.status} {body[-700:]}"
        forms = page_forms(body)
        assert forms, f"{url}: neither a redirect nor a form: {body[:500]}"
        fields = dict(forms[0]["fields"])
        prompt = fields.get("prompt") or ("logout" if "xsrf" in fields else "form")
        prompts.append(prompt)
        if prompt == "login":
            fields.update(login=login, password="any-password-the-dev-form-takes")
        elif prompt == "logout":
            fields["logout"] = "yes"
        url, method, data = urljoin(url, forms[0]["action"]), forms[0]["method"].upper(), fields
    raise AssertionError(f"no end after {max_steps} steps: {url}")
