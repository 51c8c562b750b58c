"""A real S3-compatible server for tests: ``moto.server`` in a subprocess on loopback.

Loaded from ``tests/conftest.py`` with ``pytest_plugins = [..., "tests.fixtures_s3"]``.

``moto_server`` is one server for the whole session (buckets are cheap: each test takes a
fresh one from ``s3_bucket``). A test that stops and restarts S3 makes its own
``MotoServer`` instead, so others never see the outage. moto keeps everything in memory:
a restarted server has no buckets; ``restart`` re-creates the ones this object created.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import boto3
import pytest

from tests.fixtures_cameras import free_port

ACCESS_KEY = "citygate-test"
SECRET_KEY = "citygate-test-secret"
REGION = "us-east-1"


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class MotoServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.buckets: list[str] = []
        self._names = itertools.count(1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 20.0) -> MotoServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout}s")
        for bucket in self.buckets:
            self.client().create_bucket(Bucket=bucket)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        """Start again on the same port; buckets made through ``create_bucket`` come back empty."""
        self.stop()
        self.start()

    def client(self):  # -> botocore S3 client
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"citygate-test-{next(self._names)}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def list_keys(self, bucket: str) -> dict[str, int]:
        """Every object in ``bucket``: key -> size."""
        out: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", ()):
                out[obj["Key"]] = obj["Size"]
        return out

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def storage_options(self, bucket: str, **extra: object) -> dict[str, object]:
        """Options for ``S3Storage`` (kebab-case keys, as in gateway.toml)."""
        return {
            "bucket": bucket,
            "endpoint-url": self.endpoint,
            "region": REGION,
            "access-key-id": ACCESS_KEY,
            "secret-access-key": SECRET_KEY,
            **extra,
        }


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> str:
    return moto_server.create_bucket()


@pytest.fixture
def own_moto_server() -> Iterator[MotoServer]:
    """A server of this test's own, which it may stop and restart."""
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()
