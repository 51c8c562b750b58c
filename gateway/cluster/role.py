"""What a node's services need to know of the cluster: whether a write is still theirs to
make (fencing) and whether a cluster-wide job is theirs to run.

A single node (no ``[cluster]``) is ``SINGLE_NODE``: it writes unfenced and runs every job.
In a cluster, ``gateway.cluster.node.ClusterNode`` is the role: it holds the leases.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

JobFactory = Callable[[], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Fence:
    """A write on behalf of lease ``name`` held by ``node`` at ``epoch``: accepted only
    while that is still so (checked in the write's own transaction)."""

    name: str
    node: str
    epoch: int


class Jobs(Protocol):
    async def run(self, name: str, factory: JobFactory) -> None:
        """Run ``factory()`` for as long as this node may run job ``name`` (forever on a
        single node; while holding the job's lease in a cluster, again when it is taken back)."""


class ClusterRole(Protocol):
    @property
    def jobs(self) -> Jobs: ...

    def fence(self, camera_id: str) -> Fence | None:
        """The fence for writes about a camera running here (None: unfenced)."""

    def gap_reason(self, camera_id: str) -> str | None:
        """Why the camera's recording had a gap before it started here (None: the gateway
        was down)."""


class _AlwaysRun:
    async def run(self, name: str, factory: JobFactory) -> None:
        await factory()


class SingleNode:
    jobs: Jobs = _AlwaysRun()

    def fence(self, camera_id: str) -> Fence | None:
        return None

    def gap_reason(self, camera_id: str) -> str | None:
        return None


SINGLE_NODE = SingleNode()
CLUSTER_ROLE = web.AppKey("cluster_role", ClusterRole)
