"""Where the web client's static files live (served at ``/`` and ``/static/``)."""

from __future__ import annotations

from pathlib import Path

WEBCLIENT_DIR = Path(__file__).resolve().parent.parent / "webclient"
