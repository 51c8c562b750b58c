"""``citygate cluster``: the nodes, their cameras and jobs, read from the shared database.

    citygate cluster status [--json]
    citygate cluster drain NODE          # give NODE's cameras away before maintenance
    citygate cluster drain NODE --undo   # take it back into service

Runs beside the running nodes (the database is the cluster's truth); a drain is audited as
``cluster.drain`` by ``cli:<os user>``. Exit status: 0 done, 1 no such node, 2 unusable
configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import time


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    cluster = subparsers.add_parser("cluster", help="the cluster's nodes: status, drain")
    sub = cluster.add_subparsers(dest="cluster_command", required=True)
    status = sub.add_parser("status", help="nodes, their health and cameras, and who runs each camera")
    status.add_argument("--config", dest="config_dir", help="config directory (default: conf, or $CITYGATE_CONFIG)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    drain = sub.add_parser("drain", help="move a node's cameras to the others (before maintenance)")
    drain.add_argument("node", help="the node's id")
    drain.add_argument("--undo", action="store_true", help="take the node back into service")
    drain.add_argument("--config", dest="config_dir", help="config directory (default: conf, or $CITYGATE_CONFIG)")
    drain.set_defaults(func=cmd_drain)


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.loading import load_config_only

    config = load_config_only(args.config_dir)
    report = asyncio.run(_status(config))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if not report["nodes"]:
        print("no cluster nodes have registered in this database (a single node runs every camera)")
        return 0
    print(f"{'node':<20} {'state':<9} {'cameras':>7} {'capacity':>8} {'heartbeat':>10}  url")
    for n in report["nodes"]:
        state = "draining" if n["draining"] and n["alive"] else ("alive" if n["alive"] else "down")
        print(f"{n['node']:<20} {state:<9} {n['cameras']:>7} {n['capacity']:>8} {n['heartbeat_age']:>9.1f}s  {n['url']}")
    unowned = [cid for cid, node in report["cameras"].items() if node is None]
    print(f"\n{len(report['cameras'])} cameras; {len(unowned)} without a live owner{': ' + ', '.join(unowned) if unowned else ''}")
    for lease, node in sorted(report["jobs"].items()):
        print(f"job {lease:<20} on {node}")
    return 0


async def _status(config) -> dict:  # noqa: ANN001 - Config
    import sqlalchemy as sa

    from gateway.db import Database, cluster_nodes, leases

    now = time.time()
    ttl = config.cluster.lease_seconds
    async with Database(config.database_url) as db, db.connect() as conn:
        nodes = (await conn.execute(sa.select(cluster_nodes).order_by(cluster_nodes.c.node))).mappings().all()
        held = (await conn.execute(sa.select(leases).where(leases.c.holder.is_not(None), leases.c.expires_at >= now))).mappings().all()
    cameras = {c.id: None for c in config.cameras if c.enabled}
    jobs = {}
    for lease in held:
        kind, _, name = lease["name"].partition(":")
        if kind == "camera" and name in cameras:
            cameras[name] = lease["holder"]
        elif kind == "job":
            jobs[name] = lease["holder"]
    return {
        "nodes": [
            {"node": n["node"], "url": n["url"], "alive": n["heartbeat_at"] >= now - ttl, "draining": bool(n["draining"]),
             "capacity": n["capacity"], "cameras": n["cameras"], "heartbeat_age": round(max(0.0, now - n["heartbeat_at"]), 1)}
            for n in nodes
        ],
        "cameras": cameras,
        "jobs": jobs,
    }


def cmd_drain(args: argparse.Namespace) -> int:
    from gateway.loading import load_config_only

    config = load_config_only(args.config_dir)
    found = asyncio.run(_drain(config, args.node, not args.undo))
    if not found:
        print(f"error: no node {args.node!r} in the cluster", flush=True)
        return 1
    print(f"node {args.node} {'drains: its cameras move to the other nodes' if not args.undo else 'is back in service'}")
    return 0


async def _drain(config, node: str, draining: bool) -> bool:  # noqa: ANN001 - Config
    from gateway.access.audit import AuditLog
    from gateway.db import Database, cluster_nodes

    async with Database(config.database_url) as db:
        async with db.begin() as conn:
            result = await conn.execute(cluster_nodes.update().where(cluster_nodes.c.node == node).values(draining=draining))
        if not result.rowcount:
            return False
        async with AuditLog(db) as audit:
            await audit.record("cluster.drain", user=f"cli:{getpass.getuser()}", detail={"node": node, "draining": draining})
    return True
