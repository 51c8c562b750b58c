"""The OpenAPI 3.1 document: generated from the routes, served to signed-in users, and
complete: a route without an ``@api`` declaration fails here. Also the four mistakes the
first hand-made probe found, each now a 400 with its reason."""

from __future__ import annotations

import schemathesis
from aiohttp import web

from gateway.access.guard import authenticated
from gateway.api.openapi import api, openapi_document, undeclared
from tests.fixtures_app import camera_toml

CAMERA = "cam1"


async def test_every_route_declares_its_schema(make_gateway):
    gw = await make_gateway(camera_toml(CAMERA, "generic_rtsp", url="rtsp://127.0.0.1:9/none"))
    assert undeclared(gw.app) == [], "routes without an @api declaration (see gateway/api/openapi.py)"


async def test_a_route_without_a_declaration_is_named():
    @authenticated
    async def bare(request: web.Request) -> web.Response:
        return web.Response()

    @api(summary="declared")
    @authenticated
    async def declared(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/api/bare", bare)
    app.router.add_get("/api/declared", declared)
    assert undeclared(app) == ["GET /api/bare"]
    assert list(openapi_document(app)["paths"]) == ["/api/declared"]


async def test_document_served_to_signed_in_users(make_gateway):
    gw = await make_gateway(camera_toml(CAMERA, "generic_rtsp", url="rtsp://127.0.0.1:9/none"))
    async with gw.anonymous.get(gw.url + "/api/openapi.json") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "sign in first"
    auditor = await gw.sign_in("aud", role="auditor")
    async with auditor.get(gw.url + "/api/openapi.json") as resp:
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    # the guard's declarations, carried over
    assert paths["/api/audit"]["get"]["x-citygate-access"] == {"public": False, "action": "audit.read", "camera": None}
    whep = paths["/api/cameras/{camera_id}/whep"]["post"]
    assert whep["x-citygate-access"]["action"] == "live.view" and whep["x-citygate-access"]["camera"] == "camera_id"
    assert "application/sdp" in whep["requestBody"]["content"]
    assert paths["/api/session"]["post"]["security"] == []
    # msgspec types as schemas: what the handler decodes with
    seg = paths["/api/cameras/{camera_id}/recordings/segments/{segment_id}.mp4"]["get"]
    seg_id = next(p for p in seg["parameters"] if p["name"] == "segment_id")
    assert seg_id["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    new_export = doc["components"]["schemas"]["NewRequest"]["properties"]["cameras"]
    assert new_export["uniqueItems"] is True and new_export["maxItems"] == 256
    status = next(p for p in paths["/api/access-requests"]["get"]["parameters"] if p["name"] == "status")
    assert "enum" in status["schema"]
    # Schemathesis loads every operation of it
    ops = [r.ok() for r in schemathesis.openapi.from_dict(doc).get_all_operations()]
    assert len(ops) == sum(len(v) for v in paths.values()) > 60


async def test_probe_findings_are_refused_with_a_reason(make_gateway):
    gw = await make_gateway(camera_toml(CAMERA, "generic_rtsp", url="rtsp://127.0.0.1:9/none"))
    supervisor = await gw.sign_in("sup", role="supervisor", all_areas=True)
    base = gw.url + f"/api/cameras/{CAMERA}/recordings"

    async with gw.session.get(base + "/segments/" + "9" * 30 + ".mp4") as resp:
        assert resp.status == 400
        assert "segment id must be a whole number from 1 to" in (await resp.json())["error"]
    async with gw.session.get(base, params={"from": "nan", "to": "inf"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("to must be a finite time")
    body = {
        "cameras": [CAMERA] * 10_000, "from": 1, "to": 2, "case_number": "C-1", "authority": "police",
        "legal_basis": "art. 1", "purpose": "probe",
    }
    async with gw.session.post(gw.url + "/api/exports", json=body) as resp:
        assert resp.status == 400
        assert "cameras" in (await resp.json())["error"] and "256" in (await resp.json())["error"]
    body["cameras"] = [CAMERA, CAMERA]
    async with gw.session.post(gw.url + "/api/exports", json=body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == f"each camera may be named once; named more than once: {CAMERA}"
    for path in ("/api/exports/register", "/api/access-requests/register"):
        async with supervisor.get(gw.url + path, params={"status": "bogus"}) as resp:
            assert resp.status == 400, path
            assert (await resp.json())["error"].startswith("status must be one of pending"), path
    async with gw.session.post(gw.url + "/api/pushes/" + "4" * 25 + "/extend", json={}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("push_id must be a whole number")
    # the gateway's refusal of an action is still audited as before
    async with gw.session.get(gw.url + "/api/audit") as resp:
        assert resp.status == 403
    entries = (await (await supervisor.get(gw.url + "/api/audit", params={"user": "tester", "outcome": "refused"})).json())["entries"]
    assert any(e["action"] == "audit.read" for e in entries)
