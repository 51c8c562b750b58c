"""The hourly playback cap is the cluster's, not each node's: two nodes (two engines on one
database, each with its own audit writer and event bus, as two processes have) admitting
one session's segments at the same time together let exactly the cap through; each
refusal is audited, the alarm is raised once for both; a segment counted on one node is
served again on the other without counting twice. (End to end over three real nodes:
tests/test_cluster.py.)"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.access.audit import AuditLog
from gateway.access.guard import Principal
from gateway.db import Database
from gateway.errors import TooManyRequests
from gateway.events import EventBus
from gateway.interfaces import Event
from gateway.recording.index import Segment
from gateway.recording.reads import PlaybackReads

LIMIT = 300.0


def seg(i: int) -> Segment:
    return Segment(i, "d", i * 60.0, i * 60.0 + 60, 60.0, 10, "", "", "local", "h264", 1, 1, 0.0)


async def test_two_nodes_admitting_one_session_at_once_share_one_cap(database_url: str) -> None:
    who = Principal(1, "op", "operator", frozenset(), True, "session-1", "cookie", "x")
    other = Principal(2, "op2", "operator", frozenset(), True, "session-2", "cookie", "y")
    alarms: list[Event] = []
    async with Database(database_url) as db1, Database(database_url) as db2, AuditLog(db1) as log1, AuditLog(db2) as log2:
        node1 = PlaybackReads(log1, EventBus(alarms.append), db=db1, max_seconds_per_hour=LIMIT)
        node2 = PlaybackReads(log2, EventBus(alarms.append), db=db2, max_seconds_per_hour=LIMIT)
        # ten segments of a minute asked at once, alternately through the two nodes: five fit
        nodes = itertools.cycle((node1, node2))
        results = await asyncio.gather(
            *(next(nodes).admit_segment(who, "10.0.0.1", seg(i)) for i in range(10)), return_exceptions=True
        )
        admitted = [i for i, r in enumerate(results) if r is None]
        refused = [r for r in results if isinstance(r, TooManyRequests)]
        assert len(admitted) == 5 and len(refused) == 5, results
        assert await node1.used("session-1") == await node2.used("session-1") == LIMIT
        # what one node counted the other serves again (a player's range requests), uncounted
        await node2.admit_segment(who, "10.0.0.1", seg(admitted[0]))
        await node1.admit_segment(who, "10.0.0.1", seg(admitted[1]))
        assert await node1.used("session-1") == LIMIT
        # ... and neither node lets a new one through, playlists included
        with pytest.raises(TooManyRequests, match="this session has pulled 5 min"):
            await node2.admit_segment(who, "10.0.0.1", seg(20))
        with pytest.raises(TooManyRequests):
            await node1.admit_playlist(who, "10.0.0.1", "d")
        # another session's hour is its own
        await node1.admit_segment(other, "10.0.0.2", seg(20))
        await node1.flush()
        await node2.flush()
    assert len([e for e in alarms if e.kind == "playback.alarm"]) == 1, "one alarm for the session, not one per node"
    async with Database(database_url) as db, AuditLog(db) as log:
        entries = await log.query(action="playback.segments", outcome="refused")
    assert len(entries) == 7 and {e["user"] for e in entries} == {"op"}
    assert {e["detail"]["request"] for e in entries} == {"segment", "playlist"}
    assert all(e["detail"]["used_seconds"] <= LIMIT for e in entries)
