from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.pipeline.fair_queue import FairQueue


async def test_a_member_with_ten_queued_does_not_block_a_newcomer() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(10):
        await queue.put("A", f"A{i}")
    assert await queue.put("B", "B0") == 2
    assert [await queue.get() for _ in range(3)] == ["A0", "B0", "A1"]


async def test_newcomer_goes_next_even_after_the_burst_started_running() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(10):
        await queue.put("A", f"A{i}")
    assert await queue.get() == "A0"
    assert queue.next_position("B") == 1
    assert await queue.put("B", "B0") == 1
    assert await queue.put("C", "C0") == 2
    assert queue.order()[:4] == ["B0", "C0", "A1", "A2"]


async def test_round_robin_across_members_and_fifo_within_each() -> None:
    queue: FairQueue[str] = FairQueue()
    for item in ["A0", "A1", "A2"]:
        await queue.put("A", item)
    for item in ["B0", "B1"]:
        await queue.put("B", item)
    await queue.put("C", "C0")
    assert queue.order() == ["A0", "B0", "C0", "A1", "B1", "A2"]
    assert [await queue.get() for _ in range(6)] == ["A0", "B0", "C0", "A1", "B1", "A2"]
    assert len(queue) == 0


async def test_next_position_predicts_put() -> None:
    queue: FairQueue[str] = FairQueue()
    for owner, item in [("A", "A0"), ("A", "A1"), ("B", "B0"), ("A", "A2")]:
        predicted = queue.next_position(owner)
        assert await queue.put(owner, item) == predicted


async def test_get_waits_for_a_put() -> None:
    queue: FairQueue[str] = FairQueue()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    await queue.put("A", "A0")
    assert await asyncio.wait_for(waiter, 1) == "A0"


async def test_guilds_take_turns_and_members_take_turns_within_a_guild() -> None:
    queue: FairQueue[str] = FairQueue()
    for item in ["a1", "a2", "a3"]:
        await queue.put("alice", item, "big-server")
    await queue.put("bob", "b1", "big-server")
    await queue.put("carol", "c1", "small-server")
    assert queue.order() == ["a1", "c1", "b1", "a2", "a3"]
    assert [await queue.get() for _ in range(5)] == ["a1", "c1", "b1", "a2", "a3"]


async def test_a_guild_served_last_waits_behind_one_that_was_not() -> None:
    queue: FairQueue[str] = FairQueue()
    await queue.put("alice", "a1", "one")
    assert await queue.get() == "a1"
    await queue.put("alice", "a2", "one")
    await queue.put("carol", "c1", "two")
    assert queue.next_position("dave", "three") == 2
    assert queue.order() == ["c1", "a2"]


async def test_pause_holds_jobs_and_resume_releases_them() -> None:
    queue: FairQueue[str] = FairQueue()
    await queue.pause()
    await queue.put("A", "A0")
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done() and queue.paused
    await queue.resume()
    assert await asyncio.wait_for(waiter, 1) == "A0"


async def test_remove_takes_a_waiting_item_out() -> None:
    queue: FairQueue[str] = FairQueue()
    for item in ["A0", "A1"]:
        await queue.put("A", item)
    await queue.put("B", "B0")
    assert queue.remove(lambda item: item == "A0") == "A0"
    assert queue.remove(lambda item: item == "missing") is None
    assert queue.order() == ["B0", "A1"]


def _up_to(limit: int, accept: str = "") -> Callable[[str], bool]:
    """A batch joiner that takes items containing `accept`, up to `limit` of them."""
    taken: list[str] = []

    def can_join(item: str) -> bool:
        if accept not in item or len(taken) >= limit:
            return False
        taken.append(item)
        return True

    return can_join


async def test_a_batch_takes_companions_in_serving_order_up_to_its_cap() -> None:
    queue: FairQueue[str] = FairQueue()
    for owner, count in (("A", 4), ("B", 2), ("C", 1)):
        for i in range(count):
            await queue.put(owner, f"{owner}{i}")
    first = await queue.get()
    assert [first, *queue.take_more(_up_to(3))] == ["A0", "B0", "C0", "A1"]
    assert queue.order() == ["B1", "A2", "A3"]


async def test_incompatible_jobs_stay_and_keep_their_owners_order() -> None:
    queue: FairQueue[str] = FairQueue()
    for item in ["A0 512", "A1 768", "A2 512"]:
        await queue.put("A", item)
    for item in ["B0 768", "B1 512"]:
        await queue.put("B", item)
    await queue.put("C", "C0 512")
    first = await queue.get()
    # A1 does not fit a 512 batch, so A2 may not jump ahead of it; B's head does not fit either.
    assert [first, *queue.take_more(_up_to(8, "512"))] == ["A0 512", "C0 512"]
    assert queue.order() == ["B0 768", "A1 768", "B1 512", "A2 512"]


async def test_a_newcomer_after_a_batch_goes_before_the_burst_it_left_waiting() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(6):
        await queue.put("A", f"A{i}")
    await queue.get()
    assert queue.take_more(_up_to(2)) == ["A1", "A2"]
    assert await queue.put("B", "B0") == 1
    assert queue.order() == ["B0", "A3", "A4", "A5"]


async def test_a_paused_queue_adds_nothing_to_a_batch() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(3):
        await queue.put("A", f"A{i}")
    await queue.get()
    await queue.pause()
    assert queue.take_more(_up_to(8)) == []
    assert len(queue) == 2


async def test_batch_companions_from_later_rounds_do_not_push_a_newcomer_back() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(4):
        await queue.put("B", f"B{i} 512")
    for i in range(2):
        await queue.put("C", f"C{i} 768")
    await queue.get()
    assert queue.take_more(_up_to(8, "512")) == ["B1 512", "B2 512", "B3 512"]
    # D joins the round being served, right behind C's first job, not behind all of C's.
    assert await queue.put("D", "D0 512") == 2
    assert queue.order() == ["C0 768", "D0 512", "C1 768"]


async def test_a_paused_guild_is_held_while_the_others_keep_flowing() -> None:
    queue: FairQueue[str] = FairQueue()
    await queue.pause_group("paused")
    await queue.put("alice", "p1", "paused")
    await queue.put("alice", "p2", "paused")
    await queue.put("bob", "r1", "running")
    assert queue.is_paused("paused") and not queue.is_paused("running") and not queue.paused
    assert queue.order() == ["r1", "p1", "p2"], "held jobs wait behind every job that may run"
    assert queue.next_position("carol", "running") == 2 and queue.next_position("carol", "paused") == 3
    assert await queue.get() == "r1"
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done(), "a paused guild's jobs are never handed out"
    await queue.put("bob", "r2", "running")
    assert await asyncio.wait_for(waiter, 1) == "r2"
    await queue.resume_group("paused")
    assert [await queue.get() for _ in range(2)] == ["p1", "p2"]


async def test_a_batch_never_takes_a_paused_guilds_jobs() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(3):
        await queue.put("alice", f"P{i}", "paused")
        await queue.put("bob", f"R{i}", "running")
    await queue.pause_group("paused")
    assert await queue.get() == "R0"
    assert queue.take_more(_up_to(8)) == ["R1", "R2"]
    assert len(queue) == 3


async def test_resuming_everything_leaves_a_guild_paused_on_its_own() -> None:
    queue: FairQueue[str] = FairQueue()
    await queue.pause_group("paused")
    await queue.pause()
    assert queue.is_paused("running") and queue.is_paused(None)
    await queue.resume_group("paused")
    assert queue.is_paused("paused"), "every guild stays paused while the whole queue is"
    await queue.pause_group("paused")
    await queue.resume()
    assert queue.is_paused("paused") and not queue.is_paused("running")
