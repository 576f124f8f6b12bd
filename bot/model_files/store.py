"""What each server's admins picked among the owner's model files: the U button's upscaler, and the VAE for models
that name none. Kept in SQLite, mirrored in memory."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from bot.pipeline.database import Database, Schema

# Append, never edit (see bot.pipeline.database).
SCHEMA = Schema(
    "model_files",
    (
        """
        CREATE TABLE server_picks (
            guild_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (guild_id, kind)
        );
        """,
    ),
)


class Pick(str, Enum):
    """What an admin picks a file for; the value is how SQLite and /sdadmin name it."""

    UPSCALER = "upscaler"
    VAE = "vae"


class ServerPicks:
    """Each server's picks, by kind."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._picked: dict[tuple[int, Pick], str] = {}

    async def load(self) -> None:
        """Read every server's picks once the store is open."""
        cursor = await self.database.db.execute("SELECT guild_id, kind, name FROM server_picks")
        self._picked = {(int(guild), Pick(kind)): str(name) for guild, kind, name in await cursor.fetchall()}

    def picked(self, guild_id: int | None, kind: Pick) -> str | None:
        return self._picked.get((guild_id, kind)) if guild_id is not None else None

    def chosen(self, guild_id: int | None, kind: Pick, available: Sequence[str], fallback: str | None) -> str | None:
        """The admins' pick while it is still available, else `fallback`."""
        picked = self.picked(guild_id, kind)
        return picked if picked is not None and picked in available else fallback

    async def set(self, guild_id: int, kind: Pick, name: str | None) -> None:
        """Pick a server's file of `kind`; None goes back to the default."""
        if name is None:
            await self.database.db.execute(
                "DELETE FROM server_picks WHERE guild_id = ? AND kind = ?", (guild_id, kind.value)
            )
            self._picked.pop((guild_id, kind), None)
        else:
            await self.database.db.execute(
                "INSERT INTO server_picks (guild_id, kind, name) VALUES (?, ?, ?)"
                " ON CONFLICT (guild_id, kind) DO UPDATE SET name = excluded.name",
                (guild_id, kind.value, name),
            )
            self._picked[(guild_id, kind)] = name
        await self.database.db.commit()
