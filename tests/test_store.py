from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from bot.pipeline.database import LEGACY_VERSIONS, PER_FEATURE, Database, Schema, StoreError
from bot.pipeline.store import Done, JobStore
from bot.schema import SCHEMAS
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
    database = Database(path)
    store = JobStore(database)
    await database.open()
    await store.add(make_job("a", 1.0))
    await store.add(make_job("b", 2.0))
    await store.add(make_job("c", 3.0))
    await store.set_message("a", 555)
    await store.hand_over(["a"], 4.0)
    await store.mark_done([Done("b", 2.5, ModelInfo(name="deliberate_v2", hash="9aba26abdf"))], 5.0)
    await store.mark_failed("c", "The GPU ran out of memory.", 6.0)
    await database.close()

    reopened_db = Database(path)

    reopened = JobStore(reopened_db)
    await reopened_db.open()
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
    await reopened_db.close()


async def test_every_feature_keeps_its_own_schema_version_and_the_file_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "sdbot.sqlite3"
    database = Database(path)
    await database.open()
    assert await database.versions() == {schema.feature: len(schema.steps) for schema in SCHEMAS}
    await database.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == PER_FEATURE


# The steps of the one shared schema sdbot kept before features kept their own, in the order it ran them.
LEGACY_STEPS = (
    [("jobs", 1)],
    [("jobs", 2)],
    [("jobs", 3), ("limits", 1)],
    [("jobs", 4)],
    [("models", 1)],
    [("jobs", 5), ("policy", 1)],
    [("community", 1)],
    [("limits", 2)],
    [("jobs", 6)],
)


def legacy_database(path: Path, version: int) -> None:
    """A file as an sdbot from before the split left it at `version`, with a job in it."""
    steps = {schema.feature: schema.steps for schema in SCHEMAS}
    with sqlite3.connect(path) as raw:
        for legacy in LEGACY_STEPS[:version]:
            for feature, step in legacy:
                raw.executescript(steps[feature][step - 1])
        raw.execute(f"PRAGMA user_version = {version}")
        if version:
            raw.execute(
                "INSERT INTO jobs (id, user_id, user_name, channel_id, params, state, created_at)"
                " VALUES ('ab12', 1, 'fox fan', 20, ?, 'queued', 1.0)",
                (json.dumps(make_job("ab12", 1.0).params.to_dict()),),
            )


@pytest.mark.parametrize("version", sorted(LEGACY_VERSIONS))
async def test_a_database_from_before_the_split_is_carried_over_step_by_step(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite3"
    legacy_database(path, version)
    database = Database(path)
    await database.open()
    assert await database.versions() == {schema.feature: len(schema.steps) for schema in SCHEMAS}
    if version:
        job = await JobStore(database).get("ab12")
        assert job is not None and job.params == make_job("ab12", 1.0).params
    await database.close()
    fresh = tmp_path / "fresh.sqlite3"
    new = Database(fresh)
    await new.open()
    await new.close()
    assert tables(path) == tables(fresh), "the same tables and columns as a database made today"


def tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as raw:
        names = [name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: sorted(raw.execute(f"PRAGMA table_info({name})").fetchall()) for name in names}


async def test_a_feature_added_later_gets_its_tables_and_the_others_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "sdbot.sqlite3"
    first = Database(path)
    await first.open()
    await first.close()
    extra = Schema("extra", ("CREATE TABLE extra (id INTEGER PRIMARY KEY);",))
    later = Database(path, (*SCHEMAS, extra))
    await later.open()
    await later.close()
    grown = Database(path, (*SCHEMAS, Schema("extra", (*extra.steps, "ALTER TABLE extra ADD COLUMN name TEXT;"))))
    await grown.open()
    assert (await grown.versions())["extra"] == 2 and (await grown.versions())["jobs"] == len(SCHEMAS[0].steps)
    await grown.close()
    assert [column[1] for column in tables(path)["extra"]] == ["id", "name"]


@pytest.mark.parametrize(
    ("setup", "named"),
    [
        ("PRAGMA user_version = 9999", "schema version 9999"),
        (
            f"PRAGMA user_version = {PER_FEATURE}; CREATE TABLE schema_versions (feature TEXT PRIMARY KEY,"
            " version INTEGER NOT NULL); INSERT INTO schema_versions VALUES ('jobs', 99);",
            "jobs tables at version 99",
        ),
    ],
)
async def test_a_database_from_a_newer_sdbot_is_refused_by_name(tmp_path: Path, setup: str, named: str) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.executescript(setup)
    database = Database(path)
    with pytest.raises(StoreError, match=f"SDBOT_DB .* has {named}.*, newer than this sdbot knows"):
        await database.open()
    await database.close()


async def test_duplicate_job_ids_are_rejected(tmp_path: Path) -> None:
    database = Database(tmp_path / "s.sqlite3")
    store = JobStore(database)
    await database.open()
    await store.add(make_job("a", 1.0))
    with pytest.raises(sqlite3.IntegrityError):
        await store.add(make_job("a", 2.0))
    await database.close()


async def test_many_batches_at_once_count_and_forgive_their_attempts(tmp_path: Path) -> None:
    # Several engines hand batches over at the same moment: SQLite refused concurrent executemany calls of one
    # statement on the shared connection ("bad parameter or other API misuse"), failing whole batches.
    database = Database(tmp_path / "sdbot.sqlite3")
    store = JobStore(database)
    await database.open()
    try:
        ids = [f"job{number:04}" for number in range(1000)]
        for job_id in ids:
            await store.add(make_job(job_id, 1.0))
        batches = [ids[start : start + 4] for start in range(0, len(ids), 4)]
        counted = await asyncio.gather(*(store.hand_over(batch, 2.0) for batch in batches))
        assert all(attempts == dict.fromkeys(batch, 1) for attempts, batch in zip(counted, batches, strict=True))
        await asyncio.gather(*(store.forgive_attempt(batch) for batch in batches))
        again = await store.hand_over(ids, 3.0, "worker-1")
        assert again == dict.fromkeys(ids, 1)
        assert await store.handed_to(ids[0]) == "worker-1"
        assert {job.state for job in await store.in_states(JobState.RUNNING)} == {JobState.RUNNING}
        assert len(await store.in_states(JobState.RUNNING)) == len(ids)
    finally:
        await database.close()
