"""Real Chromium for the web client's tests: Debian's browser driven by Playwright.

Only Playwright's driver is used (no ``playwright install``): the system Chromium at
``/usr/bin/chromium`` (or ``$CITYGATE_CHROMIUM``). Loaded from ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

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


@pytest.fixture
async def browser() -> AsyncIterator[playwright_api.Browser]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


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
