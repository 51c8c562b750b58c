"""Evidence release over the HTTP API: four users, four eyes, holds against retention,
the register (JSON, CSV, audit chain), and signed packages checked by ``citygate export verify``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citygate_plugins.export.evidence import write_evidence
from gateway.appkeys import ACCESS, AUDIT, IDENTITY, RECORDING
from gateway.evidence.requests import EXPORTS
from gateway.evidence.signing import Signer
from tests.evidence_fixtures import make_job, street
from tests.fixtures_app import camera_toml

CAM = camera_toml("cam", "demo", width=320, height=240, keyframe_interval=1.0, bitrate=300_000)
RECORDING_TOML = "[recording]\nsegment-seconds = 2\n"
REQUEST = {
    "case_number": "2026-K-0042",
    "authority": "Police directorate, criminal investigation",
    "legal_basis": "Code of criminal procedure s. 94",
    "purpose": "Robbery at the market square",
}


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=codec_name,width,height,nb_read_frames",
         "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    return json.loads(out.stdout)


def verify_cli(package: Path, key: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gateway", "export", "verify", str(package)] + (["--key", str(key)] if key else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


async def wait_status(session, url: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(url) as resp:
            body = await resp.json()
        if body["status"] == status:
            return body
        assert body["status"] in ("approved", "producing"), body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


async def test_request_approve_produce_download_across_four_users(make_gateway, tmp_path):
    gw = await make_gateway(CAM, RECORDING_TOML)
    await gw.wait_online("cam")
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    approver = await gw.sign_in("boss", role="supervisor", all_areas=True)
    producer = await gw.sign_in("clerk", role="supervisor", all_areas=True)
    auditor = await gw.sign_in("aud", role="auditor")
    recording = gw.app[RECORDING]
    t0 = time.time()
    await asyncio.sleep(7)
    t1 = time.time() - 1

    # filing: only with export.request, with every field
    async with auditor.post(f"{gw.url}/api/exports", json={"cameras": ["cam"], "from": t0, "to": t1, **REQUEST}) as resp:
        assert resp.status == 403
    async with inv.post(f"{gw.url}/api/exports", json={"cameras": ["cam"], "from": t0, "to": t1, **REQUEST, "purpose": " "}) as resp:
        assert resp.status == 400 and "purpose is required" in (await resp.json())["error"]
    async with inv.post(f"{gw.url}/api/exports", json={"cameras": ["cam"], "from": t0, "to": t1, **REQUEST}) as resp:
        assert resp.status == 201, await resp.text()
        req = await resp.json()
    rid, url = req["id"], f"{gw.url}/api/exports/{req['id']}"
    assert req["status"] == "pending" and req["requested_by"] == "inv" and req["holds"] == []

    # four eyes: even holding export.approve (through a grant), the requester cannot approve
    inv_id = (await gw.app[IDENTITY].get_user("inv")).id
    grant = await gw.app[ACCESS].add_grant(
        cameras=["*"], actions=["export.approve"], expires_at=time.time() + 600, reason="test", by="tester", user_id=inv_id
    )
    async with inv.post(url + "/approve", json={"reason": "I approve myself"}) as resp:
        assert resp.status == 403 and "four eyes" in (await resp.json())["error"]
    await gw.app[ACCESS].revoke_grant(grant.id, by="tester")
    async with producer.post(url + "/produce") as resp:  # nothing approved yet
        assert resp.status == 409

    # approval places the hold at once; a retention sweep far in the future keeps the range
    async with approver.post(url + "/approve", json={"reason": "court order 12/26 seen"}) as resp:
        assert resp.status == 200, await resp.text()
        approved = await resp.json()
    assert approved["status"] == "approved" and approved["decided_by"] == "boss" and len(approved["holds"]) == 1
    holds = await recording.active_holds("cam")
    assert [h.id for h in holds] == approved["holds"] and holds[0].source == f"export:{rid}"
    held = [s.id for s in await recording.catalogue.segments("cam", t0, t1)]
    assert held
    report = await recording.sweep(now=time.time() + 400 * 86400)
    assert report is not None
    assert [s.id for s in await recording.catalogue.segments("cam", t0, t1)] == held
    remaining = await recording.catalogue.all_segments("cam")
    assert all(s.start < t1 and s.end > t0 for s in remaining), "unheld segments must be swept"

    # production by a third user, in the background
    async with producer.post(url + "/produce") as resp:
        assert resp.status == 202, await resp.text()
    produced = await wait_status(producer, url, "produced")
    assert produced["produced_by"] == "clerk" and produced["package_bytes"] > 0

    # only the requester downloads; every download is logged
    async with producer.get(url + "/download") as resp:
        assert resp.status == 403
    async with inv.get(url + "/download") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
        package = tmp_path / "package.zip"
        package.write_bytes(await resp.read())
    async with gw.anonymous.get(f"{gw.url}/api/evidence/public-key") as resp:
        assert resp.status == 200
        key = tmp_path / "gateway.pem"
        key.write_bytes(await resp.read())
    result = await asyncio.to_thread(verify_cli, package, key)
    assert result.returncode == 0 and "verified" in result.stdout, result.stdout + result.stderr

    with zipfile.ZipFile(package) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        (tmp_path / "cam.mp4").write_bytes(zf.read("cameras/cam.mp4"))
    assert manifest["request"]["id"] == rid and manifest["request"]["approval"]["by"] == "boss"
    assert manifest["request"]["case_number"] == REQUEST["case_number"] and manifest["produced"]["by"] == "clerk"
    cam = manifest["cameras"][0]
    assert [s["id"] for s in cam["files"][0]["segments"]] == held
    probe = await asyncio.to_thread(ffprobe, tmp_path / "cam.mp4")
    stream = probe["streams"][0]
    assert stream["codec_name"] == "h264" and (stream["width"], stream["height"]) == (320, 240)
    assert int(stream["nb_read_frames"]) >= cam["recorded_seconds"] * 25 * 0.5

    # release the holds when the case no longer needs them: one approver proposes, another confirms
    async with approver.post(url + "/release-holds", json={"reason": "case closed"}) as resp:
        assert resp.status == 202, await resp.text()
    async with producer.post(url + "/release-holds/confirm", json={"reason": "case file checked"}) as resp:
        assert resp.status == 200, await resp.text()
    assert await recording.active_holds("cam") == []

    # the register: oversight roles see it, with filters and as CSV; the requester does not
    async with auditor.get(f"{gw.url}/api/exports/register", params={"request": rid}) as resp:
        entries = await resp.json()
    assert [e["event"] for e in reversed(entries)] == [
        "filed", "approved", "produced", "downloaded", "hold_release_proposed", "hold_released"
    ]
    assert [e["user"] for e in reversed(entries)] == ["inv", "boss", "clerk", "inv", "boss", "clerk"]
    async with auditor.get(f"{gw.url}/api/exports/register.csv", params={"event": "downloaded"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        lines = (await resp.text()).strip().splitlines()
    assert len(lines) == 2 and ",downloaded,inv," in lines[1] and REQUEST["case_number"] in lines[1]
    async with inv.get(f"{gw.url}/api/exports/register") as resp:
        assert resp.status == 403
    async with auditor.get(f"{gw.url}/api/exports", params={"status": "produced", "camera": "cam"}) as resp:
        assert [r["id"] for r in await resp.json()] == [rid]
    async with inv.get(f"{gw.url}/api/exports") as resp:
        mine = await resp.json()
    assert [r["id"] for r in mine] == [rid] and mine[0]["downloads"] == 1

    # every register entry is in the audit chain, and the chain holds
    audit = gw.app[AUDIT]
    by_id = {e["id"]: e for e in await audit.query(action="export.*", limit=100)}
    for entry in entries:
        assert by_id[entry["audit_id"]]["action"] == f"export.{entry['event']}"
        assert by_id[entry["audit_id"]]["detail"]["request"] == rid
    refused = [e for e in by_id.values() if e["outcome"] == "refused" and e["action"] == "export.approve"]
    assert refused and refused[0]["user"] == "inv"
    assert (await audit.verify()).ok


async def test_rejection_and_expiry(make_gateway):
    gw = await make_gateway(CAM, "[evidence]\nrequest-expiry-hours = 1\n")
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    now = time.time()
    body = {"cameras": ["cam"], "from": now - 600, "to": now - 60, **REQUEST}
    ids = []
    for _ in range(2):
        async with inv.post(f"{gw.url}/api/exports", json=body) as resp:
            assert resp.status == 201, await resp.text()
            ids.append((await resp.json())["id"])
    async with boss.post(f"{gw.url}/api/exports/{ids[0]}/reject", json={"reason": "no legal basis given"}) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "rejected"
    assert await gw.app[EXPORTS].expire_due(now=time.time() + 2 * 3600) == [ids[1]]
    async with boss.post(f"{gw.url}/api/exports/{ids[1]}/approve", json={"reason": "late"}) as resp:
        assert resp.status == 409 and "expired" in (await resp.json())["error"]
    async with boss.get(f"{gw.url}/api/exports/register.csv") as resp:
        text = await resp.text()
    assert ",rejected,boss," in text and ",expired,system," in text
    assert await gw.app[RECORDING].active_holds() == []
    async with inv.post(f"{gw.url}/api/exports", json={**body, "format": "nope"}) as resp:
        assert resp.status == 400 and "unknown export format" in (await resp.json())["error"]


# -- tamper evidence ---------------------------------------------------------------------------


@pytest.fixture
async def package(tmp_path) -> tuple[Path, Path]:
    """A fresh evidence package of two cameras (segments made like the recorder's) and its key."""
    signer = Signer(Ed25519PrivateKey.generate())
    clips = {c: [[street(320, 180, shift=i + j * 25) for i in range(25)] for j in range(2)] for c in ("north", "south")}
    job = make_job(clips, signer, time.time() - 60)
    path = tmp_path / "evidence.zip"
    await asyncio.to_thread(write_evidence, job, str(path))
    key = tmp_path / "key.pem"
    key.write_bytes(signer.public_pem)
    return path, key


def rewrite(src: Path, dst: Path, change) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            data = change(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def flip_byte(name: str, data: bytes) -> bytes:
    if name != "cameras/north.mp4":
        return data
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def edit_manifest(name: str, data: bytes) -> bytes:
    """Who produced the package, rewritten; every file hash left as it was (a byte-level
    replace could also hit a hash that happens to contain the replaced digits)."""
    if name != "manifest.json":
        return data
    doc = json.loads(data)
    doc["produced"]["by"] = "someone else"
    return json.dumps(doc, indent=2).encode()


def replace_signature(name: str, data: bytes) -> bytes:
    if name != "manifest.sig":
        return data
    doc = json.loads(data)
    doc["signature"] = Signer(Ed25519PrivateKey.generate()).sign(b"x").split(b'"signature": "')[1].split(b'"')[0].decode()
    return json.dumps(doc).encode()


def remove_file(name: str, data: bytes) -> bytes | None:
    return None if name == "cameras/south.mp4" else data


async def test_verify_passes_on_a_fresh_package_and_every_mp4_plays(package, tmp_path):
    path, key = package
    result = await asyncio.to_thread(verify_cli, path, key)
    assert result.returncode == 0 and "verified" in result.stdout and "4 files" not in result.stdout, result.stdout
    with zipfile.ZipFile(path) as zf:
        for name in ("cameras/north.mp4", "cameras/south.mp4"):
            (tmp_path / "p.mp4").write_bytes(zf.read(name))
            stream = (await asyncio.to_thread(ffprobe, tmp_path / "p.mp4"))["streams"][0]
            assert stream["codec_name"] == "h264" and int(stream["nb_read_frames"]) == 50
    # without --key the package's own key is used, the output says so, and that is no verdict
    result = await asyncio.to_thread(verify_cli, path)
    assert result.returncode == 3 and "compare it with the gateway's published key" in result.stdout
    assert "signature valid but key NOT trusted" in result.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (flip_byte, "cameras/north.mp4 was altered: its SHA-256 is"),
        (edit_manifest, "manifest.json was edited after it was signed"),
        (replace_signature, "is not valid for manifest.json under key"),
        (remove_file, "cameras/south.mp4 is missing from the package"),
    ],
    ids=["video-byte", "manifest-edited", "signature-replaced", "file-removed"],
)
async def test_verify_names_each_kind_of_tampering(package, tmp_path, change, message):
    path, key = package
    bad = tmp_path / "bad.zip"
    rewrite(path, bad, change)
    result = await asyncio.to_thread(verify_cli, bad, key)
    assert result.returncode == 1 and "FAILED" in result.stdout, result.stdout
    assert message in result.stdout, result.stdout
    problems = [line for line in result.stdout.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1, result.stdout


async def test_a_package_signed_by_another_key_fails(package, tmp_path):
    path, _ = package
    other = tmp_path / "other.pem"
    other.write_bytes(Signer(Ed25519PrivateKey.generate()).public_pem)
    result = await asyncio.to_thread(verify_cli, path, other)
    assert result.returncode == 1 and "not the trusted key" in result.stdout, result.stdout
