"""What export format plugins build packages from: the job, and helpers to write them.

An ``ExportJob`` carries the approved request, the cameras with their segments and gaps,
and a blocking ``fetch`` for segment bytes: a format does all of its work in one worker
thread (``asyncio.to_thread``), fetching stored segments from the event loop through
``fetch``, so nothing blocks the loop.

Stored segments are self-contained fMP4 files whose media time is the wall clock, and
every segment of a camera carries the same ``ftyp``+``moov`` while the stream's codec
parameters stay the same. ``join_segments`` therefore writes one playable MP4 per run of
segments: the first segment whole, then only the ``moof``+``mdat`` fragments of the
rest, byte for byte as recorded (no remux, no re-encode). When the codec parameters
change (a camera reconfigured) a new file begins.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import struct
import zipfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from gateway import __version__
from gateway.errors import Tampered
from gateway.evidence.signing import MANIFEST, PUBLIC_KEY, SIGNATURE, Signer
from gateway.interfaces import MaskFilter
from gateway.config import MaskingConfig
from gateway.recording.index import Gap, Segment
from gateway.recording.remask import MaskPlan, remask_segment

FETCH_TIMEOUT = 120.0
#: How the gateway names packages: ``export-<request id>-<format id><suffix>``.
PACKAGE_NAME = re.compile(r"export-(\d{1,18})-[A-Za-z0-9][A-Za-z0-9_-]{0,63}(?:\.[A-Za-z0-9]{1,10}){0,3}")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def package_file(directory: Path, name: str, request_id: int) -> Path:
    """The file of request ``request_id``'s package, named ``name`` (as read from the
    database), in ``directory`` (resolved). A name not made by the gateway, made for another
    request, or whose resolved path leaves ``directory`` (a symbolic link) raises
    ``Tampered``: the caller never serves or deletes such a path. Blocking (resolves links)."""
    match = PACKAGE_NAME.fullmatch(name)
    if match is None or int(match.group(1)) != request_id:
        raise Tampered(f"request {request_id}: package name {name!r} is not one the gateway makes")
    path = (directory / name).resolve()
    if path.parent != directory:
        raise Tampered(f"request {request_id}: package {name!r} resolves outside the package directory")
    return path


@dataclass(frozen=True, slots=True)
class CameraExtract:
    camera: str
    title: str
    start: float  #: the requested range
    end: float
    items: tuple[Segment | Gap, ...]

    @property
    def segments(self) -> list[Segment]:
        return [i for i in self.items if isinstance(i, Segment)]

    @property
    def gaps(self) -> list[Gap]:
        return [i for i in self.items if isinstance(i, Gap)]


@dataclass(frozen=True, slots=True)
class ExportJob:
    request: dict[str, Any]  #: the request as the register shows it (ids, case, who, when)
    cameras: tuple[CameraExtract, ...]
    produced_by: str
    produced_at: float
    signer: Signer
    read_segment: Callable[[Segment], Awaitable[bytes]]
    loop: asyncio.AbstractEventLoop
    #: The format's settings for this job, as the request recorded them (validated
    #: against the format's ``Options`` when the request was filed).
    options: dict[str, Any] = field(default_factory=dict)
    #: The mask filter plugins (one instance each), for formats that draw (the watermark).
    mask_filters: Mapping[str, MaskFilter] = field(default_factory=dict)
    #: Per camera, the privacy masks in force when the job was made: a segment recorded
    #: under other masks is re-masked with these before it goes into any package.
    mask_plans: Mapping[str, MaskPlan] = field(default_factory=dict)
    #: The encoder settings of re-masked segments (the mask stage's).
    masking: MaskingConfig = field(default_factory=MaskingConfig)

    def remasks(self, segment: Segment) -> MaskPlan | None:
        """The plan ``segment`` is re-masked with, or None when it goes out as recorded."""
        plan = self.mask_plans.get(segment.camera)
        return None if plan is None or plan.serves_as_recorded(segment) else plan

    def fetch_masked(self, segment: Segment) -> tuple[bytes, MaskPlan | None]:
        """A segment's bytes as they may leave: as recorded (checked against the catalogue's
        SHA-256), or decoded, masked with the current masks and encoded again (the plan
        returned). Worker threads only."""
        data = self.fetch(segment)
        plan = self.remasks(segment)
        if plan is None:
            return data, None
        return remask_segment(data, plan, self.mask_filters, self.masking, start=segment.start).data, plan

    def privacy_masks(self) -> dict[str, Any]:
        """For manifests: per camera, the masks applied and which segments were re-masked."""
        out: dict[str, Any] = {}
        for extract in self.cameras:
            plan = self.mask_plans.get(extract.camera)
            if plan is None:
                continue
            remasked = [s.id for s in extract.segments if self.remasks(s) is not None]
            out[extract.camera] = {
                **plan.describe(),
                "remasked_segments": remasked,
                "note": "segments recorded under other masks were decoded, masked with these and encoded again"
                if remasked else "every segment was recorded under these masks",
            }
        return out

    def fetch(self, segment: Segment) -> bytes:
        """A segment's bytes, checked against the catalogue's SHA-256. Worker threads only."""
        data = asyncio.run_coroutine_threadsafe(self.read_segment(segment), self.loop).result(FETCH_TIMEOUT)
        if len(data) != segment.bytes or hashlib.sha256(data).hexdigest() != segment.sha256:
            raise ValueError(f"camera {segment.camera}: segment {segment.id} does not match its catalogued SHA-256")
        return data

    def base_manifest(self, format_id: str) -> dict[str, Any]:
        return {
            "format": format_id,
            "manifest_version": 1,
            "request": self.request,
            "produced": {
                "by": self.produced_by,
                "at": iso(self.produced_at),
                "at_epoch": self.produced_at,
                "gateway": f"citygate {__version__}",
                "key_fingerprint": self.signer.fingerprint,
            },
            "privacy_masks": self.privacy_masks(),
        }


class HashingWriter:
    """Counts and hashes what passes through to ``sink``."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.size = 0
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class PackageWriter:
    """A ZIP package (stored, not compressed: video does not compress) with a signed manifest."""

    def __init__(self, path: str | Path) -> None:
        self.zf = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.files: list[dict[str, Any]] = []

    @contextmanager
    def open(self, name: str, **meta: Any) -> Iterator[HashingWriter]:
        with self.zf.open(name, "w", force_zip64=True) as f:
            writer = HashingWriter(f)
            yield writer
        self.files.append({"path": name, "bytes": writer.size, "sha256": writer.hexdigest(), **meta})

    def finish(self, manifest: dict[str, Any], signer: Signer) -> bytes:
        """Write the manifest (listing every file), its signature and the public key."""
        manifest = {**manifest, "files": self.files}
        body = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        self.zf.writestr(MANIFEST, body)
        self.zf.writestr(SIGNATURE, signer.sign(body))
        self.zf.writestr(PUBLIC_KEY, signer.public_pem)
        self.zf.close()
        return body

    def abort(self) -> None:
        self.zf.close()


def init_length(data: bytes) -> int:
    """Bytes before the first ``moof``: the segment's ``ftyp``+``moov``."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if kind == b"moof":
            return offset
        if size == 1:
            size = struct.unpack_from(">Q", data, offset + 8)[0]
        if size < 8:
            break
        offset += size
    raise ValueError("not a fragmented MP4 segment: no moof box")


@dataclass(slots=True)
class JoinedFile:
    path: str
    segments: list[Segment] = field(default_factory=list)
    #: The masks its segments were re-masked with (None: recorded bytes, unaltered).
    remasked: MaskPlan | None = None

    def describe(self) -> dict[str, Any]:
        described = {
            "path": self.path,
            "from": iso(self.segments[0].start),
            "to": iso(self.segments[-1].end),
            "segments": [
                {
                    "id": s.id, "start": iso(s.start), "end": iso(s.end), "bytes": s.bytes, "recorded_sha256": s.sha256,
                    "recorded_mask_version": s.mask_version,
                }
                for s in self.segments
            ],
            "re_encoded": self.remasked is not None,
        }
        if self.remasked is not None:
            described["masks"] = {"version": self.remasked.version, "digest": self.remasked.digest}
        return described


def join_segments(
    job: ExportJob,
    extract: CameraExtract,
    open_file: Callable[[str, MaskPlan | None], Any],
    name: Callable[[int], str],
) -> list[JoinedFile]:
    """Write the camera's segments as few MP4 files as the codec parameters allow.

    ``open_file(path, remasked)`` is a context manager giving a writable file (``remasked``:
    the masks its segments were re-masked with, None for recorded bytes unaltered; a file
    is never both); ``name(n)`` the path of the n-th file (0-based). Blocking: run in a
    worker thread."""
    files: list[JoinedFile] = []
    current_init: bytes | None = None
    current_plan: MaskPlan | None = None
    stack: Any = None
    out: Any = None
    try:
        for seg in extract.segments:
            data, plan = job.fetch_masked(seg)
            n = init_length(data)
            init = data[:n]
            if init != current_init or plan is not current_plan:
                if stack is not None:
                    stack.__exit__(None, None, None)
                joined = JoinedFile(name(len(files)), remasked=plan)
                files.append(joined)
                stack = open_file(joined.path, plan)
                out = stack.__enter__()
                out.write(data)
                current_init, current_plan = init, plan
            else:
                out.write(memoryview(data)[n:])
            files[-1].segments.append(seg)
    finally:
        if stack is not None:
            stack.__exit__(None, None, None)
    return files


def camera_description(extract: CameraExtract) -> dict[str, Any]:
    segs = extract.segments
    return {
        "id": extract.camera,
        "title": extract.title,
        "requested": {"from": iso(extract.start), "to": iso(extract.end), "from_epoch": extract.start, "to_epoch": extract.end},
        "covered": (
            {"from": iso(segs[0].start), "to": iso(segs[-1].end), "from_epoch": segs[0].start, "to_epoch": segs[-1].end}
            if segs else None
        ),
        "recorded_seconds": round(sum(s.duration for s in segs), 3),
        "gaps": [
            {"from": iso(g.start), "to": iso(g.end), "seconds": round(g.end - g.start, 3), "reason": g.reason}
            for g in extract.gaps
        ],
    }
