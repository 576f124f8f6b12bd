"""Each server's styles, kept in SQLite and mirrored in memory so /imagine applies them without a query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.pipeline.database import Database, Schema
from core.params import InvalidParams
from core.styles import MAX_STYLES, Style, StyleError

# Append, never edit (see bot.pipeline.database).
SCHEMA = Schema(
    "styles",
    (
        """
        CREATE TABLE styles (
            guild_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            prompt TEXT NOT NULL,
            negative_prompt TEXT NOT NULL,
            PRIMARY KEY (guild_id, name)
        );
        """,
    ),
)


class Styles:
    """The styles of every server, by name."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._by_guild: dict[int, dict[str, Style]] = {}
        # Changes one at a time: each reads the mirror, awaits SQLite, then writes the mirror back.
        self._changing = asyncio.Lock()

    async def load(self) -> None:
        """Read every server's styles once the store is open."""
        cursor = await self.database.db.execute("SELECT guild_id, name, prompt, negative_prompt FROM styles")
        self._by_guild = {}
        for guild_id, name, prompt, negative in await cursor.fetchall():
            self._by_guild.setdefault(int(guild_id), {})[str(name)] = Style(str(name), str(prompt), str(negative))

    def in_guild(self, guild_id: int | None) -> list[Style]:
        """A server's styles, by name (none outside a server)."""
        styles = self._by_guild.get(guild_id, {}) if guild_id is not None else {}
        return [styles[name] for name in sorted(styles, key=str.lower)]

    def pick(self, guild_id: int | None, names: str) -> list[Style]:
        """The styles a member named, comma-separated, in their order; InvalidParams naming one this server lacks."""
        styles = {style.name.lower(): style for style in self.in_guild(guild_id)}
        picked: list[Style] = []
        for name in (part.strip() for part in names.split(",")):
            if not name:
                continue
            if name.lower() not in styles:
                raise InvalidParams(
                    f"This server has no style called `{name[:60]}`: pick one from the list Discord offers."
                )
            if styles[name.lower()] not in picked:
                picked.append(styles[name.lower()])
        if not picked:
            raise InvalidParams("Name one of this server's styles, or leave style out.")
        return picked

    async def put(self, guild_id: int, styles: Sequence[Style]) -> None:
        """Add styles to a server, replacing those of the same names; StyleError past a server's limit."""
        async with self._changing:
            kept = {style.name: style for style in self.in_guild(guild_id)}
            kept.update((style.name, style) for style in styles)
            if len(kept) > MAX_STYLES:
                raise StyleError(f"A server keeps at most {MAX_STYLES} styles: remove some first.")
            # One statement per style (not executemany: the shared connection refuses concurrent ones), one commit.
            for style in styles:
                await self.database.db.execute(
                    "INSERT INTO styles (guild_id, name, prompt, negative_prompt) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (guild_id, name) DO UPDATE SET prompt = excluded.prompt,"
                    " negative_prompt = excluded.negative_prompt",
                    (guild_id, style.name, style.prompt, style.negative_prompt),
                )
            await self.database.db.commit()
            self._by_guild[guild_id] = kept

    async def remove(self, guild_id: int, name: str) -> Style | None:
        """Remove a server's style by name (any case); the style removed, or None."""
        async with self._changing:
            found = next((s for s in self.in_guild(guild_id) if s.name.lower() == name.strip().lower()), None)
            if found is not None:
                await self.database.db.execute(
                    "DELETE FROM styles WHERE guild_id = ? AND name = ?", (guild_id, found.name)
                )
                await self.database.db.commit()
                del self._by_guild[guild_id][found.name]
            return found
