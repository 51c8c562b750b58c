"""Evidence export requests and the release register (see ``gateway.evidence.requests``).

``POST /api/exports``                      file a request; ``export.request`` on every camera
``GET /api/exports``                       requests (oversight roles: all; others: their own);
                                           filters ``status``, ``camera``, ``requested_by``,
                                           ``case_number``, ``from``, ``to``; ``mine=1``
``GET /api/exports/formats``               the export formats offered, with their options
                                           (JSON schema and the defaults in force)
``GET /api/exports/register``              the release register (JSON); filters ``request``,
``GET /api/exports/register.csv``          ``event``, ``user``, ``case_number``, ``from``, ``to``
``GET /api/exports/{id}``                  one request with its register entries
``POST /api/exports/{id}/approve``         ``{reason}``; ``export.approve`` on every camera, never one's own
``POST /api/exports/{id}/reject``          ``{reason}``; ``export.approve`` on every camera, never one's own
``POST /api/exports/{id}/produce``         ``export.produce`` on every camera; runs in the background (202)
``POST /api/exports/{id}/release-holds``   ``{reason}``; proposes releasing the holds (202);
                                           ``export.approve`` on every camera, not the requester
``POST /api/exports/{id}/release-holds/confirm``  ``{reason}``; a second approver (not the proposer)
                                           confirms and the holds are released
``GET /api/exports/{id}/download``         the package; the requester only, with ``export.request`` on
                                           every camera now; every download logged;
                                           410 once deleted after ``package-days``

Every refusal is an audit entry (``export.<verb>``, outcome ``refused``), like the guard's.
``GET /api/evidence/public-key``           the gateway's Ed25519 public key (PEM); public
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.access.guard import authenticated, principal, public, requires
from gateway.api.openapi import Id, JsonObject, JsonObjects, Media, Text, Time, api, enum_of
from gateway.access.middleware import client_address
from gateway.api import json_response, path_id, whole_number
from gateway.api.audit import parse_time
from gateway.api.session import read_json
from gateway.appkeys import IDENTITY
from gateway.errors import BadRequest, Forbidden, NotFound
from gateway.evidence.requests import EXPORTS, EVENTS, STATUSES, ExportRequest, NewRequest, RegisterEntry, register_csv


class Decision(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str


def _id(request: web.Request) -> int:
    return path_id(request, "request_id")


#: The release register's filters (``status`` is the request's status).
REGISTER_QUERY = {
    "request": Id, "event": enum_of(*EVENTS), "status": enum_of(*STATUSES), "user": Text, "case_number": Text,
    "from": Time, "to": Time,
}


def _view(req: ExportRequest) -> dict:
    view = msgspec.to_builtins(req)
    view["from"], view["to"] = view.pop("range_from"), view.pop("range_to")
    if req.package_name:
        view["download"] = f"/api/exports/{req.id}/download"
    return view


def _entry(entry: RegisterEntry, req: ExportRequest | None = None) -> dict:
    view = msgspec.to_builtins(entry)
    if req is not None:
        view.update(case_number=req.case_number, cameras=req.cameras, status=req.status, requested_by=req.requested_by)
    return view


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}")
    return value or None


@api(summary="File an evidence export request", body=NewRequest, responses={201: JsonObject})
@requires("export.request", camera_param=None)
async def file_request(request: web.Request) -> web.Response:
    new = await read_json(request, NewRequest)
    assert isinstance(new, NewRequest)
    req = await request.app[EXPORTS].file(principal(request), new, client=client_address(request))
    return json_response(_view(req), status=201)


@api(summary="Export requests (oversight: all; others: their own)", query={"status": enum_of(*STATUSES), "camera": Text, "requested_by": Text, "case_number": Text, "from": Time, "to": Time, "mine": enum_of("0", "1", "true", "false")}, responses={200: JsonObjects})
@authenticated
async def list_requests(request: web.Request) -> web.Response:
    service = request.app[EXPORTS]
    who = principal(request)
    q = request.query
    mine = q.get("mine") in ("1", "true") or not service.oversees(who)
    found = await service.list(
        status=_choice("status", q.get("status"), STATUSES),
        requested_by=who.username if mine else q.get("requested_by") or None,
        camera=q.get("camera") or None,
        case_number=q.get("case_number") or None,
        since=parse_time("from", q.get("from")),
        until=parse_time("to", q.get("to")),
    )
    return json_response([_view(r) for r in found])


@api(summary="Export formats and their options", responses={200: JsonObjects})
@authenticated
async def list_formats(request: web.Request) -> web.Response:
    """Each format with its options: the JSON schema (for forms) and the defaults in force."""
    service = request.app[EXPORTS]
    return json_response([
        {
            "id": fid, "title": cls.title or fid, "media_type": cls.media_type, "max_cameras": cls.max_cameras,
            "options": service.format_options(fid, {}),
            "options_schema": msgspec.json.schema(cls.Options),
        }
        for fid, cls in sorted(service.formats.items())
    ])


async def _register_rows(request: web.Request) -> list:
    service = request.app[EXPORTS]
    if not service.oversees(principal(request)):
        reason = "the release register is for approvers, producers and auditors"
        await service.refused("register", principal(request), client_address(request), reason=reason, path=request.path)
        raise Forbidden(reason)
    q = request.query
    request_id = q.get("request")
    if request_id is not None and not request_id.isdigit():
        raise BadRequest("request must be a number")
    status = _choice("status", q.get("status"), STATUSES)
    rows = await service.register(
        request_id=whole_number("request", request_id) if request_id else None,
        event=_choice("event", q.get("event"), EVENTS),
        user=q.get("user") or None,
        case_number=q.get("case_number") or None,
        since=parse_time("from", q.get("from")),
        until=parse_time("to", q.get("to")),
    )
    return [(e, r) for e, r in rows if status is None or r.status == status]


def _accounts(req: ExportRequest, known: dict[str, dict]) -> dict:
    """Who created and last changed the requester's and the approver's (decider's) accounts,
    so a pair of accounts made by one administrator shows (two-person rule)."""
    def one(username: str | None) -> dict | None:
        return None if username is None else {"username": username, **known.get(username, {})}

    return {"accounts": {"requester": one(req.requested_by), "approver": one(req.decided_by)}}


@api(summary="The release register", query=REGISTER_QUERY, responses={200: JsonObjects})
@authenticated
async def register_json(request: web.Request) -> web.Response:
    rows = await _register_rows(request)
    known = await request.app[IDENTITY].provenance(n for _, r in rows for n in (r.requested_by, r.decided_by))
    return json_response([_entry(e, r) | _accounts(r, known) for e, r in rows])


@api(summary="The release register as CSV", query=REGISTER_QUERY, responses={200: Media("text/csv")})
@authenticated
async def register_csv_view(request: web.Request) -> web.Response:
    body = register_csv(await _register_rows(request))
    return web.Response(
        text=body, content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition": 'attachment; filename="release-register.csv"'},
    )


@api(summary="One request with its register entries", path={"request_id": Id}, responses={200: JsonObject})
@authenticated
async def get_request(request: web.Request) -> web.Response:
    service = request.app[EXPORTS]
    req = await service.get(_id(request))
    if not service.may_see(principal(request), req):
        reason = f"request {req.id} is neither the user's own nor theirs to oversee"
        await service.refused("view", principal(request), client_address(request), req=req, reason=reason)
        raise NotFound(f"no export request {req.id}")
    entries = [e for e, _ in await service.register(request_id=req.id)]
    return json_response({**_view(req), "register": [_entry(e) for e in reversed(entries)]})


@api(summary="Approve (never one's own)", path={"request_id": Id}, body=Decision, responses={200: JsonObject})
@requires("export.approve", camera_param=None)
async def approve(request: web.Request) -> web.Response:
    body = await read_json(request, Decision)
    req = await request.app[EXPORTS].approve(principal(request), _id(request), body.reason, client=client_address(request))
    return json_response(_view(req))


@api(summary="Reject", path={"request_id": Id}, body=Decision, responses={200: JsonObject})
@requires("export.approve", camera_param=None)
async def reject(request: web.Request) -> web.Response:
    body = await read_json(request, Decision)
    req = await request.app[EXPORTS].reject(principal(request), _id(request), body.reason, client=client_address(request))
    return json_response(_view(req))


@api(summary="Produce the package in the background", path={"request_id": Id}, responses={202: JsonObject})
@requires("export.produce", camera_param=None)
async def produce(request: web.Request) -> web.Response:
    req = await request.app[EXPORTS].produce(principal(request), _id(request), client=client_address(request))
    return json_response(_view(req), status=202)


@api(summary="Propose releasing the evidence holds", path={"request_id": Id}, body=Decision, responses={202: JsonObject})
@requires("export.approve", camera_param=None)
async def release_holds(request: web.Request) -> web.Response:
    body = await read_json(request, Decision)
    req = await request.app[EXPORTS].release_holds(principal(request), _id(request), body.reason, client=client_address(request))
    return json_response(_view(req), status=202)


@api(summary="Confirm releasing the holds (a second approver)", path={"request_id": Id}, body=Decision, responses={200: JsonObject})
@requires("export.approve", camera_param=None)
async def confirm_release(request: web.Request) -> web.Response:
    body = await read_json(request, Decision)
    req = await request.app[EXPORTS].confirm_release(principal(request), _id(request), body.reason, client=client_address(request))
    return json_response(_view(req))


@api(summary="The package (the requester only; every download logged)", path={"request_id": Id}, responses={200: Media("application/octet-stream", binary=True)})
@authenticated
async def download(request: web.Request) -> web.StreamResponse:
    service = request.app[EXPORTS]
    path, req = await service.download(principal(request), _id(request), client=client_address(request))
    fmt = service.formats.get(req.format)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": fmt.media_type if fmt else "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{req.package_name}"',
            "Cache-Control": "no-store",
            "X-Package-SHA256": req.package_sha256 or "",
        },
    )


@api(summary="The gateway's Ed25519 public key (PEM)", responses={200: Media("application/x-pem-file")})
@public
async def public_key(request: web.Request) -> web.Response:
    signer = request.app[EXPORTS].signer
    assert signer is not None
    return web.Response(
        body=signer.public_pem, content_type="application/x-pem-file",
        headers={"X-Key-Fingerprint": signer.fingerprint, "Content-Disposition": 'inline; filename="citygate-evidence-public-key.pem"'},
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/api/exports", file_request, name="exports-file")
    app.router.add_get("/api/exports", list_requests, name="exports")
    app.router.add_get("/api/exports/formats", list_formats, name="exports-formats")
    app.router.add_get("/api/exports/register", register_json, name="exports-register")
    app.router.add_get("/api/exports/register.csv", register_csv_view, name="exports-register-csv")
    base = r"/api/exports/{request_id:\d+}"
    app.router.add_get(base, get_request, name="export")
    app.router.add_post(base + "/approve", approve, name="export-approve")
    app.router.add_post(base + "/reject", reject, name="export-reject")
    app.router.add_post(base + "/produce", produce, name="export-produce")
    app.router.add_post(base + "/release-holds", release_holds, name="export-release-holds")
    app.router.add_post(base + "/release-holds/confirm", confirm_release, name="export-release-holds-confirm")
    app.router.add_get(base + "/download", download, name="export-download")
    app.router.add_get("/api/evidence/public-key", public_key, name="evidence-public-key")
