"""A fair asyncio queue: guilds take turns, members within a guild take turns, each member's jobs in order.

A guild's jobs can be held (its admins paused it), or every guild's at once: held jobs keep their places among
themselves and wait behind every job that may run, which neither waits for them nor is batched with them.

Optionally it groups by an affinity (the model a job needs): within the current round it may serve first a
job whose affinity is the one preferred (the model already loaded), but a job it passes over is passed over
at most as many times as there were other jobs in its round when that first happened.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
E = TypeVar("E")


@dataclass(order=True, frozen=True)
class _Entry(Generic[T]):
    round: int
    seq: int
    owner: Hashable = field(compare=False)
    item: T = field(compare=False)


@dataclass
class _Group(Generic[T]):
    """One guild's waiting jobs, in round-robin order of their members."""

    created: int
    entries: list[_Entry[T]] = field(default_factory=list)
    round: int = 0  # the round of the job served last
    last_served: int = -1  # when this guild was last served (-1: not yet), for the turn between guilds

    def next_round(self, owner: Hashable, turns: int = 1) -> int:
        # A member's waiting jobs fill their turns of each round in order (one turn each, unless their role has more);
        # a newcomer joins the current round, so one member's burst never holds back everyone else.
        mine = [e.round for e in self.entries if e.owner == owner]
        if not mine:
            return self.round
        last = max(mine)
        return last if mine.count(last) < turns else last + 1


class FairQueue(Generic[T]):
    """Round-robin across guilds and, within a guild, across members; first come first served per member."""

    def __init__(self, affinity: Callable[[T], Hashable] | None = None) -> None:
        self._affinity = affinity
        # seq → (times passed over, most times it may be): the bound that keeps grouping fair.
        self._passed: dict[int, tuple[int, int]] = {}
        self._groups: dict[Hashable, _Group[T]] = {}
        self._seq = itertools.count()
        self._ticks = itertools.count()
        self._ready = asyncio.Condition()
        # Set whenever an item joins or the queue is resumed: a consumer that found nothing it could take waits here.
        self.changed = asyncio.Event()
        self._paused = False
        self._held: set[Hashable] = set()

    def __len__(self) -> int:
        return sum(len(g.entries) for g in self._groups.values())

    @property
    def paused(self) -> bool:
        """Whether every guild's jobs are held."""
        return self._paused

    def is_paused(self, group: Hashable) -> bool:
        """Whether `group`'s jobs are held, on their own or with everyone's."""
        return self._paused or group in self._held

    async def _notify(self) -> None:
        self.changed.set()
        async with self._ready:
            self._ready.notify_all()

    async def pause(self) -> None:
        """Stop handing out jobs (those queued stay, new ones still join)."""
        self._paused = True
        await self._notify()

    async def resume(self) -> None:
        """Hand out jobs again (a group paused on its own stays paused)."""
        self._paused = False
        await self._notify()

    async def pause_group(self, group: Hashable) -> None:
        """Hold `group`'s jobs (they still join); the other groups' keep being handed out."""
        self._held.add(group)
        await self._notify()

    async def resume_group(self, group: Hashable) -> None:
        """Hand out `group`'s jobs again, unless every group is paused."""
        self._held.discard(group)
        await self._notify()

    def _group(self, group: Hashable) -> _Group[T]:
        if group not in self._groups:
            self._groups[group] = _Group(created=next(self._seq))
        return self._groups[group]

    async def put(self, owner: Hashable, item: T, group: Hashable = None, turns: int = 1) -> int:
        """Queue `item` for `owner` in `group` (a guild), who has `turns` jobs per round; return its 1-based position
        in serving order."""
        lane = self._group(group)
        lane.entries.append(_Entry(lane.next_round(owner, turns), next(self._seq), owner, item))
        lane.entries.sort()
        await self._notify()
        return self.order().index(item) + 1

    async def put_back(self, owner: Hashable, item: T, group: Hashable = None) -> None:
        """Return a taken item to the front of its guild's turn (the engine it went to was lost before drawing it):
        it was served once already, so it goes first again rather than behind its owner's later items."""
        lane = self._group(group)
        lane.entries.append(_Entry(min([lane.round, *(e.round for e in lane.entries)]), -next(self._seq), owner, item))
        lane.entries.sort()
        await self._notify()

    def affinity(self, item: T) -> Hashable:
        """What `get(prefer=...)` compares: the item's affinity (None without grouping)."""
        return self._affinity(item) if self._affinity is not None else None

    async def get(self, prefer: Hashable = None) -> T:
        """Wait for (and while paused, keep waiting for) the next item, and take it: the next in serving order, or
        one of its round whose affinity is `prefer` (see the module's docstring for the bound)."""
        async with self._ready:
            await self._ready.wait_for(lambda: bool(self._runnable()))
        taken = self.take(prefer)
        assert taken is not None
        return taken[0]

    def take(self, prefer: Hashable = None, accept: Callable[[T], bool] | None = None) -> tuple[T] | None:
        """Take the next item that `accept`s (every one without it) as `get` would, without waiting; None when no
        runnable item does. (A tuple, so that a falsy item is still told from none.)"""
        chosen = self._choose(prefer, accept)
        if chosen is None:
            return None
        lane, entry = chosen
        lane.entries.remove(entry)
        self._passed.pop(entry.seq, None)
        lane.round = entry.round
        # Guilds are kept when empty, so one that comes back waits its turn behind those served less lately.
        lane.last_served = next(self._ticks)
        return (entry.item,)

    def _choose(
        self, prefer: Hashable, accept: Callable[[T], bool] | None = None
    ) -> tuple[_Group[T], _Entry[T]] | None:
        # The current round, in serving order: each guild's waiting (and accepted) jobs of the round its first one is
        # in. Only those are read, not the whole queue: a batch is chosen in time that grows with the members
        # waiting, not with their jobs.
        found: list[tuple[int, int, _Group[T], _Entry[T]]] = []
        for turn, (_, lane) in enumerate(self._runnable()):
            first_round: int | None = None
            for depth, entry in enumerate(lane.entries):
                if first_round is not None and entry.round != first_round:
                    break
                if accept is None or accept(entry.item):
                    first_round = entry.round
                    found.append((depth, turn, lane, entry))
                    if self._affinity is None or prefer is None:
                        break
        if not found:
            return None
        found.sort(key=lambda candidate: candidate[:2])
        candidates = [(lane, entry) for _, _, lane, entry in found]
        if self._affinity is None or prefer is None:
            return candidates[0]
        chosen = 0
        for index, (_, entry) in enumerate(candidates):
            passed, limit = self._passed.get(entry.seq, (0, len(candidates) - 1))
            if passed >= limit or self._affinity(entry.item) == prefer:
                chosen = index
                break
        for _, entry in candidates[:chosen]:
            passed, limit = self._passed.get(entry.seq, (0, len(candidates) - 1))
            self._passed[entry.seq] = (passed + 1, limit)
        return candidates[chosen]

    def take_more(self, can_join: Callable[[T], bool], limit: int | None = None) -> list[T]:
        """Also take the waiting items, in serving order, that `can_join` accepts (it is asked in that order,
        so it may count what it took), at most `limit` of them; an item never jumps ahead of its own owner's earlier
        waiting items."""
        taken: list[T] = []
        passed_over: set[tuple[Hashable, Hashable]] = set()
        for key, lane, entry in _serving(self._runnable()):
            if limit is not None and len(taken) >= limit:
                break
            if (key, entry.owner) in passed_over or not can_join(entry.item):
                passed_over.add((key, entry.owner))
                continue
            lane.entries.remove(entry)
            self._passed.pop(entry.seq, None)
            # The lane's round stays the first job's: companions from later rounds must not push newcomers back.
            lane.last_served = next(self._ticks)
            taken.append(entry.item)
        return taken

    def remove(self, match: Callable[[T], bool]) -> T | None:
        """Take the first waiting item that `match`es out of the queue (a cancelled job); None if none does."""
        for lane in self._groups.values():
            for entry in lane.entries:
                if match(entry.item):
                    lane.entries.remove(entry)
                    self._passed.pop(entry.seq, None)
                    return entry.item
        return None

    def _rotation(self, also: Hashable = ...) -> list[tuple[Hashable, _Group[T]]]:
        """Guilds with waiting jobs (and `also`), the one served longest ago (or never) first."""
        lanes = [(key, lane) for key, lane in self._groups.items() if lane.entries or key == also]
        return sorted(lanes, key=lambda pair: (pair[1].last_served, pair[1].created))

    def _runnable(self) -> list[tuple[Hashable, _Group[T]]]:
        """The guilds with waiting jobs that may be handed out, in turn order."""
        return [(key, lane) for key, lane in self._rotation() if lane.entries and not self.is_paused(key)]

    def _in_order(self, lanes: list[tuple[Hashable, list[_Entry[T]]]]) -> list[_Entry[T]]:
        """Serving order: the guilds that run take turns, then the held ones' jobs (they wait for a resume)."""
        running = [entries for key, entries in lanes if not self.is_paused(key)]
        held = [entries for key, entries in lanes if self.is_paused(key)]
        return _interleave(running) + _interleave(held)

    def order(self) -> list[T]:
        """Every queued item in the order it will be served (held ones last)."""
        return [e.item for e in self._in_order([(key, lane.entries) for key, lane in self._rotation()])]

    def next_position(self, owner: Hashable, group: Hashable = None, turns: int = 1) -> int:
        """The position `owner`'s next item in `group` would get if it were put now."""
        sentinel: Any = object()
        self._group(group)
        lanes = []
        for key, lane in self._rotation(also=group):
            if key == group:
                entries = sorted(
                    [*lane.entries, _Entry(lane.next_round(owner, turns), next(self._seq), owner, sentinel)]
                )
                lanes.append((key, entries))
            else:
                lanes.append((key, lane.entries))
        return [e.item for e in self._in_order(lanes)].index(sentinel) + 1


def _serving(lanes: list[tuple[Hashable, _Group[T]]]) -> Iterator[tuple[Hashable, _Group[T], _Entry[T]]]:
    """The lanes' entries in serving order (the first of each in turn, then the second, …), read as they are asked
    for; the lanes may lose entries meanwhile (what was read was copied)."""
    snapshots = [(key, lane, list(lane.entries)) for key, lane in lanes]
    for depth in range(max((len(entries) for _, _, entries in snapshots), default=0)):
        for key, lane, entries in snapshots:
            if depth < len(entries):
                yield key, lane, entries[depth]


def _interleave(lanes: list[list[E]]) -> list[E]:
    """The first entry of each lane in turn, then the second of each, and so on."""
    served: list[E] = []
    for depth in range(max((len(lane) for lane in lanes), default=0)):
        served.extend(lane[depth] for lane in lanes if depth < len(lane))
    return served
