"""Who may queue what: bans, the member's limits (with overrides), and the atomic reservation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from bot.limits.admin_store import AdminStore
from bot.limits.rules import Limits, Usage, refusal, resolve
from bot.pipeline.progress import Clock
from bot.pipeline.store import JobStore
from core.jobs import Job
from core.params import InvalidParams


class Refused(InvalidParams):
    """A limit or a ban refuses the job; the message says which, and when the member can go again."""


class Quota:
    """Limits from .env, overridden per guild, role and member in SQLite; checked and reserved at once.

    In a DM no server's overrides apply (the defaults do), and a ban in any server the bot is in (`guild_ids`) counts.
    """

    def __init__(
        self,
        *,
        store: JobStore,
        admin: AdminStore,
        defaults: Limits,
        clock: Clock,
        guild_ids: Callable[[], Collection[int]] = tuple,
    ) -> None:
        self.store = store
        self.admin = admin
        self.defaults = defaults
        self.clock = clock
        self.guild_ids = guild_ids
        self._reserving = asyncio.Lock()

    async def limits(self, guild_id: int | None, user_id: int, role_ids: Sequence[int]) -> Limits:
        """A member's limits in a guild: the most generous of their roles wins; their own override beats roles."""
        overrides = await self.admin.overrides(guild_id)
        roles = [overrides.roles[r] for r in role_ids if r in overrides.roles]
        return resolve(self.defaults, overrides.guild, roles, overrides.members.get(user_id))

    async def usage(self, user_id: int) -> Usage:
        return await self.store.usage(user_id, self.clock())

    async def check(self, job: Job, role_ids: Sequence[int]) -> Limits:
        """The member's limits, or Refused with the reason (and when the member can go again) unless they may run the
        job now; a ban is one reason. Stores nothing: work a job needs before it is reserved (downloading its image)
        waits for this."""
        if job.guild_id is None:
            # No server's admins can ban anyone from a DM: a ban in any server the bot is still in counts there.
            banned = await self.admin.ban_in_any(self.guild_ids(), job.user_id)
            where = ": an admin of a server I'm in has banned you"
        else:
            banned = await self.admin.ban_reason(job.guild_id, job.user_id)
            where = " in this server: an admin has banned you"
        if banned is not None:
            raise Refused(f"You can't use me{where} ({banned}).")
        limits = await self.limits(job.guild_id, job.user_id, role_ids)
        now = self.clock()
        verdict = refusal(job.params, limits, await self.store.usage(job.user_id, now), now)
        if verdict is not None:
            raise Refused(verdict.sentence())
        return limits

    async def reserve(self, job: Job, role_ids: Sequence[int]) -> Limits:
        """Store the job if the member may run it now (and return their limits); else raise Refused with the reason
        and when.

        The check and the insert hold one lock, and this process is the job log's only writer, so the limits are
        checked in one place (`refusal`) and a burst of presses cannot overshoot them.
        """
        async with self._reserving:
            limits = await self.check(job, role_ids)
            await self.store.add(replace(job, turns=limits.turns))
        return limits
