"""Real Chromium for the web client's tests: Debian's browser driven by Playwright.

Only Playwright's driver is used (no ``playwright install``): the system Chromium at
``/usr/bin/chromium`` (or ``$CITYGATE_CHROMIUM``). Loaded from ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright import async_api as playwright_api
except ImportError:  # the browser tests skip themselves with importorskip
    playwright_api = None

CHROMIUM = os.environ.get("CITYGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # Plain host candidates instead of mDNS names: aioice resolves mDNS names through
    # per-thread state (an asyncio.Lock and a UDP endpoint) that outlives one test's event
    # loop, so the next test's peers fail with "bound to a different event loop".
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
WEBCLIENT = Path(__file__).resolve().parent.parent / "webclient"
HLS_JS = WEBCLIENT / "node_modules" / "hls.js" / "dist" / "hls.mjs"
#: For a module's ``pytestmark``.
requires_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)


@contextlib.asynccontextmanager
async def launched_chromium() -> AsyncIterator[playwright_api.Browser]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser() -> AsyncIterator[playwright_api.Browser]:
    async with launched_chromium() as browser:
        yield browser


@pytest.fixture(scope="session")
def hls_js() -> Path:
    """hls.js installed from npm the way scripts/webclient.sh does it; skip if that cannot happen."""
    if not HLS_JS.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot install hls.js for the LL-HLS fallback")
        subprocess.run(
            [npm, "ci", "--prefix", str(WEBCLIENT), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True,
            timeout=300,
        )
    assert HLS_JS.is_file()
    return HLS_JS


async def wait_for_function(page: Any, expression: str, arg: Any = None, *, timeout: float = 30.0) -> Any:
    """``page.wait_for_function`` for pages under the gateway's Content-Security-Policy.

    Playwright polls its predicate with ``eval`` inside the page, which the policy forbids
    (no ``unsafe-eval``); ``page.evaluate`` goes through the DevTools protocol, which it does
    not restrict. ``expression`` is a JavaScript expression or function (called with ``arg``);
    ``timeout`` in seconds. Returns the first truthy value.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await page.evaluate(expression, arg)
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {expression!r}")
        await asyncio.sleep(0.05)
