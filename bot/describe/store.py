"""The prompts /describe gave, kept so each one's button can run it later (buttons hold only an id)."""

from __future__ import annotations

import json

from bot.pipeline.database import Database, Schema

# Append, never edit (see bot.pipeline.database).
SCHEMA = Schema(
    "describe",
    (
        """
        CREATE TABLE described (
            id TEXT PRIMARY KEY,
            prompts TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        """,
    ),
)


class Described:
    """Each /describe answer's prompts, by id."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def add(self, described_id: str, prompts: list[str], now: float) -> None:
        await self.database.db.execute(
            "INSERT INTO described (id, prompts, created_at) VALUES (?, ?, ?)", (described_id, json.dumps(prompts), now)
        )
        await self.database.db.commit()

    async def prompts(self, described_id: str) -> list[str] | None:
        cursor = await self.database.db.execute("SELECT prompts FROM described WHERE id = ?", (described_id,))
        row = await cursor.fetchone()
        return [str(p) for p in json.loads(row[0])] if row is not None else None
