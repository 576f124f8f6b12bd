"""A fair asyncio queue: members are served round-robin, each member's own jobs first come first served."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(order=True, frozen=True)
class _Entry(Generic[T]):
    round: int
    seq: int
    owner: Hashable = field(compare=False)
    item: T = field(compare=False)


class FairQueue(Generic[T]):
    """Round-robin by rounds: a member's n-th waiting job is served in round n, in arrival order within a round.

    A newcomer's first job joins the current round, so it goes ahead of the second job of a member who
    holds ten: one member's burst never blocks everyone else.
    """

    def __init__(self) -> None:
        self._entries: list[_Entry[T]] = []
        self._round = 0  # the round of the job served last
        self._seq = itertools.count()
        self._ready = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._entries)

    def _next_round(self, owner: Hashable) -> int:
        mine = [e.round for e in self._entries if e.owner == owner]
        return max(mine) + 1 if mine else self._round

    async def put(self, owner: Hashable, item: T) -> int:
        """Queue `item` for `owner`; return its 1-based position in serving order."""
        entry = _Entry(self._next_round(owner), next(self._seq), owner, item)
        self._entries.append(entry)
        self._entries.sort()
        async with self._ready:
            self._ready.notify()
        return self._entries.index(entry) + 1

    async def get(self) -> T:
        """Wait for and take the next item in serving order."""
        async with self._ready:
            await self._ready.wait_for(lambda: bool(self._entries))
        entry = self._entries.pop(0)
        self._round = entry.round
        return entry.item

    def next_position(self, owner: Hashable) -> int:
        """The position `owner`'s next item would get if it were put now."""
        round_ = self._next_round(owner)
        return sum(1 for e in self._entries if e.round <= round_) + 1

    def order(self) -> list[T]:
        """Every queued item in the order it will be served."""
        return [e.item for e in self._entries]
