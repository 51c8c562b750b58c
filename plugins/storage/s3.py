"""S3-compatible object storage for recorded segments (AWS S3, MinIO, Ceph) through aioboto3.

A segment counts as stored once it is in the bucket, or durably in the local spool:
when the bucket cannot be reached after ``retries`` attempts with exponential backoff,
``write_segment`` writes the segment to ``spool-dir`` (fsynced, renamed into place) and
returns. A background task uploads the spool oldest first as soon as the bucket answers
again and deletes a spooled file only after its upload was confirmed. While anything is
spooled, new segments join the end of the spool, so uploads keep their order. Keys are
idempotent: an upload repeated after a crash overwrites the same object, it never makes
a second copy. ``open_segment`` serves a spooled segment from the spool.

Objects of ``multipart-threshold-mb`` or more are uploaded in parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aioboto3
import msgspec
from aiobotocore.config import AioConfig

from botocore.exceptions import NoCredentialsError, ParamValidationError

from gateway.plugin_api import NotFound, StorageBackend, StorageFailed, StorageUsage, Unavailable, hookimpl

from .local import private_dirs, remove_partials, safe_relative, stream_file, write_durably

logger = logging.getLogger(__name__)

MB = 1024 * 1024
#: S3 refuses parts below 5 MiB (except the last).
MIN_PART = 5 * MB
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
SPOOL_SUFFIX = ".seg"
#: Written and deleted again by ``probe``: proves the credentials may write to the bucket.
PROBE_KEY = ".citygate-probe"

#: S3 error codes that retrying will not fix, with the option to look at. HeadBucket answers
#: with bare HTTP statuses ("404", "403"), the other calls with named codes.
PERMANENT = {
    "NoSuchBucket": ("bucket", "the bucket does not exist"),
    "404": ("bucket", "the bucket does not exist"),
    "InvalidBucketName": ("bucket", "the bucket name is invalid"),
    "AccessDenied": ("access-key-id", "access denied: the credentials may not use this bucket"),
    "AllAccessDisabled": ("bucket", "all access to the bucket is disabled"),
    "403": ("access-key-id", "access denied: the credentials may not use this bucket (or the secret is wrong)"),
    "InvalidAccessKeyId": ("access-key-id", "the access key id is unknown to the server"),
    "SignatureDoesNotMatch": ("secret-access-key", "the secret access key is wrong"),
    "AuthorizationHeaderMalformed": ("region", "the region does not match the bucket's"),
    "PermanentRedirect": ("region", "the bucket is in another region"),
    "AccountProblem": ("access-key-id", "the account cannot be used"),
}


class S3Options(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    bucket: str
    #: Prepended to every key, e.g. "citygate/" to share a bucket.
    prefix: str = ""
    #: For S3-compatible servers (MinIO, Ceph); empty means AWS.
    endpoint_url: str | None = None
    region: str = "us-east-1"
    #: Empty means the usual AWS credential chain (environment, instance profile).
    access_key_id: str | None = None
    secret_access_key: str | None = None
    secret_access_key_env: str | None = None
    multipart_threshold_mb: float = 16
    #: Where segments wait while the bucket is unreachable; relative to the data dir.
    spool_dir: str = "s3-spool"
    spool_max_gb: float = 10
    #: Attempts of one upload before the segment goes to the spool.
    retries: int = 5
    #: Seconds to connect and to wait for a response, per attempt.
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("bucket must not be empty")
        if self.multipart_threshold_mb <= 0:
            raise ValueError("multipart-threshold-mb must be > 0")
        if self.retries < 1:
            raise ValueError("retries must be >= 1")


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    seq: int
    key: str
    path: Path
    size: int


def spool_name(seq: int, key: str) -> str:
    return f"{seq:016d}_{quote(key, safe='')}{SPOOL_SUFFIX}"


def parse_spool_name(path: Path) -> tuple[int, str] | None:
    name = path.name
    if not name.endswith(SPOOL_SUFFIX) or "_" not in name:
        return None
    seq, _, quoted = name[: -len(SPOOL_SUFFIX)].partition("_")
    if not seq.isdigit():
        return None
    return int(seq), unquote(quoted)


def scan_spool(directory: Path) -> list[SpoolEntry]:
    private_dirs(directory)
    remove_partials(directory)
    entries = []
    for path in directory.iterdir():
        parsed = parse_spool_name(path)
        if parsed is not None:
            entries.append(SpoolEntry(parsed[0], parsed[1], path, path.stat().st_size))
    entries.sort(key=lambda e: e.seq)
    return entries


class S3Storage(StorageBackend):
    Options = S3Options

    @staticmethod
    def id() -> str:
        return "s3"

    def __init__(self, options: S3Options, *, data_dir: str) -> None:
        super().__init__(options, data_dir=data_dir)
        self.options: S3Options
        self.spool_path = Path(data_dir) / options.spool_dir
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        #: Spooled segments by key, oldest first (dicts keep insertion order).
        self._spool: dict[str, SpoolEntry] = {}
        self._next_seq = 1
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._spool_lock = asyncio.Lock()
        self._failed: StorageFailed | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> S3Storage:
        o = self.options
        session = aioboto3.Session()
        config = AioConfig(
            retries={"max_attempts": 1, "mode": "standard"},  # we retry ourselves, then spool
            connect_timeout=o.timeout,
            read_timeout=o.timeout,
        )
        self._client = await self._stack.enter_async_context(
            session.client(
                "s3",
                endpoint_url=o.endpoint_url or None,
                region_name=o.region,
                aws_access_key_id=o.access_key_id,
                aws_secret_access_key=o.secret_access_key,
                config=config,
            )
        )
        try:
            await self.probe()  # a missing bucket or wrong credentials: refuse to start, say which option
        except StorageFailed:
            await self._stack.aclose()
            raise
        except Exception as exc:  # an outage: start anyway, segments wait in the spool
            logger.warning("storage s3: bucket %r not reachable at start (%s); segments will be spooled", self.options.bucket, exc)
        for entry in await asyncio.to_thread(scan_spool, self.spool_path):
            self._spool[entry.key] = entry
            self._next_seq = entry.seq + 1
        if self._spool:
            logger.info("storage s3: %d segments waiting in the spool", len(self._spool))
        self._drainer = asyncio.create_task(self._drain_forever(), name="s3-spool-drain")
        self._wake.set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        await self._stack.aclose()
        self._client = None

    # -- permanent errors --------------------------------------------------------------
    def permanent(self, exc: BaseException) -> StorageFailed | None:
        """``exc`` as a ``StorageFailed`` naming the option to fix, if retrying cannot help."""
        if isinstance(exc, StorageFailed):
            return exc
        bucket = self.options.bucket
        if isinstance(exc, NoCredentialsError):
            return StorageFailed("storage s3: no credentials (set access-key-id and secret-access-key)", key="access-key-id")
        if isinstance(exc, ParamValidationError) and "bucket" in str(exc).lower():
            return StorageFailed(f"storage s3: the bucket name {bucket!r} is invalid", key="bucket")
        code = _error_code(exc)
        if code in PERMANENT:
            key, what = PERMANENT[code]
            return StorageFailed(f"storage s3: bucket {bucket!r}: {what} ({code})", key=key)
        return None

    async def probe(self) -> None:
        """Check the bucket exists and the credentials may write to it: ``StorageFailed``
        for what retrying cannot fix; other errors (an unreachable server) pass through."""
        bucket, key = self.options.bucket, self.options.prefix + PROBE_KEY
        try:
            await self._client.head_bucket(Bucket=bucket)
            await self._client.put_object(Bucket=bucket, Key=key, Body=b"citygate")
            await self._client.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            failed = self.permanent(exc)
            if failed is not None:
                raise failed from exc
            raise

    @property
    def failed(self) -> StorageFailed | None:
        """The permanent error the bucket last answered with (None: it works, or only an outage)."""
        return self._failed

    # -- keys --------------------------------------------------------------------------
    def object_key(self, key: str) -> str:
        return self.options.prefix + str(safe_relative(key))

    @property
    def spooled(self) -> int:
        """Segments waiting in the spool."""
        return len(self._spool)

    @property
    def spooled_bytes(self) -> int:
        return sum(e.size for e in self._spool.values())

    # -- writing -----------------------------------------------------------------------
    async def write_segment(self, key: str, data: bytes) -> None:
        """Upload, or spool while the bucket is unreachable. A permanent error (a deleted
        bucket, revoked rights) raises ``StorageFailed`` instead: the spool would never drain."""
        safe_relative(key)
        if self._spool and self._failed is not None:
            raise self._failed
        if not self._spool:
            try:
                await self._upload_with_retries(key, data)
                self._failed = None
                return
            except StorageFailed as exc:
                self._failed = exc
                raise
            except Exception as exc:
                logger.warning("storage s3: %s not uploaded (%s); spooling it until the bucket answers", key, exc)
        await self._to_spool(key, data)

    async def _to_spool(self, key: str, data: bytes) -> None:
        async with self._spool_lock:
            if key in self._spool:  # the same segment again: replace it in place
                old = self._spool.pop(key)
                await asyncio.to_thread(old.path.unlink, missing_ok=True)
            if self.spooled_bytes + len(data) > self.options.spool_max_gb * 1024 * MB:
                raise Unavailable(f"storage s3: bucket unreachable and the spool is full ({self.options.spool_max_gb} GB)")
            seq = self._next_seq
            self._next_seq += 1
            path = self.spool_path / spool_name(seq, key)
            await asyncio.to_thread(write_durably, path, data, fsync=True)
            self._spool[key] = SpoolEntry(seq, key, path, len(data))
        self._wake.set()

    async def _upload_with_retries(self, key: str, data: bytes) -> None:
        delay = BACKOFF_INITIAL
        for attempt in range(1, self.options.retries + 1):
            try:
                await self._upload(key, data)
                return
            except Exception as exc:
                failed = self.permanent(exc)
                if failed is not None:
                    raise failed from exc
                if attempt == self.options.retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _upload(self, key: str, data: bytes) -> None:
        bucket, okey = self.options.bucket, self.object_key(key)
        threshold = int(self.options.multipart_threshold_mb * MB)
        if len(data) < threshold:
            await self._client.put_object(Bucket=bucket, Key=okey, Body=data, ContentType="video/mp4")
            return
        part_size = max(MIN_PART, threshold)
        upload = await self._client.create_multipart_upload(Bucket=bucket, Key=okey, ContentType="video/mp4")
        upload_id = upload["UploadId"]
        try:
            parts = []
            view = memoryview(data)
            for number, offset in enumerate(range(0, len(data), part_size), start=1):
                body = bytes(view[offset : offset + part_size])
                result = await self._client.upload_part(Bucket=bucket, Key=okey, UploadId=upload_id, PartNumber=number, Body=body)
                parts.append({"ETag": result["ETag"], "PartNumber": number})
            await self._client.complete_multipart_upload(
                Bucket=bucket, Key=okey, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(Bucket=bucket, Key=okey, UploadId=upload_id)
            raise

    async def _drain_forever(self) -> None:
        delay = BACKOFF_INITIAL
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._spool:
                entry = next(iter(self._spool.values()))
                try:
                    data = await asyncio.to_thread(entry.path.read_bytes)
                    await self._upload(entry.key, data)
                except FileNotFoundError:  # deleted meanwhile
                    pass
                except Exception as exc:
                    failed = self.permanent(exc)
                    if failed is not None:
                        if self._failed is None:
                            logger.error("%s; %d segments kept in the spool", failed.message, len(self._spool))
                        self._failed = failed
                    else:
                        logger.info("storage s3: bucket still unreachable (%s); %d spooled, next try in %.1fs", exc, len(self._spool), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                delay = BACKOFF_INITIAL
                self._failed = None
                async with self._spool_lock:
                    if self._spool.get(entry.key) is entry:
                        del self._spool[entry.key]
                        await asyncio.to_thread(entry.path.unlink, missing_ok=True)
                if not self._spool:
                    logger.info("storage s3: spool drained")

    async def wait_drained(self, timeout: float | None = None) -> None:
        """Wait until the spool is empty (tests, orderly shutdown)."""
        async def _wait() -> None:
            while self._spool:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(_wait(), timeout)

    # -- reading -----------------------------------------------------------------------
    async def open_segment(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        entry = self._spool.get(key)
        if entry is not None:
            try:
                async for chunk in stream_file(entry.path, start, end):
                    yield chunk
                return
            except NotFound:  # uploaded and removed from the spool just now
                pass
        if end is not None and end <= start:
            return
        range_header = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            response = await self._client.get_object(Bucket=self.options.bucket, Key=self.object_key(key), Range=range_header)
        except self._client.exceptions.NoSuchKey:
            raise NotFound(f"no stored segment {key}") from None
        except Exception as exc:
            if _error_code(exc) == "InvalidRange":  # start at or past the end
                return
            raise
        body = response["Body"]
        try:
            async for chunk in body.iter_chunks(256 * 1024):
                yield chunk
        finally:
            body.close()

    # -- deleting and usage ------------------------------------------------------------
    async def delete(self, key: str) -> None:
        async with self._spool_lock:
            entry = self._spool.pop(key, None)
            if entry is not None:
                await asyncio.to_thread(entry.path.unlink, missing_ok=True)
        await self._client.delete_object(Bucket=self.options.bucket, Key=self.object_key(key))

    async def usage(self) -> StorageUsage:
        used = 0
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.options.bucket, Prefix=self.options.prefix):
                used += sum(obj["Size"] for obj in page.get("Contents", ()))
        except Exception as exc:
            failed = self.permanent(exc)
            if failed is not None:
                raise failed from exc
            raise
        return StorageUsage(used_bytes=used + self.spooled_bytes, free_bytes=None)


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


@hookimpl
def gateway_register_storage_backends(register: Callable[[type[StorageBackend]], None]) -> None:
    """Register S3-compatible object storage."""
    register(S3Storage)
