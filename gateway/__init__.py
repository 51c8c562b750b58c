"""Citygate: a video gateway for city CCTV monitoring centres.

Plugins import ``hookimpl`` from here; everything else they need lives in the public
modules ``gateway.config``, ``gateway.errors``, ``gateway.media`` and ``gateway.vendors``.
"""

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "gateway"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["hookimpl", "__version__", "PROJECT_NAME"]
