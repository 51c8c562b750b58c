"""Permanent storage errors against a real S3 server that checks credentials (SeaweedFS):
`citygate check-config --probe` names the option at fault for a bucket that does not exist
and for a wrong secret, and says a good bucket is writable (``serve`` refuses to start with
the same message: tests/test_storage_faults.py). Moto takes any credentials; SeaweedFS
checks them, as a city's object store does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fixtures_app import ROOT
from tests.fixtures_seaweedfs import SeaweedFS, seaweedfs  # noqa: F401 - the fixture


def _conf(tmp_path: Path, name: str, options: dict) -> Path:
    conf = tmp_path / name
    conf.mkdir()
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
    (conf / "gateway.toml").write_text(f'[server]\ndata-dir = "data"\n[storage]\nbackend = "s3"\n[storage.options]\n{lines}')
    (conf / "cameras.toml").write_text("")
    (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    return conf


def _citygate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=90, cwd=ROOT)


def test_seaweedfs_missing_bucket_and_wrong_secret_are_named_good_bucket_writable(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    seaweedfs.client().create_bucket(Bucket="citygate-recordings")
    good = _citygate("check-config", "--probe", str(_conf(tmp_path, "good", seaweedfs.storage_options("citygate-recordings"))))
    assert good.returncode == 0 and "probe [storage.options]: ok: s3: writable" in good.stdout, good.stdout + good.stderr

    missing = _citygate("check-config", "--probe", str(_conf(tmp_path, "missing", seaweedfs.storage_options("no-such-bucket"))))
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "storage.options.bucket:" in missing.stdout and "no-such-bucket" in missing.stdout, missing.stdout

    wrong = seaweedfs.storage_options("citygate-recordings", **{"secret-access-key": "not-the-secret"})
    refused = _citygate("check-config", "--probe", str(_conf(tmp_path, "wrong", wrong)))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    # a refused signature comes back as a bare 403 (a HEAD has no body to name it): the probe
    # names the credentials and says the secret may be wrong
    assert "storage.options.access-key-id:" in refused.stdout and "secret is wrong" in refused.stdout, refused.stdout
