"""Number plates: text rules, and the whole path from a camera's picture to a stored read,
a watchlist event, search and crop with rights, purpose and audit, and retention.

One gateway for the end-to-end test (OCR is CPU-heavy): a real RTSP camera on loopback
(``tests.plate_fixtures.PlateCamera``, libx264) shows synthetic plates one after another;
the built-in ``plate-reader`` analyzer reads them from the camera's public hub.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from gateway.appkeys import AUDIT, RECORDING
from gateway.plates.store import PLATES
from gateway.plates.text import normalise, parse_query
from tests.fixtures_app import RunningGateway
from tests.plate_fixtures import PlateCamera


# -- text rules --------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "plate", "display", "country"), [
    ("AA1234BB", "AA1234BB", "AA 1234 BB", "UA"),
    ("АА 1234 ВВ", "AA1234BB", "AA 1234 BB", "UA"),  # Cyrillic letters, as typed in Kyiv
    ("UA KA 0042 XM", "KA0042XM", "KA 0042 XM", "UA"),  # the flag strip read along
    ("0A1234BB", "OA1234BB", "OA 1234 BB", "UA"),  # a digit where a letter must be
    ("WA 12345", "WA12345", "WA 12345", "PL"),
    ("KR 1AB23", "KR1AB23", "KR 1AB23", "PL"),
    ("PL WPI 7421", "WPI7421", "WPI 7421", "PL"),
    ("30A-123.45", "30A12345", "30A-123.45", "VN"),
    ("51LD-123.45", "51LD12345", "51LD-123.45", "VN"),
    (["29-B1", "123.45"], "29B112345", "29-B1 123.45", "VN"),  # two-line motorbike plate
    ("29-B1 / 123.45", "29B112345", "29-B1 123.45", "VN"),
    ("29-B1 l23.45", "29B112345", "29-B1 123.45", "VN"),  # l read for 1
    ("hello", "HELLO", "HELLO", None),
])
def test_normalise(raw, plate, display, country) -> None:
    p = normalise(raw)
    assert (p.text, p.display, p.country) == (plate, display, country)


def test_queries_fold_confusions_and_take_wildcards() -> None:
    stored = normalise("AA1234BB").key
    assert parse_query("AA1234B8").matches(stored)  # 8/B
    assert parse_query("AA12*").matches(stored) and parse_query("aa12??bb").matches(stored)
    assert parse_query("*34BB").matches(stored) and not parse_query("*35BB").matches(stored)
    assert parse_query("Z9-81I23.45").matches(normalise(["29-B1", "123.45"]).key)  # 2/Z, 8/B, 1/I
    assert parse_query("0A1234BB").like == parse_query("OA1234BB").like == "0A123488"
    for bad in ("*", "A*?", "x" * 70):
        with pytest.raises(ValueError):
            parse_query(bad)


def test_the_reader_uses_the_model_inside_the_wheel_and_downloads_nothing(monkeypatch) -> None:
    from rapidocr.utils.download_file import DownloadFile

    import citygate_plugins.analytics.plate_reader as plate_reader
    from tests.plate_fixtures import plate_image

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setattr(DownloadFile, "run", refuse)
    monkeypatch.setattr("socket.create_connection", refuse)
    path = plate_reader.rec_model_path()
    assert path.is_file() and "site-packages" in str(path) and path.parent.parent.name == "rapidocr"
    text, score = plate_reader.LineReader().read(plate_image(["WA 12345"], 200))
    assert normalise(text).text == "WA12345" and score > 0.8


# -- end to end --------------------------------------------------------------------------

CAMERAS = """
[[camera]]
id = "gate-1"
vendor = "generic_rtsp"
area = "north"
[camera.options]
url = "{url}"
[[camera.analytics]]
analyzer = "plate-reader"
fps = 5
repeat-seconds = 600

[[camera]]
id = "south-1"
vendor = "generic_rtsp"
area = "south"
record = false
[camera.options]
url = "{url}"
"""


async def audited(gw: RunningGateway, action: str, **filters) -> list[dict]:
    await gw.app[AUDIT].flush()
    return await gw.app[AUDIT].query(action=action, **filters)


async def until(predicate, what: str, timeout: float = 25.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_plates_read_watched_searched_and_kept_with_the_recordings(make_gateway) -> None:
    async with PlateCamera() as cam:
        gw = await make_gateway(CAMERAS.format(url=cam.url))
        officer = await gw.sign_in("officer", role="duty-officer", all_areas=True)
        outsider = await gw.sign_in("south-police", role="district-police", areas=("south",))
        await gw.wait_online("gate-1")
        url = gw.url

        async def search(session, **query):
            async with session.get(url + "/api/plates", params=query) as resp:
                return resp.status, await resp.json()

        # a watchlist entry for the motorbike (typed with an OCR confusion and a wildcard)
        async with officer.post(url + "/api/plates/watchlist", json={
            "pattern": "29-B1 *", "label": "stolen motorbike", "purpose": "case 2026/117",
        }) as resp:
            assert resp.status == 201, await resp.text()
            watch = await resp.json()
        assert watch["areas"] == [] and watch["all_areas"] and watch["active"]
        ws = await officer.ws_connect(url + "/api/events")

        # 1. a Ukrainian plate passes: one read, normalised, with a crop
        cam.show(["AA 1234 BB"])

        async def ua_read():
            status, body = await search(officer, q="AA1234BB", purpose="case 2026/117")
            assert status == 200, body
            return body["reads"]

        reads = await until(ua_read, "the Ukrainian plate to be read")
        read = reads[0]
        assert (read["plate"], read["display"], read["country"], read["camera"]) == ("AA1234BB", "AA 1234 BB", "UA", "gate-1")
        assert read["confidence"] >= 0.8 and read["analyzer"] == "plate-reader"
        assert read["links"]["playback"] == f"#/playback?camera=gate-1&at={read['at']:.3f}"
        async with officer.get(url + read["links"]["crop"]) as resp:
            assert resp.status == 200 and resp.content_type == "image/jpeg"
            assert (await resp.read())[:2] == b"\xff\xd8"

        # 2. the watched two-line plate passes: an event on the events channel
        cam.show(["29-B1", "123.45"])
        deadline = time.monotonic() + 25
        hit = None
        while hit is None:
            msg = await asyncio.wait_for(ws.receive(), max(deadline - time.monotonic(), 0.01))
            event = json.loads(msg.data).get("event") or {}
            if event.get("kind") == "plates.watchlist.hit":
                hit = event
        await ws.close()
        assert hit["camera"] == "gate-1" and hit["detail"]["watch"]["id"] == watch["id"]
        assert hit["detail"]["read"]["plate"] == "29B112345" and hit["detail"]["read"]["display"] == "29-B1 123.45"
        hits = await until(lambda: audited(gw, "plates.watch.hit"), "the hit's audit entry")
        assert hits[0]["purpose"] == "case 2026/117" and hits[0]["camera"] == "gate-1"
        cam.show(None)

        # 3. search: wildcards and OCR confusions, across the camera's reads, each one audited
        for q in ("29B1*", "Z9-81I23.45", "AA12??B8", "*1234*"):
            status, body = await search(officer, q=q, purpose="case 2026/117", camera="gate-1")
            assert status == 200 and body["reads"], (q, body)
        status, body = await search(officer, q="29B1*", purpose="case 2026/117", **{"from": str(time.time() + 60)})
        assert status == 200 and body["reads"] == []
        searches = await audited(gw, "plates.search", user="officer")
        assert len(searches) >= 6 and all(s["purpose"] == "case 2026/117" for s in searches)

        # 4. no purpose: 400, audited as refused
        status, body = await search(officer, q="29B1*")
        assert status == 400 and "purpose" in body["error"]
        status, body = await search(officer, q="29B1*", purpose="  ")
        assert status == 400
        assert await audited(gw, "plates.search", user="officer", outcome="refused")

        # 5. a user of another district: refused on this camera (audited), sees no reads at all
        status, body = await search(outsider, q="29B1*", purpose="curious", camera="gate-1")
        assert status == 403
        refused = await audited(gw, "plates.search", user="south-police", outcome="refused")
        assert refused and refused[0]["camera"] == "gate-1" and refused[0]["purpose"] == "curious"
        status, body = await search(outsider, q="29B1*", purpose="curious")  # only south-1's reads
        assert status == 200 and body["reads"] == []
        async with outsider.get(url + read["links"]["crop"]) as resp:
            assert resp.status == 403
        assert await audited(gw, "plates.crop", user="south-police", outcome="refused")
        # the role without plates.search (an operator) is refused by the guard, audited
        status, _ = await search(gw.session, q="29B1*", purpose="x")
        assert status == 403
        async with outsider.get(url + "/api/plates/watchlist") as resp:
            assert resp.status == 403

        # 6. watchlist changes need a purpose and are audited with it
        async with officer.patch(url + f"/api/plates/watchlist/{watch['id']}", json={"label": "no purpose"}) as resp:
            assert resp.status == 400
        async with officer.patch(url + f"/api/plates/watchlist/{watch['id']}", json={
            "label": "stolen motorbike (red)", "purpose": "case 2026/117 update",
        }) as resp:
            assert resp.status == 200 and (await resp.json())["label"] == "stolen motorbike (red)"
        async with officer.delete(url + f"/api/plates/watchlist/{watch['id']}", params={"purpose": "found"}) as resp:
            assert resp.status == 204
        async with officer.get(url + "/api/plates/watchlist") as resp:
            assert await resp.json() == []
        changes = {e["action"]: e["purpose"] for e in await audited(gw, "plates.watch.*")}
        assert changes["plates.watch.add"] == "case 2026/117" and changes["plates.watch.delete"] == "found"
        assert changes["plates.watch.update"] == "case 2026/117 update"

        # 7. retention: reads and crops go with the camera's recordings, except under a hold
        store = gw.app[PLATES]
        recording = gw.app[RECORDING]
        crop_files = list(Path(recording.storage.root).rglob("plates/*.jpg"))
        assert len(crop_files) >= 2
        await recording.place_hold("gate-1", read["at"] - 1, read["at"] + 1, "case 2026/117", "officer")
        assert await store.sweep(now=time.time() + 46 * 86400) >= 1
        status, body = await search(officer, q="29B1*", purpose="after retention")
        assert status == 200 and body["reads"] == []
        status, body = await search(officer, q="AA1234BB", purpose="after retention")
        assert status == 200 and [r["id"] for r in body["reads"]] == [read["id"]]
        kept = [p.name for p in Path(recording.storage.root).rglob("plates/*.jpg")]
        assert len(kept) == 1 and kept[0].startswith(f"gate-1-{round(read['at'] * 1000)}-")
