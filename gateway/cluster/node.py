"""One node of a cluster: its row in ``cluster_nodes``, the cameras it owns, its jobs.

Every tick (a third of the lease time) a node

1. beats: its row's ``heartbeat_at``, its camera count, whether it drains;
2. renews every camera lease it holds in one UPDATE, and stops the cameras whose lease it
   lost (paused past the lease time, cut off from the database);
3. computes its fair share: the cameras divided by the live nodes that are not draining,
   never more than its capacity;
4. gives away cameras above its share (a few per tick, stopping each one first so its last
   segment is stored before the lease goes), and takes free or expired ones below it.

Giving a camera away runs beside the ticks, never inside one: stopping a camera waits for
its last segment to reach storage, which can take seconds, and a tick held up that long
would miss its heartbeat and renewals: the other nodes would count this node dead and the
camera's lease would lapse under the recorder still fenced by it.

Which free cameras a node reaches for first is rendezvous hashing of (camera, node), so
nodes starting together reach for different cameras and rarely race for the same one;
when they do, the lease's conditional UPDATE decides. A camera whose lease expired is a
failover: the gap in its recording says so, naming the node that lost it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from gateway.cameras import Camera, CameraManager
from gateway.cluster.leases import TAKE_LOCK_TIMEOUT_MS, Lease, LeaseStore
from gateway.cluster.role import Fence, JobFactory
from gateway.config import ClusterConfig
from gateway.db import Database, camera_views, cluster_nodes, leases
from gateway.events import EventBus

logger = logging.getLogger(__name__)

CAMERA = "camera:"
JOB = "job:"
#: Cameras a node gives away per tick when above its share: a rebalance moves a few at a
#: time, so a joining node does not make every viewer reconnect at once.
RELEASE_PER_TICK = 4


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node: str
    url: str
    capacity: int
    started_at: float
    heartbeat_at: float
    draining: bool
    cameras: int
    rtsp_port: int | None = None
    onvif_url: str | None = None

    def alive(self, now: float, ttl: float) -> bool:
        return self.heartbeat_at >= now - ttl


@dataclass(frozen=True, slots=True)
class Owner:
    node: str
    url: str


def _rank(camera: str, node: str) -> bytes:
    return hashlib.blake2b(f"{camera}\0{node}".encode(), digest_size=8).digest()


class LeaseJobs:
    """Cluster-wide jobs: each runs on the one node holding ``job:<name>``."""

    def __init__(self, store: LeaseStore, ttl: float, *, draining: Callable[[], bool] = lambda: False) -> None:
        self._store = store
        self._ttl = ttl
        self._draining = draining
        self.running: set[str] = set()

    async def run(self, name: str, factory: JobFactory) -> None:
        lease_name = JOB + name
        while True:
            lease = None if self._draining() else await self._try(lambda: self._store.take(lease_name, self._ttl))
            if lease is None:
                await asyncio.sleep(self._ttl / 3)
                continue
            logger.info("cluster: running job %s here (epoch %d)", name, lease.epoch)
            self.running.add(name)
            task = asyncio.ensure_future(factory())
            try:
                while lease is not None and not task.done():
                    done, _ = await asyncio.wait({task}, timeout=self._ttl / 3)
                    if done or self._draining():
                        break
                    lease = await self._try(lambda: self._store.renew(lease, self._ttl))  # type: ignore[arg-type]
            finally:
                self.running.discard(name)
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                if lease is not None:
                    await self._try(lambda: self._store.release(lease))  # type: ignore[arg-type]
            if task.done() and not task.cancelled():
                if (exc := task.exception()) is not None:
                    logger.error("cluster: job %s failed: %s", name, exc)
                else:
                    return
            logger.warning("cluster: job %s moved to another node", name)

    @staticmethod
    async def _try(op: Callable[[], object]) -> Lease | None:
        try:
            return await op()  # type: ignore[misc]
        except Exception as exc:  # the database is away: hold nothing, try again
            logger.warning("cluster: lease operation failed: %s", exc)
            return None


class ClusterNode:
    """This process as a node: owns cameras through leases, runs jobs through leases."""

    def __init__(
        self,
        db: Database,
        config: ClusterConfig,
        events: EventBus,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.node_id is not None and config.advertise_url is not None
        self.node = config.node_id
        self.url = config.advertise_url.rstrip("/")
        self.capacity = config.capacity
        self.ttl = config.lease_seconds
        self._db = db
        self._cameras: CameraManager | None = None
        self._events = events
        self._clock = clock
        self._store = LeaseStore(db, self.node, clock=clock)
        self.draining = False
        self.jobs = LeaseJobs(self._store, self.ttl, draining=lambda: self.draining)
        #: Camera id -> the lease this node holds for it.
        self._owned: dict[str, Lease] = {}
        #: Camera id -> why its recording paused before it started here.
        self._resumed_from: dict[str, str] = {}
        self._owners: dict[str, Owner] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        #: Camera id -> the task stopping and releasing it (its lease is renewed meanwhile).
        self._leaving: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ticked = asyncio.Event()
        #: How this node describes a running camera for the others' camera lists.
        self.describe: Callable[[Camera], dict[str, Any]] | None = None
        #: Camera id -> what its owner (another node) reported of it at the last tick.
        self.remote_views: dict[str, dict[str, Any]] = {}
        self.started_at = clock()
        #: This node's RTSP re-stream port, if it serves one (set before the node starts).
        self.rtsp_port: int | None = None
        #: This node's ONVIF face, if it has one (set before the node starts).
        self.onvif_url: str | None = None

    def bind(self, cameras: CameraManager) -> None:
        """The cameras this node may run (all configured ones; it runs those it owns)."""
        self._cameras = cameras
        cameras.on_removed.append(self._forget)

    async def _forget(self, cid: str) -> None:
        """A camera removed from the configuration (stopped already): its lease goes."""
        starting = self._starting.pop(cid, None)
        if starting is not None:
            starting.cancel()
        lease = self._owned.pop(cid, None)
        self._resumed_from.pop(cid, None)
        if lease is not None:
            try:
                await self._store.release(lease)
            except Exception as exc:
                logger.warning("cluster: releasing removed camera %s failed (%s); it frees when the lease runs out", cid, exc)
            logger.info("cluster: node %s releases removed camera %s", self.node, cid)

    @property
    def cameras(self) -> CameraManager:
        if self._cameras is None:
            raise RuntimeError("cluster node has no cameras bound")
        return self._cameras

    def knows(self, camera_id: str) -> bool:
        return self._cameras is not None and camera_id in self._cameras.ids()

    # -- the role the node's services see ------------------------------------------------
    def fence(self, camera_id: str) -> Fence | None:
        lease = self._owned.get(camera_id)
        # a camera started here without a lease cannot happen; fence it shut if it does
        return Fence(CAMERA + camera_id, self.node, lease.epoch if lease is not None else -1)

    def gap_reason(self, camera_id: str) -> str | None:
        return self._resumed_from.get(camera_id)

    def owner(self, camera_id: str) -> Owner | None:
        """Who runs a camera, as of the last tick (this node's own cameras included)."""
        if camera_id in self._owned:
            return Owner(self.node, self.url)
        return self._owners.get(camera_id)

    def node_info(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)

    def nodes(self) -> list[NodeInfo]:
        return sorted(self._nodes.values(), key=lambda n: n.node)

    def owned(self) -> list[str]:
        return sorted(self._owned)

    def owners(self) -> dict[str, Owner]:
        return {cid: o for cid in self.cameras.ids() if (o := self.owner(cid)) is not None}

    async def settled(self) -> None:
        """Wait for the next tick to complete (tests, drain)."""
        self._ticked.clear()
        await self._ticked.wait()

    # -- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> ClusterNode:
        now = self._clock()
        values = dict(
            url=self.url, capacity=self.capacity, started_at=now, heartbeat_at=now, draining=False, cameras=0, rtsp_port=self.rtsp_port,
            onvif_url=self.onvif_url,
        )
        async with self._db.begin() as conn:
            updated = await conn.execute(cluster_nodes.update().where(cluster_nodes.c.node == self.node).values(**values))
            if updated.rowcount == 0:
                await conn.execute(cluster_nodes.insert().values(node=self.node, **values))
        logger.info("cluster: node %s at %s (capacity %d, lease %.0fs)", self.node, self.url, self.capacity, self.ttl)
        self._task = asyncio.create_task(self._run(), name=f"cluster-{self.node}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in self._starting.values():
            task.cancel()
        # hand every camera over at once: stop it (its last segment stored), then release
        await asyncio.gather(*self._leaving.values(), *(self._give_away(cid) for cid in self._staying()), return_exceptions=True)
        with contextlib.suppress(Exception):
            async with self._db.begin() as conn:
                await conn.execute(cluster_nodes.update().where(cluster_nodes.c.node == self.node).values(heartbeat_at=0.0, cameras=0))

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # the database is away: keep serving what we own until the leases say otherwise
                logger.warning("cluster: tick failed: %s", exc)
                await self._drop_expired()
            self._ticked.set()
            await asyncio.sleep(self.ttl / 3)

    async def tick(self) -> None:
        now = self._clock()
        await self._beat(now)
        await self._renew(now)
        await self._read_cluster(now)
        await self._publish_views(now)
        share = self.share(now)
        staying = self._staying()
        if len(staying) > share:
            extra = len(staying) - share
            # a few at a time, so a joining node does not make every viewer reconnect at once,
            # but a quarter of the surplus at least, so a large rebalance ends in a few ticks
            count = min(extra, max(RELEASE_PER_TICK, math.ceil(extra / 4)))
            for cid in sorted(staying, key=lambda cid: _rank(cid, self.node))[:count]:
                self._leaving[cid] = asyncio.create_task(self._leave(cid), name=f"cluster-leave-{cid}")
        elif len(staying) < share:
            await self._take(now, share - len(staying))

    def share(self, now: float) -> int:
        """How many cameras this node should own now."""
        if self.draining:
            return 0
        serving = [n for n in self._nodes.values() if n.alive(now, self.ttl) and not n.draining]
        if not any(n.node == self.node for n in serving):
            serving.append(NodeInfo(self.node, self.url, self.capacity, self.started_at, now, False, len(self._owned)))
        total = len(self.cameras.ids())
        return min(self.capacity, math.ceil(total / len(serving)))

    async def _beat(self, now: float) -> None:
        c = cluster_nodes.c
        async with self._db.begin() as conn:
            await conn.execute(
                cluster_nodes.update().where(c.node == self.node).values(heartbeat_at=now, cameras=len(self._owned))
            )
            draining = (await conn.execute(sa.select(c.draining).where(c.node == self.node))).scalar()
        if bool(draining) != self.draining:
            self.draining = bool(draining)
            logger.warning("cluster: node %s %s", self.node, "draining: giving its cameras away" if self.draining else "serving again")

    async def _renew(self, now: float) -> None:
        if not self._owned:
            return
        c = leases.c
        names = [CAMERA + cid for cid in self._owned]
        async with self._db.begin() as conn:
            await conn.execute(
                leases.update()
                .where(c.name.in_(names), c.holder == self.node, c.expires_at >= now)
                .values(expires_at=now + self.ttl, renewed_at=now)
            )
            rows = (await conn.execute(sa.select(c.name, c.epoch).where(c.name.in_(names), c.holder == self.node, c.expires_at >= now))).all()
        held = {name[len(CAMERA):]: epoch for name, epoch in rows}
        for cid, lease in list(self._owned.items()):
            if held.get(cid) == lease.epoch:
                self._owned[cid] = Lease(lease.name, self.node, lease.epoch, now + self.ttl)
            elif cid in self._leaving:  # on its way out already: only the release is moot now
                self._owned.pop(cid, None)
            else:
                logger.error("cluster: lost the lease of camera %s (epoch %d); stopping it here", cid, lease.epoch)
                await self._stop_here(cid)

    async def _drop_expired(self) -> None:
        """Without the database, stop every camera whose lease has run out: another node
        may have it now, and its writes would be refused anyway."""
        now = self._clock()
        for cid, lease in list(self._owned.items()):
            if lease.expires_at < now and cid in self._leaving:
                self._owned.pop(cid, None)  # being stopped already
            elif lease.expires_at < now:
                logger.error("cluster: the lease of camera %s ran out without the database; stopping it here", cid)
                await self._stop_here(cid)

    async def _read_cluster(self, now: float) -> None:
        async with self._db.connect() as conn:
            nodes = (await conn.execute(sa.select(cluster_nodes))).mappings().all()
            rows = (await conn.execute(sa.select(leases.c.name, leases.c.holder, leases.c.expires_at).where(leases.c.name.startswith(CAMERA)))).all()
            views = (await conn.execute(sa.select(camera_views.c.camera, camera_views.c.node, camera_views.c.view))).all()
        self._nodes = {
            r["node"]: NodeInfo(
                r["node"], r["url"], r["capacity"], r["started_at"], r["heartbeat_at"], bool(r["draining"]), r["cameras"], r["rtsp_port"],
                r["onvif_url"],
            )
            for r in nodes
        }
        owners: dict[str, Owner] = {}
        self._holders: dict[str, tuple[str | None, float]] = {}
        for name, holder, expires_at in rows:
            cid = name[len(CAMERA):]
            self._holders[cid] = (holder, expires_at)
            info = self._nodes.get(holder) if holder is not None else None
            if info is not None and expires_at >= now and holder != self.node:
                owners[cid] = Owner(holder, info.url)
        self._owners = owners
        self.remote_views = {cid: view for cid, node, view in views if cid in owners and owners[cid].node == node}

    async def _publish_views(self, now: float) -> None:
        """Tell the other nodes how this node's cameras are (state, stream, rates)."""
        if self.describe is None:
            return
        running = [cam for cam in self.cameras.running() if cam.id in self._owned]
        rows = [{"camera": cam.id, "node": self.node, "at": now, "view": self.describe(cam)} for cam in running]
        ids = [r["camera"] for r in rows]
        try:
            async with self._db.begin() as conn:
                if not self._db.is_sqlite:  # a frozen former owner's rows must not hold the tick up
                    await conn.execute(sa.text(f"SET LOCAL lock_timeout = '{TAKE_LOCK_TIMEOUT_MS}ms'"))
                await conn.execute(camera_views.delete().where(sa.or_(camera_views.c.node == self.node, camera_views.c.camera.in_(ids))))
                if rows:
                    await conn.execute(camera_views.insert(), rows)
        except DBAPIError as exc:
            logger.info("cluster: camera views not published this tick: %s", exc)

    async def _take(self, now: float, wanted: int) -> None:
        free = [
            cid for cid in self.cameras.ids()
            if cid not in self._owned and cid not in self._owners
        ]
        free.sort(key=lambda cid: _rank(cid, self.node))
        # take for a third of the lease at most: the first leases of a long round would run
        # out before the next renewal (the rest are taken at the next tick)
        deadline = time.monotonic() + self.ttl / 3
        for cid in free:
            if wanted <= 0 or time.monotonic() > deadline:
                return
            previous, expires_at = self._holders.get(cid, (None, 0.0))
            lease = await self._store.take(CAMERA + cid, self.ttl)
            if lease is None:
                continue  # another node was quicker
            wanted -= 1
            self._owned[cid] = lease
            if previous is not None and previous != self.node and expires_at > 0:
                # its holder stopped renewing without releasing: it died or was cut off
                self._resumed_from[cid] = f"node failover ({previous})"
                self._events.emit("cluster.failover", camera=cid, node=self.node, previous=previous)
            elif lease.epoch > 1:
                self._resumed_from[cid] = "camera moved between nodes"
            else:
                self._resumed_from.pop(cid, None)
            logger.info("cluster: node %s takes camera %s (epoch %d)", self.node, cid, lease.epoch)
            self._starting[cid] = asyncio.create_task(self._start_here(cid), name=f"cluster-start-{cid}")

    async def _start_here(self, cid: str) -> None:
        try:
            await self.cameras.start_camera(cid)
        except Exception:
            logger.exception("cluster: camera %s failed to start here", cid)
        finally:
            self._starting.pop(cid, None)

    async def _started(self, cid: str) -> None:
        """Let a camera's start finish (or fail) before it is stopped."""
        starting = self._starting.pop(cid, None)
        if starting is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting

    async def _stop_here(self, cid: str) -> None:
        self._owned.pop(cid, None)
        await self._started(cid)
        await self.cameras.stop_camera(cid)

    def _staying(self) -> list[str]:
        """The cameras this node owns and is not giving away."""
        return [cid for cid in self._owned if cid not in self._leaving]

    async def _leave(self, cid: str) -> None:
        try:
            await self._give_away(cid)
        except Exception:
            logger.exception("cluster: giving camera %s away failed; its lease runs out", cid)
            self._owned.pop(cid, None)
        finally:
            self._leaving.pop(cid, None)

    async def _give_away(self, cid: str) -> None:
        lease = self._owned.get(cid)
        await self._started(cid)
        # stop first: the recorder stores its last segment while the lease still fences it in
        await self.cameras.stop_camera(cid)
        self._owned.pop(cid, None)
        if lease is not None:
            try:
                await self._store.release(lease)
            except Exception as exc:
                logger.warning("cluster: releasing camera %s failed (%s); it frees when the lease runs out", cid, exc)
        logger.info("cluster: node %s gives camera %s away", self.node, cid)
