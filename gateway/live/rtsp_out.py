"""The authenticated RTSP/RTSPS re-stream (``[rtsp-out]``): every camera's public hub,
masks applied, at ``rtsp://host:port/cameras/{id}`` and ``/cameras/{id}/sub``.
"""

from __future__ import annotations

from urllib.parse import quote

from gateway.config import Config

PROFILES = ("main", "sub")


def stream_uri(config: Config, camera_id: str, profile: str = "main") -> str:
    """The re-stream URL of ``camera_id`` (``profile`` "main" or "sub") as clients see it."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (known: main, sub)")
    out = config.rtsp_out
    scheme = "rtsps" if out.tls_cert else "rtsp"
    host = out.public_host or out.bind
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    path = f"/cameras/{quote(camera_id, safe='')}"
    if profile == "sub":
        path += "/sub"
    return f"{scheme}://{host}:{out.port}{path}"
