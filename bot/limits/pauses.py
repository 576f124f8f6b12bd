"""Paused queues: one server's (its admins paused it) or every server's (the bot's owners did), kept in SQLite so a
restart holds them still, and applied to the fair queue."""

from __future__ import annotations

from typing import Any

from bot.limits.admin_store import AdminStore
from bot.pipeline.fair_queue import FairQueue

# The row that pauses every server at once (no Discord id is 0).
EVERY_SERVER = 0


def hold_reason(queue: FairQueue[Any], guild_id: int | None, server: str = "this server") -> str | None:
    """Why a job of this server waits however short the line is (`server` names the server), or None when it may
    start."""
    if queue.paused:
        return "every server's queue is paused"
    if queue.is_paused(guild_id):
        return f"{server}'s queue is paused by its admins"
    return None


class Pauses:
    """Which queues are paused, in SQLite and in the fair queue alike."""

    def __init__(self, *, admin: AdminStore, queue: FairQueue[Any]) -> None:
        self.admin = admin
        self.queue = queue
        self._paused: set[int] = set()

    async def load(self) -> None:
        """Hold again what was paused before the restart."""
        cursor = await self.admin.db.execute("SELECT guild_id FROM paused_guilds")
        for (guild_id,) in await cursor.fetchall():
            await self._apply(int(guild_id), True)

    def paused(self, guild_id: int) -> bool:
        """Whether this server (or with EVERY_SERVER, every server at once) is paused."""
        return guild_id in self._paused

    def servers_paused(self) -> int:
        """How many servers are paused on their own."""
        return len(self._paused - {EVERY_SERVER})

    async def set(self, guild_id: int, paused: bool, by_id: int, now: float) -> bool:
        """Pause or resume a server's queue (EVERY_SERVER: all of them); False when it already was so."""
        if self.paused(guild_id) == paused:
            return False
        db = self.admin.db
        if paused:
            await db.execute("INSERT INTO paused_guilds (guild_id, by_id, at) VALUES (?, ?, ?)", (guild_id, by_id, now))
        else:
            await db.execute("DELETE FROM paused_guilds WHERE guild_id = ?", (guild_id,))
        await db.commit()
        await self._apply(guild_id, paused)
        return True

    async def _apply(self, guild_id: int, paused: bool) -> None:
        if paused:
            self._paused.add(guild_id)
        else:
            self._paused.discard(guild_id)
        if guild_id == EVERY_SERVER:
            await (self.queue.pause() if paused else self.queue.resume())
        else:
            await (self.queue.pause_group(guild_id) if paused else self.queue.resume_group(guild_id))
