"""Incidents over the real API: the evidence hold against a retention sweep in the future,
the webhook and the events channel, the push to a station, bookmarks, hand-over, closing,
the register (JSON and CSV, cells neutralised), the pre-filled evidence request, and
refusals across areas, each audited."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time

from gateway.appkeys import AUDIT, PUSHES, RECORDING
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_webhook import Receiver, receivers, wait_for  # noqa: F401 - the fixture is used

CAMS = camera_toml("cam", "demo", width=320, height=240, keyframe_interval=1.0, bitrate=200_000) + camera_toml(
    "north-1", "demo", area="north", width=160, height=128, fps=5, bitrate=100_000
)
#: Holds of 6 s around the moment (0.1 min either side), so a sweep keeps some segments and not others.
INCIDENTS_TOML = """
[recording]
segment-seconds = 1

[incidents]
hold-before-minutes = 0.05
hold-after-minutes = 0.05

[[incidents.categories]]
id = "violence"
title = "Violence"
services = ["police"]
push-stations = ["station-a"]
push-minutes = 5

[[incidents.categories]]
id = "littering"
title = "Littering"
services = ["city-guard"]
"""


async def audited(gw: RunningGateway, action: str, **filters) -> list[dict]:
    await gw.app[AUDIT].flush()
    return await gw.app[AUDIT].query(action=action, **filters)


async def call(session, method: str, url: str, body: dict | None = None) -> tuple[int, dict | list]:
    async with session.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def test_incident_holds_notifies_registers_and_prefills_an_export(make_gateway, receivers):
    hook, _ = receivers
    gw = await make_gateway(CAMS, INCIDENTS_TOML + f"""
[[events.webhooks]]
url = "{hook.url}"
secret = "incident secret"
kinds = ["incident.*"]
""")
    await gw.wait_online("cam")
    await gw.sign_in("station-a", role="rescue-station")
    officer = await gw.sign_in("officer", role="duty-officer", all_areas=True)
    recording = gw.app[RECORDING]
    ws = await gw.session.ws_connect(gw.url + "/api/events")

    # segments recorded well before the moment (outside the hold) and around it: the first one
    # is catalogued, and the moment comes 4 s later (a condition on when it ended could stay
    # false for ever on a fast machine, whose first segment ends after the test's clock start)
    started = time.time()
    deadline = time.monotonic() + 30
    while not await recording.catalogue.all_segments("cam"):
        assert time.monotonic() < deadline, "no recording segments"
        await asyncio.sleep(0.2)
    await asyncio.sleep(4)
    at = time.time() - 0.5

    status, inc = await call(gw.session, "POST", gw.url + "/api/incidents", {
        "camera": "cam", "at": at, "category": "violence", "note": "=HYPERLINK(\"http://x\") fight at the fountain",
        "cameras": ["north-1"],
    })
    assert status == 201, inc
    assert inc["state"] == "open" and inc["owner"] == "tester" and inc["cameras"] == ["cam", "north-1"]
    assert inc["services"] == ["police"] and inc["area"] == "centre"
    assert abs(inc["hold_from"] - (at - 3)) < 0.01 and abs(inc["hold_to"] - (at + 3)) < 0.01
    iid = inc["id"]

    # the hold: one per camera, sourced from the incident; a sweep far in the future keeps the range
    holds = [h for h in await recording.active_holds() if h.source == f"incident:{iid}"]
    assert sorted(h.id for h in holds) == sorted(inc["holds"]) and {h.camera for h in holds} == {"cam", "north-1"}
    held = [s.id for s in await recording.catalogue.segments("cam", inc["hold_from"], inc["hold_to"])]
    assert held
    report = await recording.sweep(now=time.time() + 400 * 86400)
    assert report.deleted > 0, "segments outside the hold must be swept"
    assert [s.id for s in await recording.catalogue.segments("cam", inc["hold_from"], inc["hold_to"])] == held
    for seg in await recording.catalogue.all_segments("cam"):
        assert seg.start < inc["hold_to"] and seg.end > inc["hold_from"], "an unheld segment survived the sweep"

    # notified: the webhook (signed, as every event sink delivery), the events channel, the station's push
    await asyncio.wait_for(hook.arrived.wait(), 10)
    payload = json.loads(hook.calls[0][2])
    assert payload["kind"] == "incident.opened" and payload["camera"] == "cam" and payload["user"] == "tester"
    assert payload["detail"]["incident"] == iid and payload["detail"]["services"] == ["police"]
    assert payload["detail"]["cameras"] == ["cam", "north-1"]
    end = time.monotonic() + 10
    seen = None
    while seen is None:
        msg = json.loads((await asyncio.wait_for(ws.receive(), max(end - time.monotonic(), 0.01))).data)
        if msg["type"] == "event" and msg["event"]["kind"] == "incident.opened":
            seen = msg["event"]
    assert seen["detail"]["incident"] == iid and seen["detail"]["category"] == "violence"
    await ws.close()
    pushes = gw.app[PUSHES].active()
    assert [p.stations for p in pushes] == [["station-a"]] and pushes[0].cameras == ["cam", "north-1"]
    assert pushes[0].reason.startswith(f"Incident {iid}: Violence")

    # bookmarks while open
    status, body = await call(gw.session, "POST", f"{gw.url}/api/incidents/{iid}/bookmarks", {"at": at + 1, "note": "second man runs north"})
    assert status == 201, body
    assert [(b["note"], b["by"]) for b in body["bookmarks"]] == [("second man runs north", "tester")]

    # the pre-filled evidence request files as it is, with the case details added
    status, draft = await call(gw.session, "GET", f"{gw.url}/api/incidents/{iid}/export-request")
    assert status == 200, draft
    assert draft["cameras"] == ["cam", "north-1"] and draft["from"] == inc["hold_from"] and draft["to"] == inc["hold_to"]
    assert draft["purpose"].startswith(f"Incident {iid}: Violence")
    status, filed = await call(gw.session, "POST", gw.url + "/api/exports", {
        **draft, "authority": "City police", "legal_basis": "Code of criminal procedure s. 94",
    })
    assert status == 201, filed
    assert filed["cameras"] == ["cam", "north-1"] and filed["case_number"] == f"INC-{iid}"

    # handed over to the duty officer, who closes it; closed incidents take no bookmarks
    status, body = await call(gw.session, "POST", f"{gw.url}/api/incidents/{iid}/handover", {"to": "officer", "note": "police on site"})
    assert status == 200, body
    assert body["state"] == "handed_over" and body["owner"] == "officer"
    status, body = await call(officer, "POST", f"{gw.url}/api/incidents/{iid}/close", {"note": "arrest made"})
    assert status == 200, body
    assert body["state"] == "closed" and body["closed_by"] == "officer"
    status, body = await call(gw.session, "POST", f"{gw.url}/api/incidents/{iid}/bookmarks", {"note": "too late"})
    assert status == 409 and body["error"] == f"incident {iid} is closed"

    # the register: filters, and CSV with the typed note neutralised
    status, other = await call(gw.session, "POST", gw.url + "/api/incidents", {"camera": "cam", "category": "littering"})
    assert status == 201, other
    status, items = await call(officer, "GET", f"{gw.url}/api/incidents?category=violence&area=centre&from={started - 60}")
    assert status == 200 and [i["id"] for i in items] == [iid]
    status, items = await call(officer, "GET", f"{gw.url}/api/incidents?state=open")
    assert status == 200 and [i["id"] for i in items] == [other["id"]]
    async with officer.get(f"{gw.url}/api/incidents/register.csv?category=violence") as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["id"] for r in rows] == [str(iid)]
    assert rows[0]["note"].startswith("'=HYPERLINK") and rows[0]["state"] == "closed" and rows[0]["owner"] == "officer"
    assert rows[0]["bookmarks"] == "1" and rows[0]["cameras"] == "cam north-1"

    # every step audited
    assert [e["detail"]["incident"] for e in await audited(gw, "incident.open", user="tester")] == [other["id"], iid]
    assert (await audited(gw, "incident.bookmark", user="tester"))[0]["camera"] == "cam"
    assert (await audited(gw, "incident.handover", user="tester"))[0]["detail"]["to"] == "officer"
    assert (await audited(gw, "incident.close", user="officer"))[0]["detail"]["note"] == "arrest made"
    assert {e["camera"] for e in await audited(gw, "hold.place") if e["detail"]["source"] == f"incident:{iid}"} == {"cam", "north-1"}


async def test_rights_per_role_and_area_refused_and_audited(make_gateway):
    cams = camera_toml("cam", "demo", width=160, height=128, fps=5, bitrate=100_000) + camera_toml(
        "north-1", "demo", area="north", width=160, height=128, fps=5, bitrate=100_000
    )
    gw = await make_gateway(cams, "[recording]\nsegment-seconds = 2\n")
    north = await gw.sign_in("north-op", role="operator", areas=("north",))
    north_boss = await gw.sign_in("north-boss", role="supervisor", areas=("north",))
    centre_boss = await gw.sign_in("centre-boss", role="supervisor", areas=("centre",))
    investigator = await gw.sign_in("inv", role="investigator", all_areas=True)

    # opening on a camera outside one's areas: refused with the reason, audited
    status, body = await call(north, "POST", gw.url + "/api/incidents", {"camera": "cam", "category": "theft"})
    assert status == 403
    assert body["error"] == "you may not open an incident on camera cam: camera cam is in area 'centre', outside north-op's areas"
    refused = await audited(gw, "incident.open", outcome="refused", user="north-op")
    assert [e["camera"] for e in refused] == ["cam"] and "outside north-op's areas" in refused[0]["detail"]["reason"]
    # ... also when only a further camera is outside them
    status, body = await call(north, "POST", gw.url + "/api/incidents", {"camera": "north-1", "category": "theft", "cameras": ["cam"]})
    assert status == 403 and "camera cam" in body["error"]
    # a role without incident.open
    status, body = await call(centre_boss, "POST", gw.url + "/api/incidents", {"camera": "cam", "category": "theft"})
    assert status == 403 and "does not allow incident.open" in body["error"]
    status, body = await call(gw.session, "POST", gw.url + "/api/incidents", {"camera": "cam", "category": "arson"})
    assert status == 400 and "unknown category 'arson'" in body["error"]

    status, inc = await call(gw.session, "POST", gw.url + "/api/incidents", {"camera": "cam", "category": "theft", "note": "bike"})
    assert status == 201, inc
    iid = inc["id"]

    # another area's operator and supervisor: neither read, bookmark nor close it
    for session, user in ((north, "north-op"), (north_boss, "north-boss")):
        status, body = await call(session, "GET", f"{gw.url}/api/incidents/{iid}")
        assert status == 403 and body["error"].startswith(f"incident {iid}: camera cam is in area 'centre'"), body
        status, body = await call(session, "POST", f"{gw.url}/api/incidents/{iid}/close", {})
        assert status == 403
        status, items = await call(session, "GET", gw.url + "/api/incidents")
        assert status == 200 and items == []
        assert [e["detail"]["incident"] for e in await audited(gw, "incident.read", outcome="refused", user=user)] == [iid]
        assert await audited(gw, "incident.close", outcome="refused", user=user)
    status, body = await call(north, "POST", f"{gw.url}/api/incidents/{iid}/bookmarks", {"note": "x"})
    assert status == 403 and await audited(gw, "incident.bookmark", outcome="refused", user="north-op")
    # asking the register for an area outside one's own is refused, not answered empty
    status, body = await call(north_boss, "GET", gw.url + "/api/incidents?area=centre")
    assert status == 403 and body["error"] == "area 'centre' is outside north-boss's areas"
    assert await audited(gw, "incident.register", outcome="refused", user="north-boss")
    # a role with neither incident action reads no register
    status, body = await call(investigator, "GET", gw.url + "/api/incidents")
    assert status == 403 and "does not allow incident.open or incident.manage" in body["error"]
    assert await audited(gw, "incident.register", outcome="refused", user="inv")

    # hand-over only to someone who may work on the camera
    status, body = await call(gw.session, "POST", f"{gw.url}/api/incidents/{iid}/handover", {"to": "north-op"})
    assert status == 400 and "north-op may not work on incidents of camera cam" in body["error"]
    # the district's supervisor (incident.manage) reads and closes it
    status, items = await call(centre_boss, "GET", gw.url + "/api/incidents")
    assert status == 200 and [i["id"] for i in items] == [iid]
    status, body = await call(centre_boss, "POST", f"{gw.url}/api/incidents/{iid}/extend", {"minutes": 5})
    assert status == 200 and body["hold_to"] == inc["hold_to"] + 300 and len(body["holds"]) == 2
    status, body = await call(centre_boss, "POST", f"{gw.url}/api/incidents/{iid}/close", {"note": "owner found"})
    assert status == 200 and body["state"] == "closed"
    assert (await audited(gw, "incident.extend", user="centre-boss"))[0]["detail"]["incident"] == iid
    assert (await audited(gw, "incident.close", user="centre-boss"))[0]["detail"]["incident"] == iid
