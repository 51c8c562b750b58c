"""The ``evidence`` export format: recorded video as it was stored, in a signed package.

A ZIP (stored, not compressed) holding, per camera, the recorded segments joined into one
MP4 (``cameras/<camera>.mp4``; ``<camera>-2.mp4`` ... when the codec parameters changed
during the range). The fragments are the recorded bytes unchanged: no remux, no
re-encode; whatever privacy masks applied at recording are in the picture, nothing else.
Whole segments are included, so the files cover at least the requested range.

``manifest.json`` lists the cameras, requested and covered ranges, every gap with its
reason, the request and approval (who, when, case, authority, legal basis), who produced
the package and when, every source segment with its recorded SHA-256, and the SHA-256
of every file in the package. ``manifest.sig`` is the gateway's Ed25519 signature over
the exact manifest bytes; ``public-key.pem`` is the gateway's public key.
Check with ``citygate export verify PACKAGE.zip --key gateway-public-key.pem``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway import hookimpl
from gateway.evidence.package import ExportJob, PackageWriter, camera_description, join_segments
from gateway.interfaces import ExportFormat


def write_evidence(job: ExportJob, output_path: str, format_id: str = "evidence") -> dict[str, Any]:
    """Blocking: build the package; returns the manifest (without its file list)."""
    pkg = PackageWriter(output_path)
    try:
        cameras = []
        for extract in job.cameras:
            def name(n: int, cam: str = extract.camera) -> str:
                return f"cameras/{cam}.mp4" if n == 0 else f"cameras/{cam}-{n + 1}.mp4"

            files = join_segments(job, extract, lambda path, cam=extract.camera: pkg.open(path, camera=cam), name)
            cameras.append({**camera_description(extract), "files": [f.describe() for f in files]})
        manifest = {**job.base_manifest(format_id), "cameras": cameras, "processing": "none: recorded fragments copied unchanged"}
        pkg.finish(manifest, job.signer)
    except BaseException:
        pkg.abort()
        raise
    return manifest


class EvidenceExport(ExportFormat):
    media_type = "application/zip"
    suffix = ".zip"
    title = "Evidence package (signed, unaltered video)"

    @staticmethod
    def id() -> str:
        return "evidence"

    async def produce(self, job: ExportJob, output_path: str) -> None:
        await asyncio.to_thread(write_evidence, job, output_path)


@hookimpl(trylast=True)
def gateway_register_export_formats(register: Callable[[type[ExportFormat]], None]) -> None:
    """Register the signed evidence package."""
    register(EvidenceExport)
