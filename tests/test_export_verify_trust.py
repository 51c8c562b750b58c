"""``citygate export verify`` trusts only a key the verifier names: the key a package
carries proves nothing, since a forger re-signs with a key of their own. Packages whose
members share a name are refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citygate_plugins.export.evidence import write_evidence
from gateway.evidence.signing import Signer
from tests.evidence_fixtures import make_job, street
from tests.fixtures_app import ROOT
from tests.test_exports import package, rewrite, verify_cli  # noqa: F401 - the shared package fixture

NOT_TRUSTED = "signature valid but key NOT trusted"


def verify_with_config(path: Path, conf: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gateway", "export", "verify", str(path), "--config", str(conf)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def forge(src: Path, dst: Path, forger: Signer) -> None:
    """What a forger does: change a video, fix its hash in the manifest, sign the manifest
    with their own key and put that key in the package."""
    with zipfile.ZipFile(src) as zin:
        members = {name: zin.read(name) for name in zin.namelist()}
    video = bytearray(members["cameras/north.mp4"])
    video[len(video) // 2] ^= 0x01
    members["cameras/north.mp4"] = bytes(video)
    manifest = json.loads(members["manifest.json"])
    for entry in manifest["files"]:
        if entry["path"] == "cameras/north.mp4":
            entry["sha256"] = hashlib.sha256(video).hexdigest()
    members["manifest.json"] = json.dumps(manifest, indent=2).encode()
    members["manifest.sig"] = forger.sign(members["manifest.json"])
    members["public-key.pem"] = forger.public_pem
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name, data in members.items():
            zout.writestr(name, data)


async def test_without_a_trusted_key_the_verdict_is_not_trusted(package, tmp_path):
    path, key = package
    untrusted = await asyncio.to_thread(verify_cli, path)
    assert untrusted.returncode == 3, untrusted.stdout + untrusted.stderr
    assert NOT_TRUSTED in untrusted.stdout and "verified" not in untrusted.stdout
    assert "pass --key" in untrusted.stdout
    trusted = await asyncio.to_thread(verify_cli, path, key)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert "verified: signature valid" in trusted.stdout and NOT_TRUSTED not in trusted.stdout


async def test_a_package_resigned_by_a_forger_never_passes(package, tmp_path):
    path, key = package
    forged = tmp_path / "forged.zip"
    forger = Signer(Ed25519PrivateKey.generate())
    forge(path, forged, forger)
    # consistent with itself, so the best it can get without a trusted key is "not trusted"
    alone = await asyncio.to_thread(verify_cli, forged)
    assert alone.returncode == 3 and NOT_TRUSTED in alone.stdout and forger.fingerprint in alone.stdout, alone.stdout
    # against the city's key it fails, naming the replaced signature
    checked = await asyncio.to_thread(verify_cli, forged, key)
    assert checked.returncode == 1 and "FAILED" in checked.stdout, checked.stdout
    assert "not the trusted key" in checked.stdout


async def test_on_the_gateway_host_the_config_names_the_trusted_key(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.toml").write_text('[server]\ndata-dir = "data"\n[evidence]\nkey-path = "keys/gw.pem"\n')
    (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    missing = await asyncio.to_thread(verify_with_config, tmp_path / "nothing.zip", conf)
    assert missing.returncode == 2 and "cannot use the trusted key" in missing.stderr, missing.stderr
    assert "gw.pem" in missing.stderr  # says where it looked

    signer = Signer.load_or_create(conf / "data" / "keys" / "gw.pem")  # the gateway's key, as 'serve' creates it
    clips = {"north": [[street(320, 180, shift=i) for i in range(25)]]}
    mine = tmp_path / "mine.zip"
    await asyncio.to_thread(write_evidence, make_job(clips, signer, time.time() - 60), str(mine))
    ok = await asyncio.to_thread(verify_with_config, mine, conf)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verified: signature valid" in ok.stdout and "trusted: the gateway's key" in ok.stdout

    other = tmp_path / "other.zip"
    await asyncio.to_thread(write_evidence, make_job(clips, Signer(Ed25519PrivateKey.generate()), time.time() - 60), str(other))
    bad = await asyncio.to_thread(verify_with_config, other, conf)
    assert bad.returncode == 1 and "not the trusted key" in bad.stdout, bad.stdout


async def test_a_package_with_two_members_of_one_name_is_refused(package, tmp_path):
    path, key = package
    for second_name in ("cameras/north.mp4", "./cameras/north.mp4"):
        doubled = tmp_path / "doubled.zip"
        rewrite(path, doubled, lambda name, data: data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name: that is the point
            with zipfile.ZipFile(doubled, "a") as zf:
                zf.writestr(second_name, b"another video")
        result = await asyncio.to_thread(verify_cli, doubled, key)
        assert result.returncode == 1 and "FAILED" in result.stdout, result.stdout
        assert "cameras/north.mp4 is in the package 2 times" in result.stdout, result.stdout
