"""Security headers on every response and the session cookie under HTTPS (issue 15 item 12),
checked on a real gateway over real HTTP. That the web client still works under the policy
is shown by the Chromium tests (test_webclient*.py), which run with these headers."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures_app import camera_toml

CAM = camera_toml("cam", "demo", width=320, height=240, keyframe_interval=1.0)
ROOT = Path(__file__).resolve().parent.parent


def assert_security_headers(path: str, headers) -> None:
    csp = headers.get("Content-Security-Policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ") if d}
    assert directives.get("script-src") == ["'self'"], (path, csp)
    assert directives.get("style-src") == ["'self'"], (path, csp)
    assert directives.get("frame-ancestors") == ["'none'"] and directives.get("object-src") == ["'none'"], (path, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (path, csp)
    assert headers.get("X-Frame-Options") == "DENY", path
    assert headers.get("X-Content-Type-Options") == "nosniff", path
    assert headers.get("Referrer-Policy") == "no-referrer", path


async def test_every_response_carries_the_headers_and_data_is_never_cached(make_gateway) -> None:
    gw = await make_gateway(CAM)
    await gw.wait_online("cam")
    data_paths = [
        "/api/session", "/api/cameras", "/api/cameras/cam", "/api/cameras/cam/snapshot.jpg",
        "/api/audit", "/api/no-such-route",
    ]
    for path in data_paths:
        async with gw.session.get(gw.url + path) as resp:
            await resp.read()
            assert_security_headers(path, resp.headers)
            assert resp.headers.get("Cache-Control") == "private, no-store", (path, resp.status)
            assert "Strict-Transport-Security" not in resp.headers  # plain HTTP here
    async with gw.anonymous.get(gw.url + "/api/cameras") as resp:  # refusals too
        assert resp.status == 401
        assert_security_headers("anonymous", resp.headers)
        assert resp.headers["Cache-Control"] == "private, no-store"
    for path in ("/", "/static/js/app.js", "/static/css/app.css"):
        async with gw.anonymous.get(gw.url + path) as resp:
            assert resp.status == 200
            assert_security_headers(path, resp.headers)
    async with gw.anonymous.get(gw.url + "/static/js/app.js") as resp:
        assert "no-store" not in resp.headers.get("Cache-Control", "")  # the client's own code may be cached


def test_the_page_has_no_inline_script_or_style() -> None:
    page = (ROOT / "webclient" / "index.html").read_text()
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", page))
    assert "<style" not in page and " style=" not in page and not re.search(r"\son[a-z]+=", page)
