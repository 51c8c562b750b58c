"""Long playback ranges stay bounded: a playlist spans at most recording.max-playlist-hours
(400 with the reason), and the timeline comes in pages (limit, next) that together list
every segment and gap once."""

from __future__ import annotations

import time

from gateway.appkeys import AUDIT
from tests.test_recording_reads import CAMERA, LENGTH, store


async def timeline(gw, **params) -> tuple[int, dict]:
    async with gw.session.get(f"{gw.url}/api/cameras/d/recordings", params={k: str(v) for k, v in params.items()}) as resp:
        return resp.status, await resp.json()


async def test_a_playlist_longer_than_the_configured_hours_is_refused_with_the_reason(make_gateway):
    gw = await make_gateway(CAMERA, "[recording]\nmax-playlist-hours = 2\n")
    now = time.time()
    await store(gw, [now - 3 * 3600 + i * LENGTH for i in range(3)])
    url = f"{gw.url}/api/cameras/d/recordings/playlist.m3u8"
    async with gw.session.get(url, params={"from": now - 3 * 3600, "to": now}) as resp:
        assert resp.status == 400
        reason = (await resp.json())["error"]
    assert reason.startswith("a playlist may span at most 2 hours (recording.max-playlist-hours)")
    assert await gw.app[AUDIT].query(action="playback.view") == []  # refused before anything was shown
    async with gw.session.get(url, params={"from": now - 3 * 3600, "to": now - 3600}) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.text()).count("#EXTINF:") == 3
    viewed = await gw.app[AUDIT].query(action="playback.view")
    assert len(viewed) == 1 and viewed[0]["range_to"] - viewed[0]["range_from"] == 2 * 3600


async def test_the_default_cap_is_a_day(make_gateway):
    gw = await make_gateway(CAMERA)
    now = time.time()
    async with gw.session.get(
        f"{gw.url}/api/cameras/d/recordings/playlist.m3u8", params={"from": now - 86400 - 3600, "to": now}
    ) as resp:
        assert resp.status == 400 and "at most 24 hours" in (await resp.json())["error"]


async def test_the_timeline_comes_in_pages_that_list_everything_once(make_gateway):
    gw = await make_gateway(CAMERA)
    t0 = float(int(time.time()) - 6 * 3600)
    # 25 segments with two holes: 0-9, 11-19, 21-26
    starts = [t0 + i * LENGTH for i in range(27) if i not in (10, 20)]
    segs = await store(gw, starts)
    end = t0 + 30 * LENGTH
    items, pages, start = [], 0, t0
    while start is not None:
        status, body = await timeline(gw, **{"from": start, "to": end, "detail": "segments", "limit": 10})
        assert status == 200, body
        assert len([i for i in body["items"] if i["kind"] == "segment"]) <= 10
        items += body["items"]
        start, pages = body["next"], pages + 1
    assert pages == 3
    assert [i["id"] for i in items if i["kind"] == "segment"] == [s.id for s in segs]
    gaps = [(i["start"], i["end"]) for i in items if i["kind"] == "gap"]
    assert gaps == [(t0 + 10 * LENGTH, t0 + 11 * LENGTH), (t0 + 20 * LENGTH, t0 + 21 * LENGTH), (t0 + 27 * LENGTH, end)]
    # the pages tile the range: each item starts where the one before ended
    assert all(a["end"] == b["start"] for a, b in zip(items, items[1:]))

    # spans page the same way
    status, body = await timeline(gw, **{"from": t0, "to": end, "detail": "spans", "limit": 2})
    assert status == 200 and [i["kind"] for i in body["items"]] == ["span", "gap", "span", "gap"]
    assert body["next"] == t0 + 21 * LENGTH == body["items"][-1]["end"]  # the page ends where the next span starts
    status, rest = await timeline(gw, **{"from": body["next"], "to": end, "detail": "spans", "limit": 2})
    assert [(i["kind"], i["segments"] if i["kind"] == "span" else None) for i in rest["items"]] == [("span", 6), ("gap", None)]
    assert rest["next"] is None

    for bad in ("0", "10001", "ten"):
        status, body = await timeline(gw, **{"from": t0, "to": end, "limit": bad})
        assert status == 400 and "limit must be" in body["error"], body
