"""Turns by role: a member whose role has n turns gets n jobs a round of the fair queue, and nobody waits more than
one round behind anyone."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.pipeline.fair_queue import FairQueue

# Per member: their turns per round and how many jobs they queue.
MEMBERS = st.lists(st.tuples(st.integers(1, 3), st.integers(1, 8)), min_size=1, max_size=6)


def served(members: list[tuple[int, int]], arrivals: list[int]) -> list[str]:
    """The jobs in serving order once every member's jobs are queued, in the arrival order `arrivals` draws."""

    async def run() -> list[str]:
        queue: FairQueue[str] = FairQueue()
        left = [jobs for _, jobs in members]
        order = [member for member in arrivals if member < len(members)]
        order += [m for m, jobs in enumerate(left) for _ in range(jobs)]
        for member in order:
            if left[member]:
                left[member] -= 1
                count = members[member][1] - left[member]
                await queue.put(member, f"{member}:{count - 1}", turns=members[member][0])
        return [await queue.get() for _ in range(sum(jobs for _, jobs in members))]

    return asyncio.run(run())


@settings(max_examples=200, deadline=None)
@given(MEMBERS, st.lists(st.integers(0, 5), max_size=40))
def test_each_members_share_of_a_round_is_their_turns_and_nobody_waits_more_than_a_round(
    members: list[tuple[int, int]], arrivals: list[int]
) -> None:
    order = [tuple(map(int, job.split(":"))) for job in served(members, arrivals)]
    for position, (member, number) in enumerate(order):
        round_ = number // members[member][0]
        before = order[:position]
        for other, (turns, jobs) in enumerate(members):
            if other == member:
                continue
            others_before = sum(1 for who, _ in before if who == other)
            # Everyone else's jobs of this member's round and the rounds before it: at most theirs (fair)...
            assert others_before <= turns * (round_ + 1)
            # ... and at least all of their earlier rounds' (nobody is passed over for more than a round).
            assert others_before >= min(jobs, turns * round_)


def test_a_member_with_two_turns_gets_two_jobs_each_round() -> None:
    order = served([(2, 4), (1, 4)], [])
    assert order == ["0:0", "0:1", "1:0", "0:2", "0:3", "1:1", "1:2", "1:3"]
