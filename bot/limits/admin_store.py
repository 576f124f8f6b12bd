"""What admins set, in the same SQLite file as the jobs: limit overrides, bans, paused queues and the audit log."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

import aiosqlite

from bot.limits.rules import LIMIT_NAMES, SPECS, Override, Scope
from bot.pipeline.database import Database, Schema

log = logging.getLogger("sdbot.admin")

# Append, never edit (see bot.pipeline.database).
SCHEMA = Schema(
    "limits",
    (
        """
        CREATE TABLE limit_overrides (
            guild_id INTEGER NOT NULL,
            -- The values of bot.limits.rules.Scope.
            scope TEXT NOT NULL CHECK (scope IN ('guild', 'role', 'member')),
            target_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (guild_id, scope, target_id, name)
        );
        CREATE TABLE bans (
            guild_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            by_id INTEGER NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (guild_id, user_id)
        );
        CREATE TABLE admin_log (
            at REAL NOT NULL,
            guild_id INTEGER,
            by_id INTEGER NOT NULL,
            action TEXT NOT NULL
        );
        """,
        """
        CREATE TABLE paused_guilds (
            guild_id INTEGER PRIMARY KEY,
            by_id INTEGER NOT NULL,
            at REAL NOT NULL
        );
        """,
    ),
)


@dataclass(frozen=True)
class GuildOverrides:
    """Every override in one guild."""

    guild: Override | None = None
    roles: dict[int, Override] = field(default_factory=dict)
    members: dict[int, Override] = field(default_factory=dict)


class AdminStore:
    """Overrides, bans and the admin log; every change is logged with who made it."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def db(self) -> aiosqlite.Connection:
        return self.database.db

    async def log(self, guild_id: int | None, by_id: int, action: str, now: float) -> None:
        """Record an admin action in SQLite and in the bot's log."""
        await self.db.execute(
            "INSERT INTO admin_log (at, guild_id, by_id, action) VALUES (?, ?, ?, ?)", (now, guild_id, by_id, action)
        )
        await self.db.commit()
        log.info("guild %s: %s by %s", guild_id, action, by_id)

    async def set_override(
        self, guild_id: int, scope: Scope, target_id: int, name: str, value: float | None, by_id: int, now: float
    ) -> None:
        """Set one limit for a guild, role or member; None removes it."""
        if name not in LIMIT_NAMES:
            raise ValueError(f"bad override {scope}/{name}")
        if value is None:
            await self.db.execute(
                "DELETE FROM limit_overrides WHERE guild_id = ? AND scope = ? AND target_id = ? AND name = ?",
                (guild_id, scope, target_id, name),
            )
        else:
            await self.db.execute(
                "INSERT INTO limit_overrides (guild_id, scope, target_id, name, value) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (guild_id, scope, target_id, name) DO UPDATE SET value = excluded.value",
                (guild_id, scope.value, target_id, name, value),
            )
        await self.db.commit()
        shown = "unset" if value is None else f"{value:g}"
        await self.log(guild_id, by_id, f"{scope.value} {target_id}: {name} {shown}", now)

    async def overrides(self, guild_id: int | None) -> GuildOverrides:
        """Every override of a guild, grouped by scope."""
        if guild_id is None:
            return GuildOverrides()
        cursor = await self.db.execute(
            "SELECT scope, target_id, name, value FROM limit_overrides WHERE guild_id = ?", (guild_id,)
        )
        grouped: dict[tuple[Scope, int], dict[str, float | int]] = defaultdict(dict)
        for scope, target_id, name, value in await cursor.fetchall():
            grouped[(Scope(scope), target_id)][name] = SPECS[name].stored(value)
        overrides = {key: Override(**values) for key, values in grouped.items()}  # type: ignore[arg-type]
        return GuildOverrides(
            guild=overrides.get((Scope.GUILD, guild_id)),
            roles={target: o for (scope, target), o in overrides.items() if scope is Scope.ROLE},
            members={target: o for (scope, target), o in overrides.items() if scope is Scope.MEMBER},
        )

    async def ban(self, guild_id: int, user_id: int, reason: str, by_id: int, now: float) -> None:
        await self.db.execute(
            "INSERT INTO bans (guild_id, user_id, by_id, reason, at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (guild_id, user_id) DO UPDATE SET by_id = excluded.by_id, reason = excluded.reason,"
            " at = excluded.at",
            (guild_id, user_id, by_id, reason, now),
        )
        await self.db.commit()
        await self.log(guild_id, by_id, f"ban {user_id}: {reason}", now)

    async def unban(self, guild_id: int, user_id: int, by_id: int, now: float) -> bool:
        cursor = await self.db.execute("DELETE FROM bans WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
        await self.db.commit()
        await self.log(guild_id, by_id, f"unban {user_id}", now)
        return cursor.rowcount > 0

    async def ban_reason(self, guild_id: int | None, user_id: int) -> str | None:
        """Why a member is banned in a guild, or None."""
        if guild_id is None:
            return None
        cursor = await self.db.execute(
            "SELECT reason FROM bans WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        row = await cursor.fetchone()
        return str(row[0]) if row is not None else None

    async def ban_in_any(self, guild_ids: Collection[int], user_id: int) -> str | None:
        """Why a member is banned in one of these guilds (the latest ban), or None."""
        cursor = await self.db.execute(
            "SELECT guild_id, reason FROM bans WHERE user_id = ? ORDER BY at DESC", (user_id,)
        )
        wanted = set(guild_ids)
        return next((str(reason) for guild_id, reason in await cursor.fetchall() if guild_id in wanted), None)
