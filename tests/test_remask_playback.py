"""A mask drawn today protects last week's recordings: playback and exports re-mask.

A real gateway records the demo camera's colour bars unmasked; then an administrator masks
a region. Playing a segment recorded before the mask (over HTTP, decoded with PyAV), through
the HLS VOD playlist as a player would, and an evidence export of it all show the region
masked; a segment recorded after the mask is served byte for byte as stored. The audit
entries of playback and export name the mask version.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import zipfile

import av

from gateway.appkeys import AUDIT, RECORDING
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_exports import REQUEST, wait_status
from tests.test_mask_flush import REGION, region_luma

W, H = 320, 240
GATEWAY_TOML = """
[recording]
segment-seconds = 1
[masking]
keyframe-interval = 1.0
"""


def decode_all(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


def lumas(frames: list[av.VideoFrame]) -> list[int]:
    return [round(region_luma(f)) for f in frames]


async def wait_segment(gw: RunningGateway, camera: str, after: float, timeout: float = 15.0):
    """The first catalogued segment of ``camera`` starting after ``after``."""
    catalogue = gw.app[RECORDING].catalogue
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in await catalogue.all_segments(camera) if s.start > after]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no segment of {camera} after {after}"
        await asyncio.sleep(0.2)


async def recorded_then_masked(make_gateway) -> tuple[RunningGateway, object, object, float]:
    cams = camera_toml("bars", "demo", width=W, height=H, fps=25, pattern="bars", keyframe_interval=1.0)
    gw = await make_gateway(cams, GATEWAY_TOML)
    await gw.wait_online("bars")
    before = await wait_segment(gw, "bars", after=0.0)
    assert (before.mask_version, before.mask_digest) == (0, "")
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    async with admin.post(
        f"{gw.url}/api/cameras/bars/masks", json={"points": REGION, "filter": "fill", "reason": "private garden"}
    ) as resp:
        assert resp.status == 201, await resp.text()
    added_at = time.time()
    plan = await gw.app[RECORDING].mask_plan("bars")
    assert plan.version == 1 and len(plan.digest) == 64
    return gw, before, plan, added_at


async def test_playback_remasks_what_was_recorded_before_the_mask(make_gateway) -> None:
    gw, before, plan, added_at = await recorded_then_masked(make_gateway)
    base = f"{gw.url}/api/cameras/bars/recordings"

    # the segment itself, as a download
    async with gw.session.get(f"{base}/segments/{before.id}.mp4") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["X-Mask-Applied"] == "re-masked" and resp.headers["X-Mask-Version"] == "1"
        data = await resp.read()
    frames = decode_all(data)
    assert len(frames) >= 20
    assert all(v < 30 for v in lumas(frames)), lumas(frames)
    stored = b"".join([c async for c in gw.app[RECORDING].segment_stream(before)])
    assert all(v > 50 for v in lumas(decode_all(stored)[:5])), "the stored recording itself is never changed"
    assert frames[0].pts * frames[0].time_base == decode_all(stored)[0].pts * decode_all(stored)[0].time_base

    # a range request is answered from the same re-masked bytes (cached, not re-encoded)
    produced = gw.app[RECORDING].remasker.produced
    async with gw.session.get(f"{base}/segments/{before.id}.mp4", headers={"Range": "bytes=100-199"}) as resp:
        assert resp.status == 206 and await resp.read() == data[100:200]
    assert gw.app[RECORDING].remasker.produced == produced == 1

    # as a player: the VOD playlist addresses the re-masked segment by part, under the mask
    after = await wait_segment(gw, "bars", after=added_at + 0.5)
    async with gw.session.get(f"{base}/playlist.m3u8", params={"from": before.start, "to": after.end}) as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
    tag = plan.digest[:16]
    assert f'/segments/{before.id}.mp4?part=init&mask={tag}"' in text, text
    assert f"/segments/{before.id}.mp4?part=media&mask={tag}" in text
    async with gw.session.get(f"{gw.url}/api/cameras/bars/recordings/segments/{before.id}.mp4?part=init&mask={tag}") as resp:
        init = await resp.read()
    async with gw.session.get(f"{gw.url}/api/cameras/bars/recordings/segments/{before.id}.mp4?part=media&mask={tag}") as resp:
        media = await resp.read()
    assert init + media == data
    entries = await gw.app[AUDIT].query(action="playback.view", camera="bars")
    assert entries and entries[0]["user"] == "tester"
    masks = entries[0]["detail"]["masks"]
    assert masks["version"] == 1 and masks["digest"] == plan.digest and masks["remasked_segments"] >= 1

    # a segment recorded under the current mask: byte for byte as stored, masked at recording
    assert (after.mask_version, after.mask_digest) == (1, plan.digest)
    assert f"/segments/{after.id}.mp4?mask={tag}\n" in text
    async with gw.session.get(f"{base}/segments/{after.id}.mp4?mask={tag}") as resp:
        assert resp.status == 200 and resp.headers["X-Mask-Applied"] == "as recorded"
        body = await resp.read()
    assert hashlib.sha256(body).hexdigest() == after.sha256
    assert all(v < 30 for v in lumas(decode_all(body)))

    # retention takes the cached copy with the segment
    cached = list((gw.app[RECORDING].remasker.cache_dir).rglob(f"{before.id}-*.mp4"))
    assert len(cached) == 1
    await gw.app[RECORDING].catalogue.remove_segments([before.id])
    assert not cached[0].exists()


async def test_an_evidence_export_remasks_and_says_so(make_gateway, tmp_path) -> None:
    gw, before, plan, _ = await recorded_then_masked(make_gateway)
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    span = {"cameras": ["bars"], "from": before.start + 0.1, "to": before.end - 0.1, **REQUEST}
    async with inv.post(f"{gw.url}/api/exports", json=span) as resp:
        assert resp.status == 201, await resp.text()
        rid = (await resp.json())["id"]
    url = f"{gw.url}/api/exports/{rid}"
    async with boss.post(url + "/approve", json={"reason": "court order seen"}) as resp:
        assert resp.status == 200, await resp.text()
    async with boss.post(url + "/produce") as resp:
        assert resp.status == 202, await resp.text()
    await wait_status(boss, url, "produced")
    async with inv.get(url + "/download") as resp:
        assert resp.status == 200, await resp.text()
        package = await resp.read()
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        video = zf.read("cameras/bars.mp4")
    frames = decode_all(video)
    assert len(frames) >= 20 and all(v < 30 for v in lumas(frames)), lumas(frames)
    (file,) = manifest["cameras"][0]["files"]
    assert file["re_encoded"] is True and file["masks"] == {"version": 1, "digest": plan.digest}
    assert "re-masked" in file["content"]
    assert [s["id"] for s in file["segments"]] == [before.id] and file["segments"][0]["recorded_mask_version"] == 0
    masks = manifest["privacy_masks"]["bars"]
    assert masks["version"] == 1 and masks["remasked_segments"] == [before.id]
    produced = await gw.app[AUDIT].query(action="export.produced")
    assert len(produced) == 1 and produced[0]["user"] == "boss"
    assert produced[0]["detail"]["masks"]["bars"]["version"] == 1
    assert produced[0]["detail"]["masks"]["bars"]["remasked_segments"] == [before.id]
