from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.pipeline.store import MIGRATIONS, JobStore, StoreError
from core.infotext import ModelInfo
from core.jobs import Job, JobState
from core.params import GenerationParams


def make_job(job_id: str, created_at: float, user_id: int = 1) -> Job:
    return Job(
        id=job_id,
        params=GenerationParams(prompt="a red fox", seed=7, count=2),
        user_id=user_id,
        user_name="fox fan",
        guild_id=10,
        channel_id=20,
        created_at=created_at,
    )


async def test_jobs_and_their_states_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sdbot.sqlite3"
    store = JobStore(path)
    await store.open()
    await store.add(make_job("a", 1.0))
    await store.add(make_job("b", 2.0))
    await store.add(make_job("c", 3.0))
    await store.set_message("a", 555)
    await store.mark_running("a", 4.0)
    await store.mark_done("b", 5.0, seconds=2.5, model=ModelInfo(name="deliberate_v2", hash="9aba26abdf"))
    await store.mark_failed("c", "The GPU ran out of memory.", 6.0)
    await store.close()

    reopened = JobStore(path)
    await reopened.open()
    job = await reopened.get("a")
    assert job is not None
    assert (job.state, job.message_id, job.params) == (JobState.RUNNING, 555, make_job("a", 1.0).params)
    failed = await reopened.get("c")
    assert failed is not None and failed.error == "The GPU ran out of memory."
    assert [j.id for j in await reopened.in_states(JobState.QUEUED, JobState.RUNNING, JobState.DONE)] == ["a", "b"]
    assert await reopened.done_details("b") == (2.5, ModelInfo(name="deliberate_v2", hash="9aba26abdf"))
    assert await reopened.done_details("a") is None
    await reopened.mark_delivered("b", 777)
    assert (await reopened.get("b")).state is JobState.DELIVERED  # type: ignore[union-attr]
    assert await reopened.get("missing") is None
    await reopened.close()


async def test_schema_is_versioned_and_the_file_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "sdbot.sqlite3"
    store = JobStore(path)
    await store.open()
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_a_database_from_a_newer_sdbot_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    store = JobStore(path)
    with pytest.raises(StoreError, match="SDBOT_DB .* newer than this sdbot knows"):
        await store.open()
    await store.close()


async def test_duplicate_job_ids_are_rejected(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "s.sqlite3")
    await store.open()
    await store.add(make_job("a", 1.0))
    with pytest.raises(sqlite3.IntegrityError):
        await store.add(make_job("a", 2.0))
    await store.close()
