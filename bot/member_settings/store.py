"""Members' own defaults, kept in SQLite and mirrored in memory so /imagine and every button read them without a
query."""

from __future__ import annotations

import asyncio

from bot.pipeline.database import Database, Schema
from core.member_settings import MemberSettings, Setting

# Append, never edit (see bot.pipeline.database).
SCHEMA = Schema(
    "member_settings",
    (
        """
        CREATE TABLE member_settings (
            user_id INTEGER NOT NULL,
            scope INTEGER NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (user_id, scope, name)
        );
        """,
    ),
)

EVERYWHERE = 0  # the scope of settings that follow a member into every server


def _scope(setting: Setting, guild_id: int | None) -> int:
    return guild_id if setting.per_server and guild_id is not None else EVERYWHERE


class MemberSettingsStore:
    """Each member's settings: those that follow them everywhere, and per server the model and styles."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._rows: dict[tuple[int, int], dict[str, str]] = {}  # (member, scope) → name → value
        # Changes one at a time: each reads the mirror, awaits SQLite, then writes the mirror back.
        self._changing = asyncio.Lock()

    async def load(self) -> None:
        """Read every member's settings once the store is open."""
        cursor = await self.database.db.execute("SELECT user_id, scope, name, value FROM member_settings")
        self._rows = {}
        for user_id, scope, name, value in await cursor.fetchall():
            self._rows.setdefault((int(user_id), int(scope)), {})[str(name)] = str(value)

    def get(self, user_id: int, guild_id: int | None) -> MemberSettings:
        """What applies to the member in this server (or a DM)."""
        everywhere = self._rows.get((user_id, EVERYWHERE), {})
        here = self._rows.get((user_id, guild_id), {}) if guild_id is not None else {}
        rows = {name: value for name, value in everywhere.items() if not Setting(name).per_server or guild_id is None}
        rows.update((name, value) for name, value in here.items() if Setting(name).per_server)
        return MemberSettings.from_rows(rows)

    async def save(self, user_id: int, guild_id: int | None, settings: MemberSettings) -> None:
        """Keep exactly these settings for the member in this server (a DM keeps everything everywhere)."""
        wanted: dict[int, dict[str, str]] = {}
        for setting, text in settings.rows().items():
            wanted.setdefault(_scope(setting, guild_id), {})[setting.value] = text
        async with self._changing:
            for setting in Setting:
                scope = _scope(setting, guild_id)
                kept = wanted.get(scope, {}).get(setting.value)
                if kept is None:
                    await self.database.db.execute(
                        "DELETE FROM member_settings WHERE user_id = ? AND scope = ? AND name = ?",
                        (user_id, scope, setting.value),
                    )
                    self._rows.get((user_id, scope), {}).pop(setting.value, None)
                else:
                    await self.database.db.execute(
                        "INSERT INTO member_settings (user_id, scope, name, value) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (user_id, scope, name) DO UPDATE SET value = excluded.value",
                        (user_id, scope, setting.value, kept),
                    )
                    self._rows.setdefault((user_id, scope), {})[setting.value] = kept
            await self.database.db.commit()
