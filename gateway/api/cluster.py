"""The cluster seen from any node.

``GET /api/cluster``                         the nodes (alive, draining, capacity, cameras,
                                             jobs), and which node runs each camera.
                                             Needs ``system.monitor``. On a single node:
                                             ``{"clustered": false}`` and its cameras.
``POST /api/cluster/nodes/{node}/drain``     body ``{"draining": true|false}``: a draining
                                             node gives its cameras to the others (before
                                             maintenance) and takes none; false takes it
                                             back into service. Needs ``cameras.manage``;
                                             audited (``cluster.drain``).
"""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from gateway.access.guard import principal, requires
from gateway.access.middleware import client_address
from gateway.access.policy import Action
from gateway.api import json_response
from gateway.api.openapi import JsonObject, api
from gateway.appkeys import AUDIT, CAMERAS, DATABASE
from gateway.cluster.forward import CLUSTER_NODE
from gateway.db import cluster_nodes
from gateway.errors import BadRequest, NotFound


class DrainBody(msgspec.Struct, forbid_unknown_fields=True):
    draining: bool


@api(summary="The cluster's nodes and which node runs each camera", responses={200: JsonObject}, tag="cluster")
@requires(Action.SYSTEM_MONITOR, camera_param=None)
async def cluster_status(request: web.Request) -> web.Response:
    node = request.app.get(CLUSTER_NODE)
    cameras = request.app[CAMERAS]
    if node is None:
        return json_response({"clustered": False, "cameras": {c.id: None for c in cameras.running()}})
    now = time.time()
    nodes = [
        {
            "node": n.node, "url": n.url, "alive": n.alive(now, node.ttl), "draining": n.draining,
            "capacity": n.capacity, "cameras": n.cameras, "heartbeat_age": round(max(0.0, now - n.heartbeat_at), 1),
            "started_at": n.started_at,
        }
        for n in node.nodes()
    ]
    owners = node.owners()
    return json_response({
        "clustered": True,
        "node": node.node,
        "lease_seconds": node.ttl,
        "nodes": nodes,
        "cameras": {cid: (owners[cid].node if cid in owners else None) for cid in cameras.ids()},
        "jobs_here": sorted(node.jobs.running),
    })


@api(summary="Drain a node (give its cameras away) or take it back into service", body=DrainBody,
     responses={200: JsonObject}, tag="cluster")
@requires(Action.CAMERAS_MANAGE, camera_param=None)
async def drain(request: web.Request) -> web.Response:
    name = request.match_info["node"]
    try:
        body = msgspec.json.decode(await request.read(), type=DrainBody)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"expected {{\"draining\": true|false}}: {exc}") from exc
    async with request.app[DATABASE].begin() as conn:
        result = await conn.execute(
            cluster_nodes.update().where(cluster_nodes.c.node == name).values(draining=body.draining)
        )
    if not result.rowcount:
        raise NotFound(f"no node {name!r} in the cluster")
    await request.app[AUDIT].record(
        "cluster.drain", user=principal(request).username, client=client_address(request),
        detail={"node": name, "draining": body.draining},
    )
    return json_response({"node": name, "draining": body.draining})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/cluster", cluster_status, name="cluster")
    app.router.add_post("/api/cluster/nodes/{node}/drain", drain, name="cluster-drain")
