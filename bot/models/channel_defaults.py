"""Each channel's default model, set by admins; kept in SQLite and mirrored in memory for synchronous checks."""

from __future__ import annotations

from bot.pipeline.database import Database, Schema

# Append, never edit (see bot.pipeline.database).
SCHEMA = Schema(
    "models",
    (
        """
        CREATE TABLE channel_models (
            channel_id INTEGER PRIMARY KEY,
            guild_id INTEGER NOT NULL,
            model TEXT NOT NULL
        );
        """,
    ),
)


class ChannelModels:
    """The model /imagine uses in a channel when the member names none (absent: the bot's default)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._by_channel: dict[int, tuple[int, str]] = {}  # channel → (guild, model)

    async def load(self) -> None:
        """Read every channel's default once the store is open."""
        cursor = await self.database.db.execute("SELECT channel_id, guild_id, model FROM channel_models")
        self._by_channel = {int(c): (int(g), str(m)) for c, g, m in await cursor.fetchall()}

    def get(self, channel_id: int | None) -> str | None:
        found = self._by_channel.get(channel_id) if channel_id is not None else None
        return found[1] if found else None

    def in_guild(self, guild_id: int) -> dict[int, str]:
        """Every channel default of a guild, for /sdadmin models list."""
        return {c: m for c, (g, m) in self._by_channel.items() if g == guild_id}

    async def set(self, guild_id: int, channel_id: int, model: str | None) -> None:
        """Set a channel's default model; None goes back to the bot's default."""
        if model is None:
            await self.database.db.execute("DELETE FROM channel_models WHERE channel_id = ?", (channel_id,))
            self._by_channel.pop(channel_id, None)
        else:
            await self.database.db.execute(
                "INSERT INTO channel_models (channel_id, guild_id, model) VALUES (?, ?, ?)"
                " ON CONFLICT (channel_id) DO UPDATE SET guild_id = excluded.guild_id, model = excluded.model",
                (channel_id, guild_id, model),
            )
            self._by_channel[channel_id] = (guild_id, model)
        await self.database.db.commit()
