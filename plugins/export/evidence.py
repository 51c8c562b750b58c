"""The ``evidence`` export format: recorded video as it was stored, in a signed package.

A ZIP (stored, not compressed) holding, per camera, the recorded segments joined into one
MP4 (``cameras/<camera>.mp4``; ``<camera>-2.mp4`` ... when the codec parameters changed
during the range). The fragments are the recorded bytes unchanged: no remux, no
re-encode — except for segments recorded before the camera's current privacy masks: those
are decoded, masked with the current masks and encoded again (a mask drawn today protects
last week's recordings), in files of their own; the manifest says which files were
re-encoded, under which mask version, and which source segments they hold.
Whole segments are included, so the files cover at least the requested range.

With ``watermark = true`` the package also holds ``watermarked/<camera>.mp4``: the same
pictures re-encoded with the request id, case and every frame's time stamped in
(``gateway.evidence.watermark``), a copy to show or hand on that says where it came
from. ``keep-unaltered = false`` leaves the unaltered files out (the manifest still lists
every source segment with its recorded SHA-256, so the gateway's catalogue can vouch
for the source).

``manifest.json`` lists the cameras, requested and covered ranges, every gap with its
reason, the request and approval (who, when, case, authority, legal basis), the options,
who produced the package and when, every source segment with its recorded SHA-256, and
the SHA-256 of every file in the package. ``manifest.sig`` is the gateway's Ed25519
signature over the exact manifest bytes; ``public-key.pem`` is the gateway's public key.
Check with ``citygate export verify PACKAGE.zip --key gateway-public-key.pem``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from gateway.plugin_api import (
    COPY_CRF,
    COPY_PRESET,
    ExportFormat,
    ExportJob,
    PackageWriter,
    WatermarkOptions,
    camera_description,
    encode_into_package,
    hookimpl,
    join_segments,
    watermarked_copy,
)

UNALTERED = "recorded fragments, unaltered"
WATERMARKED = "watermarked copy: decoded, stamped and re-encoded"
REMASKED = "recorded video re-masked: decoded, masked with the current privacy masks and re-encoded"


class EvidenceOptions(WatermarkOptions):
    #: With a watermark: also include the unaltered recorded files.
    keep_unaltered: Annotated[bool, Meta(title="Include the unaltered recording")] = True

    def __post_init__(self) -> None:
        if not self.keep_unaltered and not self.watermark:
            raise ValueError("keep-unaltered = false needs watermark = true: the package would hold no video")


def write_evidence(job: ExportJob, output_path: str, format_id: str = "evidence") -> dict[str, Any]:
    """Blocking: build the package; returns the manifest (without its file list)."""
    options = msgspec.convert(job.options or {}, EvidenceOptions, str_keys=True)
    pkg = PackageWriter(output_path)
    try:
        cameras = []
        for extract in job.cameras:
            files: list[dict[str, Any]] = []
            if options.keep_unaltered:
                def name(n: int, cam: str = extract.camera) -> str:
                    return f"cameras/{cam}.mp4" if n == 0 else f"cameras/{cam}-{n + 1}.mp4"

                def open_file(path: str, remasked: Any, cam: str = extract.camera) -> Any:
                    return pkg.open(path, camera=cam, content=UNALTERED if remasked is None else REMASKED)

                files += [
                    {**f.describe(), "content": UNALTERED if f.remasked is None else REMASKED}
                    for f in join_segments(job, extract, open_file, name)
                ]
            if options.watermark and extract.segments:
                path = f"watermarked/{extract.camera}.mp4"
                stats = encode_into_package(
                    pkg, output_path, path, extract.camera,
                    lambda scratch, e=extract: watermarked_copy(job, e, options, scratch), content=WATERMARKED,
                )
                files.append({
                    "path": path, "content": WATERMARKED, "frames": stats["frames"],
                    "source_segments": [
                        {"id": s.id, "recorded_sha256": s.sha256, "remasked": job.remasks(s) is not None}
                        for s in extract.segments
                    ],
                })
            cameras.append({**camera_description(extract), "files": files})
        processing: dict[str, Any] = {"unaltered": UNALTERED if options.keep_unaltered else "not included"}
        if options.watermark:
            processing["watermark"] = {**options.describe_watermark(), "encoder": f"libx264 crf {COPY_CRF} preset {COPY_PRESET}"}
        manifest = {**job.base_manifest(format_id), "cameras": cameras, "options": msgspec.to_builtins(options), "processing": processing}
        pkg.finish(manifest, job.signer)
    except BaseException:
        pkg.abort()
        raise
    return manifest


class EvidenceExport(ExportFormat):
    Options = EvidenceOptions
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
