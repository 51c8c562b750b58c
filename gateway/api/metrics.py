"""``GET /metrics``: the gateway's state in the Prometheus text format, for ops dashboards and
alerts (a camera down, a recorder that stopped writing, a replica falling behind, an audit
chain that has not been signed for a while).

Everything is read from the running objects at scrape time, so there are no counters to keep
in step with the code. The route needs ``system.monitor`` (the ``monitoring`` role: a
service account whose API token the scraper sends as ``Authorization: Bearer``); it shows
every camera's id and area but no video.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterable

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from gateway import __version__
from gateway.access.checkpoints import stored_checkpoints
from gateway.access.guard import requires
from gateway.api.openapi import Media, api
from gateway.access.policy import Action
from gateway.appkeys import CAMERAS, DATABASE, RECORDING, STARTED_AT
from gateway.db import audit
from gateway.live.hls import HLS_VIEWERS
from gateway.live.webrtc import WEBRTC_SESSIONS
from gateway.media.source import SourceState

CAMERA = ["camera"]


class _Scrape:
    """A collector over the families read for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _camera_families(app: web.Application) -> list[Metric]:
    up = GaugeMetricFamily("citygate_camera_up", "1 while the camera delivers pictures", labels=["camera", "area", "vendor"])
    reconnects = CounterMetricFamily("citygate_camera_reconnects", "Times the camera's stream was lost", labels=CAMERA)
    frames = CounterMetricFamily("citygate_camera_frames", "Frames received from the camera", labels=CAMERA)
    received = CounterMetricFamily("citygate_camera_received_bytes", "Video bytes received from the camera", labels=CAMERA)
    fps = GaugeMetricFamily("citygate_camera_fps", "Frames per second over the last seconds", labels=CAMERA)
    bitrate = GaugeMetricFamily("citygate_camera_bitrate_bits_per_second", "Bits per second over the last seconds", labels=CAMERA)
    masked = GaugeMetricFamily("citygate_camera_masked", "1 while privacy masks are applied", labels=CAMERA)
    sub = GaugeMetricFamily("citygate_camera_sub_stream_running", "1 while the sub stream is pulled", labels=CAMERA)
    keyframes = CounterMetricFamily(
        "citygate_camera_keyframe_requests", "Keyframes the camera sent on request for a new connection", labels=CAMERA
    )
    viewers = GaugeMetricFamily("citygate_live_viewers", "Live viewers now", labels=["camera", "transport"])
    sessions, hls_views = app.get(WEBRTC_SESSIONS), app.get(HLS_VIEWERS)
    webrtc = Counter(s.camera_id for s in sessions) if sessions is not None else Counter()
    hls = Counter(camera for _, camera in hls_views.views()) if hls_views is not None else Counter()
    for camera in app[CAMERAS].running():  # this node's cameras: every node is scraped
        cid, status, stats = camera.id, camera.status, camera.hub.stats()
        up.add_metric([cid, camera.config.area, camera.config.vendor], float(status.state == SourceState.ONLINE))
        reconnects.add_metric([cid], status.reconnects)
        frames.add_metric([cid], stats.packets)
        received.add_metric([cid], stats.bytes)
        fps.add_metric([cid], round(stats.fps, 2))
        bitrate.add_metric([cid], round(stats.bitrate))
        masked.add_metric([cid], float(camera.masked))
        sub.add_metric([cid], float(camera.sub.running))
        keyframes.add_metric([cid], camera.keyframe_requests)
        viewers.add_metric([cid, "webrtc"], webrtc[cid])
        viewers.add_metric([cid, "hls"], hls[cid])
    return [up, reconnects, frames, received, fps, bitrate, masked, sub, keyframes, viewers]


async def _recording_families(app: web.Application) -> list[Metric]:
    service = app.get(RECORDING)
    if service is None:
        return []
    status = await service.status()
    segments = CounterMetricFamily("citygate_recording_segments", "Segments stored since start", labels=CAMERA)
    stored = CounterMetricFamily("citygate_recording_bytes", "Bytes stored since start", labels=CAMERA)
    failures = CounterMetricFamily("citygate_recording_write_failures", "Segments that could not be stored", labels=CAMERA)
    gaps = CounterMetricFamily("citygate_recording_gaps", "Gaps in the recording since start", labels=CAMERA)
    last = GaugeMetricFamily(
        "citygate_recording_last_segment_end_timestamp_seconds", "Wall clock at the end of the newest stored segment", labels=CAMERA
    )
    for cid, stats in status.cameras.items():
        segments.add_metric([cid], stats.segments)
        stored.add_metric([cid], stats.bytes)
        failures.add_metric([cid], stats.write_failures)
        gaps.add_metric([cid], stats.gaps)
        if stats.last_segment_end is not None:
            last.add_metric([cid], stats.last_segment_end)
    families: list[Metric] = [segments, stored, failures, gaps, last]
    if status.usage is not None:
        families.append(GaugeMetricFamily("citygate_storage_used_bytes", "Bytes used by recordings", value=status.usage.used_bytes))
        if status.usage.free_bytes is not None:
            families.append(GaugeMetricFamily("citygate_storage_free_bytes", "Free bytes on the storage", value=status.usage.free_bytes))
    if status.replication is not None:
        families.append(GaugeMetricFamily(
            "citygate_replication_pending_segments", "Segments not yet on the replica", value=status.replication.pending
        ))
        families.append(GaugeMetricFamily(
            "citygate_replication_oldest_pending_seconds", "Age of the oldest segment not yet replicated",
            value=status.replication.oldest_age,
        ))
    if service.verifier is not None:  # what the last read-back of the replica found (at most a minute old)
        report = await service.verifier.cached_report()
        held = GaugeMetricFamily(
            "citygate_replica_segments", "Segments by what the replica holds: expected, verified (same SHA-256), "
            "missing, corrupted, pending, unverified", labels=["camera", "state"],
        )
        checked = GaugeMetricFamily(
            "citygate_replica_last_verified_timestamp_seconds", "When the replica's copies were last read back", labels=CAMERA
        )
        for cam in report.cameras:
            for state in ("expected", "verified", "missing", "corrupted", "pending", "unverified"):
                held.add_metric([cam.camera, state], getattr(cam, state))
            if cam.last_verified is not None:
                checked.add_metric([cam.camera], cam.last_verified)
        families += [held, checked]
    return families


async def _audit_families(app: web.Application) -> list[Metric]:
    db = app[DATABASE]
    async with db.connect() as conn:
        head = (await conn.execute(sa.select(sa.func.max(audit.c.id)))).scalar() or 0
    newest = await stored_checkpoints(db, limit=1)
    families: list[Metric] = [GaugeMetricFamily("citygate_audit_entries", "Entries in the audit chain", value=head)]
    if newest:
        families.append(GaugeMetricFamily(
            "citygate_audit_signed_entries", "Audit entries covered by the newest signed checkpoint", value=newest[-1].entry_id
        ))
        families.append(GaugeMetricFamily(
            "citygate_audit_checkpoint_timestamp_seconds", "When the newest checkpoint was signed", value=newest[-1].at
        ))
    return families


@api(summary="Prometheus metrics", responses={200: Media("text/plain")})
@requires(Action.SYSTEM_MONITOR, camera_param=None)
async def metrics(request: web.Request) -> web.Response:
    app = request.app
    info = InfoMetricFamily("citygate_build", "Citygate version", value={"version": __version__})
    uptime = GaugeMetricFamily("citygate_uptime_seconds", "Seconds since the gateway started", value=time.monotonic() - app[STARTED_AT])
    # leaks show here first (a soak watches them: bench/soak.py)
    tasks = GaugeMetricFamily("citygate_asyncio_tasks", "Tasks alive on the event loop", value=len(asyncio.all_tasks()))
    threads = GaugeMetricFamily("citygate_threads", "Threads of the process", value=threading.active_count())
    families = [info, uptime, tasks, threads, *_camera_families(app), *await _recording_families(app), *await _audit_families(app)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(families))  # type: ignore[arg-type]
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics, name="metrics")
