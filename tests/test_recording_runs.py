"""The catalogue's runs stay equal to the segments they summarise, through adds and deletes."""

import random

import pytest

from gateway.db import Database
from gateway.recording.index import CONTIGUOUS, Catalogue, Span


async def add(cat: Catalogue, camera: str, start: float, length: float = 60.0):
    return await cat.add_segment(
        camera=camera, start=start, end=start + length, bytes=1000, sha256="0" * 64, storage_key=f"{camera}/{start}",
        backend="local", codec="h264", width=320, height=240,
    )


def merged(segs) -> list[tuple[float, float, int, int]]:
    runs: list[list] = []
    for s in sorted(segs, key=lambda s: s.start):
        if runs and s.start - runs[-1][1] <= CONTIGUOUS:
            runs[-1][1] = max(runs[-1][1], s.end)
            runs[-1][2] += 1
            runs[-1][3] += s.bytes
        else:
            runs.append([s.start, s.end, 1, s.bytes])
    return [tuple(r) for r in runs]


async def spans_of(cat: Catalogue, camera: str) -> list[tuple[float, float, int, int]]:
    items = await cat.spans(camera, 0, 10**10)
    return [(i.start, i.end, i.segments, i.bytes) for i in items if isinstance(i, Span)]


@pytest.fixture
async def catalogue(database_url):
    async with Database(database_url) as db:
        yield Catalogue(db)


async def test_runs_follow_adds_and_deletes(catalogue):
    rng = random.Random(7)
    t = 1_000_000.0
    for camera in ("a", "b"):
        t = 1_000_000.0
        for _ in range(300):
            if rng.random() < 0.05:
                t += rng.choice((5.0, 600.0))  # a gap
            await add(catalogue, camera, t)
            t += 60.0
    for camera in ("a", "b"):
        assert await spans_of(catalogue, camera) == merged(await catalogue.all_segments(camera))
    # retention from the oldest end, and holes punched in the middle (held neighbours kept)
    segs = await catalogue.all_segments("a")
    await catalogue.remove_segments([s.id for s in segs[:40]])
    await catalogue.remove_segments([s.id for s in segs[100:130:2]])
    await catalogue.remove_segments([s.id for s in segs[200:201]])
    assert await spans_of(catalogue, "a") == merged(await catalogue.all_segments("a"))
    assert await spans_of(catalogue, "b") == merged(await catalogue.all_segments("b"))  # untouched


async def test_spans_carry_the_gaps_between_them(catalogue):
    await add(catalogue, "c", 0.0)
    await add(catalogue, "c", 60.0)
    await add(catalogue, "c", 500.0)
    items = await catalogue.spans("c", 0.0, 560.0)
    assert [(i.kind, i.start, i.end) for i in items] == [("span", 0.0, 120.0), ("gap", 120.0, 500.0), ("span", 500.0, 560.0)]
