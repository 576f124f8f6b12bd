"""Grouping jobs by model in the fair queue: fewer switches, and nobody waits more than one round for it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.pipeline.fair_queue import FairQueue


def model_of(item: str) -> str:
    """Items are written `<owner><n>:<model>`."""
    return item.split(":")[1]


async def drain(queue: FairQueue[str], loaded: str | None) -> list[str]:
    """Serve everything as the dispatcher does: prefer the model the last job used."""
    served = []
    while len(queue):
        item = await queue.get(prefer=loaded)
        loaded = queue.affinity(item)
        served.append(item)
    return served


def switches(order: list[str], loaded: str) -> int:
    models = [loaded, *map(model_of, order)]
    return sum(a != b for a, b in zip(models, models[1:], strict=False))


async def test_without_a_preference_the_order_is_the_fair_one() -> None:
    queue: FairQueue[str] = FairQueue(affinity=model_of)
    for owner, item in [("A", "A0:x"), ("A", "A1:y"), ("B", "B0:y"), ("C", "C0:x")]:
        await queue.put(owner, item)
    assert [await queue.get() for _ in range(4)] == ["A0:x", "B0:y", "C0:x", "A1:y"]


async def test_the_loaded_model_goes_first_within_the_round() -> None:
    queue: FairQueue[str] = FairQueue(affinity=model_of)
    for owner, item in [("A", "A0:x"), ("B", "B0:y"), ("C", "C0:y"), ("D", "D0:y")]:
        await queue.put(owner, item)
    order = await drain(queue, loaded="y")
    assert order == ["B0:y", "C0:y", "D0:y", "A0:x"]
    assert switches(order, "y") == 1  # the fair order A, B, C, D would switch twice


async def test_a_passed_over_job_waits_at_most_one_round() -> None:
    """B keeps queueing jobs for the loaded model; A's job for another still goes after one round."""
    queue: FairQueue[str] = FairQueue(affinity=model_of)
    await queue.put("A", "A0:x")
    for i in range(5):
        await queue.put("B", f"B{i}:y")
    await queue.put("C", "C0:y")
    first = [await queue.get(prefer="y") for _ in range(3)]
    assert first == ["B0:y", "C0:y", "A0:x"]  # B1 is in the next round: it does not pass A


async def test_newcomers_for_the_loaded_model_cannot_hold_a_job_back_forever() -> None:
    queue: FairQueue[str] = FairQueue(affinity=model_of)
    await queue.put("A", "A0:x")
    await queue.put("B", "B0:y")
    served = []
    for i in range(6):
        # A new member for the loaded model joins the current round before every get.
        await queue.put(f"N{i}", f"N{i}:y")
        served.append(await queue.get(prefer="y"))
    # A0 is passed over by the two other jobs of its round when that first happened (B0 and N0), no more.
    assert served == ["B0:y", "N0:y", "A0:x", "N1:y", "N2:y", "N3:y"]


async def test_without_affinity_prefer_is_ignored() -> None:
    queue: FairQueue[str] = FairQueue()
    await queue.put("A", "A0:x")
    await queue.put("B", "B0:y")
    assert await queue.get(prefer="y") == "A0:x"
    assert queue.affinity("B0:y") is None


async def test_removing_a_passed_over_job_forgets_it() -> None:
    queue: FairQueue[str] = FairQueue(affinity=model_of)
    for owner, item in [("A", "A0:x"), ("B", "B0:y"), ("C", "C0:y")]:
        await queue.put(owner, item)
    assert await queue.get(prefer="y") == "B0:y"
    assert queue.remove(lambda item: item == "A0:x") == "A0:x"
    assert await drain(queue, "y") == ["C0:y"]


jobs = st.lists(st.tuples(st.sampled_from("ABCD"), st.sampled_from("xyz")), min_size=1, max_size=24)


@settings(max_examples=60, deadline=None)
@given(jobs=jobs, loaded=st.sampled_from("xyz"))
async def test_grouping_serves_everyone_in_order_and_never_more_than_a_round_late(
    jobs: list[tuple[str, str]], loaded: str
) -> None:
    fair_queue: FairQueue[str] = FairQueue(affinity=model_of)
    grouped_queue: FairQueue[str] = FairQueue(affinity=model_of)
    for n, (owner, model) in enumerate(jobs):
        await fair_queue.put(owner, f"{owner}{n}:{model}")
        await grouped_queue.put(owner, f"{owner}{n}:{model}")
    fair = [await fair_queue.get() for _ in range(len(jobs))]
    grouped = await drain(grouped_queue, loaded)
    assert sorted(grouped) == sorted(fair)
    owners = {owner for owner, _ in jobs}
    for owner in owners:
        # Each member's jobs still run in the order they asked for them.
        assert [i for i in grouped if i[0] == owner] == [i for i in fair if i[0] == owner]
    for item in fair:
        # Late by at most one round: the other members' turns of that round.
        assert grouped.index(item) <= fair.index(item) + len(owners) - 1
    assert switches(grouped, loaded) <= switches(fair, loaded)
