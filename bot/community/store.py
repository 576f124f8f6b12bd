"""What the community features keep in SQLite: each guild's art channel and digest, shares, and drafts."""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiosqlite

from bot.pipeline.database import Database, Schema
from core.jobs import new_job_id
from core.params import GenerationParams

# A claim whose post never got its message id (the bot died while posting) may be taken over after this long.
STALE_CLAIM_S = 300.0
# Settings read from an image wait this long for their "Run these settings" press.
DRAFT_KEEP_S = 86400.0
# Append, never edit (see bot.pipeline.database).
SCHEMA = Schema(
    "community",
    (
        """
        CREATE TABLE guild_settings (
            guild_id INTEGER PRIMARY KEY,
            art_channel_id INTEGER,
            digest INTEGER NOT NULL DEFAULT 0,
            digest_at REAL
        );
        CREATE TABLE shares (
            job_id TEXT NOT NULL REFERENCES jobs (id),
            image_index INTEGER NOT NULL,
            guild_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            message_id INTEGER,
            shared_by INTEGER NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (job_id, image_index)
        );
        CREATE INDEX shares_by_guild ON shares (guild_id, at);
        CREATE TABLE drafts (
            id TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL,
            params TEXT NOT NULL,
            at REAL NOT NULL
        );
        """,
    ),
)


@dataclass(frozen=True)
class GuildSettings:
    """A guild's art channel (None: not set) and whether it gets the weekly digest, last posted when."""

    guild_id: int
    art_channel_id: int | None = None
    digest: bool = False
    digest_at: float | None = None


@dataclass(frozen=True)
class Share:
    """Image `image_index` of job `job_id`, posted to the art channel (message_id None while being posted)."""

    job_id: str
    image_index: int
    guild_id: int
    channel_id: int
    message_id: int | None
    shared_by: int
    at: float


class CommunityStore:
    """Reads and writes the community tables."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def db(self) -> aiosqlite.Connection:
        return self.database.db

    async def settings(self, guild_id: int) -> GuildSettings:
        cursor = await self.db.execute(
            "SELECT art_channel_id, digest, digest_at FROM guild_settings WHERE guild_id = ?", (guild_id,)
        )
        row = await cursor.fetchone()
        if row is None:
            return GuildSettings(guild_id)
        return GuildSettings(guild_id, row[0], bool(row[1]), row[2])

    async def set_art_channel(self, guild_id: int, channel_id: int) -> None:
        await self.db.execute(
            "INSERT INTO guild_settings (guild_id, art_channel_id) VALUES (?, ?)"
            " ON CONFLICT (guild_id) DO UPDATE SET art_channel_id = excluded.art_channel_id",
            (guild_id, channel_id),
        )
        await self.db.commit()

    async def set_digest(self, guild_id: int, on: bool, now: float) -> None:
        """Turn the digest on (the first one comes a week from `now`) or off."""
        await self.db.execute(
            "INSERT INTO guild_settings (guild_id, digest, digest_at) VALUES (?, ?, ?)"
            " ON CONFLICT (guild_id) DO UPDATE SET digest = excluded.digest, digest_at = excluded.digest_at",
            (guild_id, int(on), now),
        )
        await self.db.commit()

    async def digest_guilds(self) -> list[GuildSettings]:
        """Guilds with the digest on and an art channel to post it in."""
        cursor = await self.db.execute(
            "SELECT guild_id, art_channel_id, digest, digest_at FROM guild_settings"
            " WHERE digest = 1 AND art_channel_id IS NOT NULL"
        )
        return [GuildSettings(row[0], row[1], True, row[3]) for row in await cursor.fetchall()]

    async def digest_posted(self, guild_id: int, now: float) -> None:
        await self.db.execute("UPDATE guild_settings SET digest_at = ? WHERE guild_id = ?", (now, guild_id))
        await self.db.commit()

    async def claim_share(
        self, job_id: str, index: int, guild_id: int, channel_id: int, by_id: int, now: float
    ) -> Share | None:
        """Claim the right to post this image, as one statement; None when claimed, else the existing share.

        A claim left without a message (the bot died mid-post) is taken over once it is STALE_CLAIM_S old.
        """
        cursor = await self.db.execute(
            "INSERT INTO shares (job_id, image_index, guild_id, channel_id, shared_by, at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (job_id, image_index) DO UPDATE SET guild_id = excluded.guild_id,"
            " channel_id = excluded.channel_id, shared_by = excluded.shared_by, at = excluded.at"
            " WHERE shares.message_id IS NULL AND shares.at < ?",
            (job_id, index, guild_id, channel_id, by_id, now, now - STALE_CLAIM_S),
        )
        await self.db.commit()
        if cursor.rowcount == 1:
            return None
        existing = await self.share(job_id, index)
        assert existing is not None
        return existing

    async def share(self, job_id: str, index: int) -> Share | None:
        cursor = await self.db.execute(
            "SELECT job_id, image_index, guild_id, channel_id, message_id, shared_by, at FROM shares"
            " WHERE job_id = ? AND image_index = ?",
            (job_id, index),
        )
        row = await cursor.fetchone()
        return Share(*row) if row is not None else None

    async def share_posted(self, job_id: str, index: int, message_id: int) -> None:
        await self.db.execute(
            "UPDATE shares SET message_id = ? WHERE job_id = ? AND image_index = ?", (message_id, job_id, index)
        )
        await self.db.commit()

    async def release_share(self, job_id: str, index: int) -> None:
        """Drop a claim whose post failed, so the member can try again."""
        await self.db.execute(
            "DELETE FROM shares WHERE job_id = ? AND image_index = ? AND message_id IS NULL", (job_id, index)
        )
        await self.db.commit()

    async def shares_since(self, guild_id: int, since: float) -> list[Share]:
        """A guild's posted shares from `since` on, oldest first."""
        cursor = await self.db.execute(
            "SELECT job_id, image_index, guild_id, channel_id, message_id, shared_by, at FROM shares"
            " WHERE guild_id = ? AND at >= ? AND message_id IS NOT NULL ORDER BY at",
            (guild_id, since),
        )
        return [Share(*row) for row in await cursor.fetchall()]

    async def add_draft(self, user_id: int, params: GenerationParams, now: float) -> str:
        """Keep settings read from an image for its "Run these settings" button; returns the draft's id."""
        draft_id = new_job_id()
        await self.db.execute(
            "INSERT INTO drafts (id, user_id, params, at) VALUES (?, ?, ?, ?)",
            (draft_id, user_id, json.dumps(params.to_dict()), now),
        )
        await self.db.commit()
        return draft_id

    async def prune_drafts(self, now: float) -> int:
        """Forget drafts older than DRAFT_KEEP_S (their buttons then answer that the settings are gone)."""
        cursor = await self.db.execute("DELETE FROM drafts WHERE at < ?", (now - DRAFT_KEEP_S,))
        await self.db.commit()
        return cursor.rowcount

    async def draft(self, draft_id: str) -> GenerationParams | None:
        cursor = await self.db.execute("SELECT params FROM drafts WHERE id = ?", (draft_id,))
        row = await cursor.fetchone()
        return GenerationParams.from_dict(json.loads(row[0])) if row is not None else None
