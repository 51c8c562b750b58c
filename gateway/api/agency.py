"""Access requests from other agencies and the access register (see ``gateway.access.agency``).

``GET /api/access-requests/commitment``        the commitment text a request must accept, and the limits
``POST /api/access-requests``                  ``{cameras, areas, live, playback, from, to, purpose,
                                               commitment}``; needs ``access.request``; 201
``GET /api/access-requests``                   approvers and auditors: all; others: their own;
                                               filter ``status``
``GET /api/access-requests/register``          the access register (JSON); filters ``request``,
``GET /api/access-requests/register.csv``      ``event``, ``user``, ``from``, ``to``; approvers and auditors
``GET /api/access-requests/{id}``              one request with its register entries
``POST /api/access-requests/{id}/approve``     ``{reason}``; ``access.approve`` on every camera, never one's own
``POST /api/access-requests/{id}/reject``      ``{reason}``; the same
``POST /api/access-requests/{id}/revoke``      ``{reason}``; the agency itself, or ``access.approve`` on every camera

Every refusal is an audit entry (``agency.<verb>``, outcome ``refused``), like the guard's.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.access.agency import AGENCY_ACCESS, EVENTS, STATUSES, AccessRegisterEntry, AccessRequest, NewAccessRequest, register_csv
from gateway.access.guard import authenticated, principal, requires
from gateway.api.openapi import Id, JsonObject, JsonObjects, Media, Text, Time, api, enum_of
from gateway.access.middleware import client_address
from gateway.access.policy import Action
from gateway.api import json_response, path_id, whole_number
from gateway.api.audit import parse_time
from gateway.api.session import read_json
from gateway.errors import BadRequest, Forbidden, NotFound


class Decision(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str


def _id(request: web.Request) -> int:
    return path_id(request, "request_id")


#: The access register's filters (``status`` is the request's status).
REGISTER_QUERY = {"request": Id, "event": enum_of(*EVENTS), "status": enum_of(*STATUSES), "user": Text, "from": Time, "to": Time}


def _view(req: AccessRequest) -> dict:
    view = msgspec.to_builtins(req)
    view["from"], view["to"] = view.pop("range_from"), view.pop("range_to")
    view["actions"] = req.actions
    return view


def _entry(entry: AccessRegisterEntry, req: AccessRequest | None = None) -> dict:
    view = msgspec.to_builtins(entry)
    if req is not None:
        view["request"] = _view(req)
    return view


@api(summary="The commitment text a request must accept, and the limits", responses={200: JsonObject})
@authenticated
async def commitment(request: web.Request) -> web.Response:
    settings = request.app[AGENCY_ACCESS].settings
    return json_response({"commitment": settings.commitment, "max_hours": settings.max_hours, "max_cameras": settings.max_cameras})


@api(summary="File an access request", body=NewAccessRequest, responses={201: JsonObject})
@requires(Action.ACCESS_REQUEST, camera_param=None)
async def file_request(request: web.Request) -> web.Response:
    new = await read_json(request, NewAccessRequest)
    assert isinstance(new, NewAccessRequest)
    req = await request.app[AGENCY_ACCESS].file(principal(request), new, client=client_address(request))
    return json_response(_view(req), status=201)


@api(summary="Access requests (approvers and auditors: all)", query={"status": enum_of(*STATUSES), "mine": enum_of("0", "1", "true", "false")}, responses={200: JsonObjects})
@authenticated
async def list_requests(request: web.Request) -> web.Response:
    service = request.app[AGENCY_ACCESS]
    who = principal(request)
    mine = request.query.get("mine") in ("1", "true") or not service.oversees(who)
    found = await service.list(requested_by_id=who.user_id if mine else None, status=request.query.get("status") or None)
    return json_response([_view(r) for r in found])


async def _register_rows(request: web.Request) -> list:
    service = request.app[AGENCY_ACCESS]
    who = principal(request)
    if not service.oversees(who):
        reason = "the access register is for approvers (access.approve) and auditors (audit.read)"
        await service.refused("register", who, client_address(request), reason=reason, path=request.path)
        raise Forbidden(reason)
    q = request.query
    request_id = q.get("request")
    if request_id is not None and not request_id.isdigit():
        raise BadRequest("request must be a number")
    event = q.get("event") or None
    if event is not None and event not in EVENTS:
        raise BadRequest(f"event must be one of {', '.join(EVENTS)}")
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    rows = await service.register(
        request_id=whole_number("request", request_id) if request_id else None, event=event, user=q.get("user") or None,
        since=parse_time("from", q.get("from")), until=parse_time("to", q.get("to")),
    )
    return [(e, r) for e, r in rows if status is None or r.status == status]


@api(summary="The access register", query=REGISTER_QUERY, responses={200: JsonObjects})
@authenticated
async def register_json(request: web.Request) -> web.Response:
    return json_response([_entry(e, r) for e, r in await _register_rows(request)])


@api(summary="The access register as CSV", query=REGISTER_QUERY, responses={200: Media("text/csv")})
@authenticated
async def register_csv_view(request: web.Request) -> web.Response:
    return web.Response(
        text=register_csv(await _register_rows(request)), content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition": 'attachment; filename="access-register.csv"'},
    )


@api(summary="One access request with its register entries", path={"request_id": Id}, responses={200: JsonObject})
@authenticated
async def get_request(request: web.Request) -> web.Response:
    service = request.app[AGENCY_ACCESS]
    who = principal(request)
    req = await service.get(_id(request))
    if not service.may_see(who, req):
        await service.refused("view", who, client_address(request), req=req, reason="neither the requester's nor theirs to oversee")
        raise NotFound(f"no access request {req.id}")
    entries = [e for e, _ in await service.register(request_id=req.id)]
    return json_response({**_view(req), "register": [_entry(e) for e in reversed(entries)]})


@api(summary="Approve (never one's own)", path={"request_id": Id}, body=Decision, responses={200: JsonObject})
@requires(Action.ACCESS_APPROVE, camera_param=None)
async def approve(request: web.Request) -> web.Response:
    body = await read_json(request, Decision)
    req = await request.app[AGENCY_ACCESS].approve(principal(request), _id(request), body.reason, client=client_address(request))
    return json_response(_view(req))


@api(summary="Reject", path={"request_id": Id}, body=Decision, responses={200: JsonObject})
@requires(Action.ACCESS_APPROVE, camera_param=None)
async def reject(request: web.Request) -> web.Response:
    body = await read_json(request, Decision)
    req = await request.app[AGENCY_ACCESS].reject(principal(request), _id(request), body.reason, client=client_address(request))
    return json_response(_view(req))


@api(summary="Revoke (the agency itself or an approver)", path={"request_id": Id}, body=Decision, responses={200: JsonObject})
@authenticated
async def revoke(request: web.Request) -> web.Response:
    body = await read_json(request, Decision)
    req = await request.app[AGENCY_ACCESS].revoke(principal(request), _id(request), body.reason, client=client_address(request))
    return json_response(_view(req))


def setup(app: web.Application) -> None:
    """Routes only: the service is started by the composition root (``agency_access_ctx``)."""
    app.router.add_get("/api/access-requests/commitment", commitment, name="access-requests-commitment")
    app.router.add_post("/api/access-requests", file_request, name="access-requests-file")
    app.router.add_get("/api/access-requests", list_requests, name="access-requests")
    app.router.add_get("/api/access-requests/register", register_json, name="access-register")
    app.router.add_get("/api/access-requests/register.csv", register_csv_view, name="access-register-csv")
    base = r"/api/access-requests/{request_id:\d+}"
    app.router.add_get(base, get_request, name="access-request")
    app.router.add_post(base + "/approve", approve, name="access-request-approve")
    app.router.add_post(base + "/reject", reject, name="access-request-reject")
    app.router.add_post(base + "/revoke", revoke, name="access-request-revoke")
