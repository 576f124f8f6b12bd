"""The crash-safe job log: one aiosqlite connection in WAL mode, schema versioned by PRAGMA user_version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiosqlite

from bot.jobs import Job, JobState
from engine.params import GenerationParams

# Each entry migrates the schema from version i to i + 1; append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        user_name TEXT NOT NULL,
        guild_id INTEGER,
        channel_id INTEGER NOT NULL,
        message_id INTEGER,
        params TEXT NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        result_message_id INTEGER
    );
    CREATE INDEX jobs_by_state ON jobs (state, created_at);
    """,
    """
    ALTER TABLE jobs ADD COLUMN parent_id TEXT REFERENCES jobs (id);
    ALTER TABLE jobs ADD COLUMN source_index INTEGER;
    ALTER TABLE jobs ADD COLUMN reply_to INTEGER;
    """,
)


class StoreError(RuntimeError):
    """The database is unusable (e.g. written by a newer sdbot)."""


class JobStore:
    """Every job is written here before its member is acknowledged; its state follows it to the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the job store is not open")
        return self._db

    async def open(self) -> None:
        """Open the file, switch to WAL and bring the schema up to date."""
        self._db = await aiosqlite.connect(self.path)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self) -> None:
        (version,) = await (await self.db.execute("PRAGMA user_version")).fetchone()  # type: ignore[misc]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"SDBOT_DB {self.path} has schema version {version}, newer than this sdbot knows"
                f" ({len(MIGRATIONS)}): upgrade sdbot or point SDBOT_DB at another file"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self.db.executescript(f"BEGIN; {script}; PRAGMA user_version = {target}; COMMIT;")

    async def schema_version(self) -> int:
        (version,) = await (await self.db.execute("PRAGMA user_version")).fetchone()  # type: ignore[misc]
        return int(version)

    async def add(self, job: Job) -> None:
        """Record a new queued job."""
        await self.db.execute(
            "INSERT INTO jobs (id, user_id, user_name, guild_id, channel_id, message_id, params, state, created_at,"
            " parent_id, source_index, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.user_id,
                job.user_name,
                job.guild_id,
                job.channel_id,
                job.message_id,
                json.dumps(job.params.to_dict()),
                job.state.value,
                job.created_at,
                job.parent_id,
                job.source_index,
                job.reply_to,
            ),
        )
        await self.db.commit()

    async def _update(self, job_id: str, **columns: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        await self.db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job_id))
        await self.db.commit()

    async def set_message(self, job_id: str, message_id: int) -> None:
        """Remember the message that shows the job's progress."""
        await self._update(job_id, message_id=message_id)

    async def mark_running(self, job_id: str, now: float) -> None:
        await self._update(job_id, state=JobState.RUNNING.value, started_at=now)

    async def mark_done(self, job_id: str, now: float) -> None:
        await self._update(job_id, state=JobState.DONE.value, finished_at=now)

    async def mark_delivered(self, job_id: str, result_message_id: int) -> None:
        await self._update(job_id, state=JobState.DELIVERED.value, result_message_id=result_message_id)

    async def mark_failed(self, job_id: str, reason: str, now: float) -> None:
        await self._update(job_id, state=JobState.FAILED.value, error=reason, finished_at=now)

    async def get(self, job_id: str) -> Job | None:
        cursor = await self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,))
        row = await cursor.fetchone()
        return _job(row) if row is not None else None

    async def in_states(self, *states: JobState) -> list[Job]:
        """Jobs in any of `states`, oldest first."""
        marks = ", ".join("?" for _ in states)
        cursor = await self.db.execute(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at, rowid", [s.value for s in states]
        )
        return [_job(row) for row in await cursor.fetchall()]


def _job(row: aiosqlite.Row) -> Job:
    return Job(
        id=row["id"],
        params=GenerationParams.from_dict(json.loads(row["params"])),
        user_id=row["user_id"],
        user_name=row["user_name"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        created_at=row["created_at"],
        message_id=row["message_id"],
        state=JobState(row["state"]),
        error=row["error"],
        result_message_id=row["result_message_id"],
        parent_id=row["parent_id"],
        source_index=row["source_index"],
        reply_to=row["reply_to"],
    )
