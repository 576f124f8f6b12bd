"""The crash-safe job log: every job, its state to the end, and what the limits count."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bot.limits.rules import DAY, Usage, job_cost
from bot.pipeline.database import Database, Schema
from core.infotext import ModelInfo
from core.jobs import Flagged, Job, JobState
from core.params import GenerationParams

# The jobs table, and the learned rates the start estimates use. Append, never edit (see bot.pipeline.database).
SCHEMA = Schema(
    "jobs",
    (
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
        """
        ALTER TABLE jobs ADD COLUMN cost INTEGER NOT NULL DEFAULT 1;
        CREATE INDEX jobs_by_user ON jobs (user_id, created_at);
        CREATE TABLE stats (
            key TEXT PRIMARY KEY,
            value REAL NOT NULL
        );
        """,
        """
        ALTER TABLE jobs ADD COLUMN size_limit INTEGER;
        ALTER TABLE jobs ADD COLUMN seconds REAL;
        ALTER TABLE jobs ADD COLUMN model_name TEXT;
        ALTER TABLE jobs ADD COLUMN model_hash TEXT;
        """,
        """
        ALTER TABLE jobs ADD COLUMN on_flagged TEXT NOT NULL DEFAULT 'post';
        ALTER TABLE jobs ADD COLUMN flagged TEXT;
        """,
        """
        ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN charged INTEGER NOT NULL DEFAULT 0;
        """,
        """
        ALTER TABLE jobs ADD COLUMN engine TEXT;
        """,
        """
        ALTER TABLE jobs ADD COLUMN quiet INTEGER NOT NULL DEFAULT 0;
        """,
        """
        ALTER TABLE jobs ADD COLUMN turns INTEGER NOT NULL DEFAULT 1;
        """,
    ),
)


# Jobs that count against a member's limits: all but those that produced nothing through no doing of theirs
# (a job cancelled while drawing is charged: the GPU time was spent).
def _states(*states: JobState) -> str:
    """The states as an SQL list; the names come from JobState, never from input."""
    return ", ".join(f"'{state.value}'" for state in states)


_COUNTED = f"(state NOT IN ({_states(JobState.FAILED, JobState.CANCELLED)}) OR charged = 1)"
_ACTIVE = f"state IN ({_states(JobState.QUEUED, JobState.RUNNING)})"


@dataclass(frozen=True)
class Done:
    """A drawn job as the log keeps it: the engine's seconds, the model, and the images the checker flagged (by
    number, from 1)."""

    job_id: str
    seconds: float
    model: ModelInfo
    flagged: tuple[int, ...] = ()


class JobStore:
    """Every job is written here before its member is acknowledged; its state follows it to the end."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def db(self) -> aiosqlite.Connection:
        return self.database.db

    _INSERT = (
        "INSERT INTO jobs (id, user_id, user_name, guild_id, channel_id, message_id, params, state, created_at,"
        " parent_id, source_index, reply_to, cost, size_limit, on_flagged, quiet, turns)"
    )
    _COLUMNS = 17

    @staticmethod
    def _row(job: Job) -> tuple[Any, ...]:
        return (
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
            job_cost(job.params),
            job.size_limit,
            job.on_flagged.value,
            int(job.quiet),
            job.turns,
        )

    async def add(self, job: Job) -> None:
        """Record a new queued job (the limits are Quota's to check)."""
        await self.db.execute(f"{self._INSERT} VALUES ({', '.join('?' * self._COLUMNS)})", self._row(job))
        await self.db.commit()

    async def usage(self, user_id: int, now: float) -> Usage:
        """What a member has used, for the limits' verdict and for /quota."""
        cursor = await self.db.execute(
            f"SELECT created_at, cost FROM jobs WHERE user_id = ? AND created_at > ? AND {_COUNTED}",
            (user_id, now - DAY),
        )
        recent = tuple((float(at), int(cost)) for at, cost in await cursor.fetchall())
        cursor = await self.db.execute(f"SELECT COUNT(*) FROM jobs WHERE user_id = ? AND {_ACTIVE}", (user_id,))
        (active,) = await cursor.fetchone()  # type: ignore[misc]
        cursor = await self.db.execute("SELECT MAX(created_at) FROM jobs WHERE user_id = ?", (user_id,))
        (last,) = await cursor.fetchone()  # type: ignore[misc]
        return Usage(recent=recent, active=int(active), last_command_at=last)

    async def _update(self, job_id: str, **columns: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        await self.db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job_id))
        await self.db.commit()

    async def set_message(self, job_id: str, message_id: int) -> None:
        """Remember the message that shows the job's progress."""
        await self._update(job_id, message_id=message_id)

    async def requeue(self, job_ids: Sequence[str]) -> None:
        """Jobs back in the queue: their engine was lost before it drew them."""
        await self.db.execute(
            f"UPDATE jobs SET state = ? WHERE id IN ({_marks(job_ids)})", (JobState.QUEUED.value, *job_ids)
        )
        await self.db.commit()

    async def handed_to(self, job_id: str) -> str | None:
        """The engine a job was last handed to ("local", or a worker's name); None if it never was."""
        cursor = await self.db.execute("SELECT engine FROM jobs WHERE id = ?", (job_id,))
        row = await cursor.fetchone()
        return None if row is None or row["engine"] is None else str(row["engine"])

    async def mark_done(self, done: Sequence[Done], now: float) -> None:
        """Jobs drawn together whose images are on disk: what delivery needs besides them is kept here, to deliver
        after a crash; one transaction for the batch."""
        for job in done:
            await self.db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, seconds = ?, model_name = ?, model_hash = ?, flagged = ?"
                " WHERE id = ?",
                (
                    JobState.DONE.value,
                    now,
                    job.seconds,
                    job.model.name,
                    job.model.hash,
                    json.dumps(list(job.flagged)),
                    job.job_id,
                ),
            )
        await self.db.commit()

    async def done_details(self, job_id: str) -> tuple[float, ModelInfo] | None:
        """The engine seconds and model of a finished job."""
        cursor = await self.db.execute("SELECT seconds, model_name, model_hash FROM jobs WHERE id = ?", (job_id,))
        row = await cursor.fetchone()
        if row is None or row["seconds"] is None:
            return None
        return float(row["seconds"]), ModelInfo(name=row["model_name"], hash=row["model_hash"])

    async def mark_delivered(self, job_id: str, result_message_id: int) -> None:
        await self._update(job_id, state=JobState.DELIVERED.value, result_message_id=result_message_id)

    async def mark_failed(self, job_id: str, reason: str, now: float) -> None:
        await self._update(job_id, state=JobState.FAILED.value, error=reason, finished_at=now)

    async def mark_cancelled(self, job_id: str, reason: str, now: float, *, charged: bool = False) -> None:
        """A job stopped by its member or an admin; `charged` when the engine had begun drawing it."""
        await self._update(job_id, state=JobState.CANCELLED.value, error=reason, finished_at=now, charged=int(charged))

    async def hand_over(self, job_ids: Sequence[str], now: float, engine: str = "local") -> dict[str, int]:
        """Jobs handed to an engine together (`engine`: "local", or the worker's name): running from `now`, one
        more attempt each; return each one's attempts, this one included. One transaction for the batch, so the next
        batch's hand-over waits behind as little as possible."""
        await self.db.execute(
            f"UPDATE jobs SET state = ?, started_at = ?, engine = ?, attempts = attempts + 1"
            f" WHERE id IN ({_marks(job_ids)})",
            (JobState.RUNNING.value, now, engine, *job_ids),
        )
        rows = await self.db.execute_fetchall(
            f"SELECT id, attempts FROM jobs WHERE id IN ({_marks(job_ids)})", list(job_ids)
        )
        await self.db.commit()
        return {str(job_id): int(attempts) for job_id, attempts in rows}

    async def forgive_attempt(self, job_ids: Sequence[str]) -> None:
        """Take back an attempt that ended through no fault of the job (another batch crashed the engine, or the
        bot stopped while it waited)."""
        await self.db.execute(
            f"UPDATE jobs SET attempts = attempts - 1 WHERE id IN ({_marks(job_ids)}) AND attempts > 0", job_ids
        )
        await self.db.commit()

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

    async def history(
        self, user_id: int, *, older_than: str | None = None, newer_than: str | None = None, limit: int
    ) -> list[Job]:
        """A member's delivered jobs, newest first: the `limit` just older (or just newer) than a cursor job."""
        cursor_job = older_than or newer_than
        where = f"user_id = ? AND state = {_states(JobState.DELIVERED)} AND result_message_id IS NOT NULL"
        args: list[Any] = [user_id]
        if cursor_job is not None:
            op = "<" if older_than is not None else ">"
            where += f" AND rowid {op} (SELECT rowid FROM jobs WHERE id = ?)"
            args.append(cursor_job)
        order = "DESC" if newer_than is None else "ASC"
        cursor = await self.db.execute(
            f"SELECT * FROM jobs WHERE {where} ORDER BY rowid {order} LIMIT ?", (*args, limit)
        )
        jobs = [_job(row) for row in await cursor.fetchall()]
        return jobs if newer_than is None else jobs[::-1]


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
        size_limit=row["size_limit"],
        on_flagged=Flagged(row["on_flagged"]),
        flagged=tuple(json.loads(row["flagged"])) if row["flagged"] else (),
        quiet=bool(row["quiet"]),
        turns=row["turns"],
    )


def _marks(values: Sequence[object]) -> str:
    """Placeholders for `IN (...)`. One statement per batch, never executemany: two executemany calls of one
    statement from concurrent batches on the shared connection make SQLite refuse the second (API misuse)."""
    return ", ".join("?" for _ in values)
