"""The safe-content policy in SQLite: block list entries and settings per server and channel, changes logged."""

from __future__ import annotations

from collections import defaultdict

import aiosqlite

from bot.limits.admin_store import AdminStore
from bot.pipeline.database import Schema
from bot.policy.blocklist import MAX_ENTRIES
from bot.policy.rules import DIRECT_MESSAGES, SETTING_NAMES, GuildPolicy, ScopePolicy, format_setting, parse_setting
from core.jobs import Flagged

# Rows for the whole server use channel 0 (no Discord id is 0), so the primary keys need no NULLs.
SERVER = 0
# Append, never edit (see bot.pipeline.database).
SCHEMA = Schema(
    "policy",
    (
        """
        CREATE TABLE policy_words (
            guild_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            entry TEXT NOT NULL,
            PRIMARY KEY (guild_id, channel_id, entry)
        );
        CREATE TABLE policy_settings (
            guild_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (guild_id, channel_id, name)
        );
        """,
    ),
)


class TooManyEntries(ValueError):
    """The block list of a scope would pass MAX_ENTRIES."""


def _scope(channel_id: int | None) -> str:
    return "server" if channel_id is None else f"channel {channel_id}"


class PolicyStore:
    """Reads a server's policy for every job, and writes what admins change (each change in admin_log)."""

    def __init__(self, admin: AdminStore) -> None:
        self.admin = admin

    @property
    def _db(self) -> aiosqlite.Connection:
        return self.admin.db

    async def policy(self, guild_id: int | None) -> GuildPolicy:
        """Every entry and setting of a server (in a DM, the policy for DMs)."""
        if guild_id is None:
            return DIRECT_MESSAGES
        words: dict[int, list[str]] = defaultdict(list)
        cursor = await self._db.execute(
            "SELECT channel_id, entry FROM policy_words WHERE guild_id = ? ORDER BY rowid", (guild_id,)
        )
        for channel_id, entry in await cursor.fetchall():
            words[channel_id].append(entry)
        settings: dict[int, dict[str, Flagged | bool]] = defaultdict(dict)
        cursor = await self._db.execute(
            "SELECT channel_id, name, value FROM policy_settings WHERE guild_id = ?", (guild_id,)
        )
        for channel_id, name, value in await cursor.fetchall():
            if name in SETTING_NAMES:
                settings[channel_id][name] = parse_setting(name, value)
        scopes = {
            channel_id: ScopePolicy(words=tuple(words[channel_id]), settings=settings[channel_id])
            for channel_id in set(words) | set(settings)
        }
        server = scopes.pop(SERVER, ScopePolicy())
        return GuildPolicy(server=server, channels=scopes)

    async def add_words(
        self, guild_id: int, channel_id: int | None, entries: list[str], by_id: int, now: float
    ) -> list[str]:
        """Add normalized entries to the server's (or a channel's) list; return those that were new."""
        scope = channel_id or SERVER
        cursor = await self._db.execute(
            "SELECT entry FROM policy_words WHERE guild_id = ? AND channel_id = ?", (guild_id, scope)
        )
        present = {row[0] for row in await cursor.fetchall()}
        new = [entry for entry in dict.fromkeys(entries) if entry not in present]
        if len(present) + len(new) > MAX_ENTRIES:
            raise TooManyEntries(f"A block list holds at most {MAX_ENTRIES} entries; this one has {len(present)}.")
        if new:
            # One statement, not executemany, which SQLite refuses when two run at once on the shared connection.
            rows = ", ".join("(?, ?, ?)" for _ in new)
            values = [value for entry in new for value in (guild_id, scope, entry)]
            await self._db.execute(f"INSERT INTO policy_words (guild_id, channel_id, entry) VALUES {rows}", values)
            await self._db.commit()
        if new:
            await self.admin.log(guild_id, by_id, f"policy {_scope(channel_id)}: block {', '.join(new)}", now)
        return new

    async def remove_words(
        self, guild_id: int, channel_id: int | None, entries: list[str], by_id: int, now: float
    ) -> list[str]:
        """Remove entries from the server's (or a channel's) list; return those that were there."""
        removed = []
        for entry in dict.fromkeys(entries):
            cursor = await self._db.execute(
                "DELETE FROM policy_words WHERE guild_id = ? AND channel_id = ? AND entry = ?",
                (guild_id, channel_id or SERVER, entry),
            )
            if cursor.rowcount:
                removed.append(entry)
        await self._db.commit()
        if removed:
            await self.admin.log(guild_id, by_id, f"policy {_scope(channel_id)}: unblock {', '.join(removed)}", now)
        return removed

    async def set_setting(
        self, guild_id: int, channel_id: int | None, name: str, value: Flagged | bool, by_id: int, now: float
    ) -> None:
        """Set one setting for the server or a channel."""
        if name not in SETTING_NAMES:
            raise ValueError(f"no policy setting {name!r}")
        await self._db.execute(
            "INSERT INTO policy_settings (guild_id, channel_id, name, value) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (guild_id, channel_id, name) DO UPDATE SET value = excluded.value",
            (guild_id, channel_id or SERVER, name, format_setting(value)),
        )
        await self._db.commit()
        await self.admin.log(guild_id, by_id, f"policy {_scope(channel_id)}: {name} {format_setting(value)}", now)

    async def reset_channel(self, guild_id: int, channel_id: int, by_id: int, now: float) -> bool:
        """Drop a channel's own entries and settings, so the server's apply; False when it had none."""
        removed = 0
        for table in ("policy_words", "policy_settings"):
            cursor = await self._db.execute(
                f"DELETE FROM {table} WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
            )
            removed += cursor.rowcount
        await self._db.commit()
        await self.admin.log(guild_id, by_id, f"policy {_scope(channel_id)}: reset", now)
        return removed > 0
