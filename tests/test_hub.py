import asyncio
import dataclasses
import tracemalloc

import pytest

from gateway.errors import StreamClosed
from gateway.media.hub import StreamHub
from tests.media_fixtures import make_packets

PACKETS = make_packets(60, gop=10)


async def test_new_reader_starts_at_cached_keyframe():
    hub = StreamHub("cam")
    for p in PACKETS[:15]:  # keyframes at 0 and 10
        hub.publish(p)
    reader = hub.open_reader("late")
    first = await reader.recv()
    assert first.keyframe and first is PACKETS[10]
    assert [await reader.recv() for _ in range(4)] == PACKETS[11:15]


async def test_reader_before_any_keyframe_waits_for_one():
    hub = StreamHub("cam")
    reader = hub.open_reader("early")
    for p in PACKETS[3:12]:  # starts mid-GOP; keyframe at 10
        hub.publish(p)
    assert (await reader.recv()) is PACKETS[10]


async def test_slow_reader_skips_to_next_keyframe_and_never_blocks_others():
    hub = StreamHub("cam")
    slow = hub.open_reader("slow", max_packets=5)
    fast = hub.open_reader("fast")
    got_fast = []
    for p in PACKETS[:30]:
        hub.publish(p)
        got_fast.append(fast.get_nowait())
    assert got_fast == PACKETS[:30]
    assert slow.overflows >= 1 and slow.skipped > 0
    assert slow.pending() <= 5
    for p in PACKETS[30:33]:  # keyframe at 30
        hub.publish(p)
    # the slow reader resumes at a keyframe: a clean picture, not a smear
    first = await asyncio.wait_for(slow.recv(), 1)
    assert first.keyframe


async def test_fifty_readers_one_stalled_writer_keeps_rate_and_memory_bounded():
    hub = StreamHub("cam")
    readers = [hub.open_reader(f"r{i}") for i in range(49)]
    stalled = hub.open_reader("stalled")
    received = [0] * len(readers)

    async def consume(i, r):
        async for _ in r:
            received[i] += 1

    tasks = [asyncio.create_task(consume(i, r)) for i, r in enumerate(readers)]
    tracemalloc.start()
    base = None
    published = 0
    for round_ in range(40):  # 40 rounds x 60 packets = 2400 packets (96 s of 25 fps video)
        for p in PACKETS:
            # a fresh object each time, as a live camera would produce
            hub.publish(dataclasses.replace(p, pts=published * 3600, dts=published * 3600))
            published += 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if round_ == 5:
            base = tracemalloc.get_traced_memory()[0]
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    await asyncio.sleep(0.01)
    assert all(n == published for n in received), (min(received), published)
    assert stalled.pending() <= 100  # bounded by the reader's queue
    assert grown < 4 * 1024 * 1024, grown  # memory does not grow with time
    hub.close()
    await asyncio.gather(*tasks)


async def test_close_wakes_readers_with_stream_closed():
    hub = StreamHub("cam")
    reader = hub.open_reader("r")
    waiting = asyncio.create_task(reader.recv())
    await asyncio.sleep(0)
    hub.close()
    with pytest.raises(StreamClosed):
        await waiting
    with pytest.raises(StreamClosed):
        hub.open_reader("after")


async def test_lossless_reader_alarms_when_it_falls_behind():
    hub = StreamHub("cam")
    alarms = []
    hub.open_reader("recorder", lossless=True, max_packets=20, on_overflow=alarms.append)
    for p in PACKETS:
        hub.publish(p)
    assert alarms, "a lossless reader that overflowed must raise an alarm"


async def test_stream_change_resets_gop_cache_and_updates_info():
    hub = StreamHub("cam")
    for p in PACKETS[:5]:
        hub.publish(p)
    new_info = dataclasses.replace(PACKETS[0].info, width=640, epoch=2)
    changed = []
    hub.add_info_listener(changed.append)
    nonkey = dataclasses.replace(PACKETS[1], info=new_info, discontinuity=True)
    hub.publish(nonkey)
    assert hub.info is new_info and changed == [new_info]
    assert hub.latest_keyframe() is None  # old GOP no longer valid for the new stream


def test_stats_measure_rate():
    hub = StreamHub("cam")
    for p in PACKETS[:3]:
        hub.publish(p)
    stats = hub.stats()
    assert stats.packets == 3 and stats.bytes == sum(p.size for p in PACKETS[:3])


def test_a_listening_reader_gets_the_cached_gop_then_every_packet_as_published_and_hears_the_close():
    hub = StreamHub("cam")
    for p in PACKETS[:15]:  # keyframes at 0 and 10
        hub.publish(p)
    reader = hub.open_reader("fanout")
    got: list = []
    closed: list = []
    reader.listen(got.append, lambda: closed.append(True))
    assert got == PACKETS[10:15]  # the preloaded GOP, handed over at once
    for p in PACKETS[15:40]:
        hub.publish(p)
        assert got[-1] is p  # synchronously, inside publish: no queue, no task
    assert reader.pending() == 0 and reader.skipped == 0
    hub.close()
    hub.close()
    assert closed == [True]  # once
