"""Limits against a real SQLite file: the atomic reservation, refunds, overrides and bans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.limits.admin_store import AdminStore
from bot.limits.quota import Quota, Refused
from bot.limits.rules import HOUR, Limits, Scope
from bot.pipeline.database import Database
from bot.pipeline.estimates import DEFAULT_RATE, Estimator, work
from bot.pipeline.store import JobStore
from core.jobs import Job, JobState, new_job_id
from core.params import GenerationParams

NOW = 1_800_000_000.0
GUILD = 77


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def job(user_id: int = 1, count: int = 1, guild_id: int = GUILD) -> Job:
    return Job(new_job_id(), GenerationParams(prompt="fox", count=count), user_id, "m", guild_id, 5, NOW)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    database = Database(tmp_path / "sdbot.sqlite3")
    store = JobStore(database)
    await database.open()
    yield store
    await database.close()


async def reserved(quota: Quota, jobs: list[Job]) -> int:
    """How many of these jobs, reserved all at once, got in (the others were refused)."""
    outcomes = await asyncio.gather(*(quota.reserve(one, []) for one in jobs), return_exceptions=True)
    assert all(isinstance(outcome, Limits | Refused) for outcome in outcomes)
    return sum(isinstance(outcome, Limits) for outcome in outcomes)


def quota_of(store: JobStore, limits: Limits) -> Quota:
    return Quota(store=store, admin=AdminStore(store.database), defaults=limits, clock=Clock())


async def test_fifty_presses_at_once_with_five_left_let_exactly_five_through(store: JobStore) -> None:
    limits = Limits(images_per_hour=5, images_per_day=None, max_queued=None, cooldown_s=0.0)
    assert await reserved(quota_of(store, limits), [job() for _ in range(50)]) == 5
    assert len(await store.in_states(JobState.QUEUED)) == 5


async def test_the_queue_limit_and_the_cooldown_are_atomic_too(store: JobStore) -> None:
    queued = Limits(images_per_hour=None, images_per_day=None, max_queued=2, cooldown_s=0.0)
    assert await reserved(quota_of(store, queued), [job() for _ in range(20)]) == 2
    cooled = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_s=5.0)
    assert await reserved(quota_of(store, cooled), [job(2) for _ in range(20)]) == 1


async def test_failed_and_cancelled_jobs_give_their_images_back(store: JobStore) -> None:
    clock = Clock()
    quota = Quota(store=store, admin=AdminStore(store.database), defaults=Limits(4, None, None, 0.0), clock=clock)
    first, second = job(count=2), job(count=2)
    await quota.reserve(first, [])
    await quota.reserve(second, [])
    with pytest.raises(Refused, match="You have used 4 of your 4 images this hour; this job needs 1"):
        await quota.reserve(job(), [])
    await store.mark_failed(first.id, "The GPU ran out of memory.", NOW)
    await store.mark_cancelled(second.id, "cancelled by 1", NOW)
    await quota.reserve(job(count=4), [])
    assert (await quota.usage(1)).recent == ((NOW, 4),)


async def test_a_refusal_names_the_limit_and_when_to_come_back(store: JobStore) -> None:
    clock = Clock()
    quota = Quota(store=store, admin=AdminStore(store.database), defaults=Limits(2, None, None, 0.0), clock=clock)
    await quota.reserve(job(count=2), [])
    clock.now += 600
    with pytest.raises(Refused) as refused:
        await quota.reserve(job(), [])
    assert str(refused.value) == (
        f"You have used 2 of your 2 images this hour; this job needs 1. You can go again <t:{int(NOW + HOUR)}:R>."
    )
    clock.now = NOW + HOUR + 1
    await quota.reserve(job(), [])


async def test_overrides_and_bans_come_from_sqlite_and_survive_reopening(store: JobStore, tmp_path: Path) -> None:
    admin = AdminStore(store.database)
    await admin.set_override(GUILD, Scope.GUILD, GUILD, "images_per_hour", 3, by_id=9, now=NOW)
    await admin.set_override(GUILD, Scope.ROLE, 500, "images_per_hour", 8, by_id=9, now=NOW)
    await admin.set_override(GUILD, Scope.ROLE, 501, "images_per_hour", 0, by_id=9, now=NOW)
    await admin.set_override(GUILD, Scope.MEMBER, 42, "max_steps", 20, by_id=9, now=NOW)
    await admin.ban(GUILD, 13, "spam", by_id=9, now=NOW)
    await store.database.close()

    reopened_db = Database(tmp_path / "sdbot.sqlite3")

    reopened = JobStore(reopened_db)
    await reopened_db.open()
    admin = AdminStore(reopened_db)
    quota = Quota(store=reopened, admin=admin, defaults=Limits(10, None, None, 0.0), clock=Clock())
    assert (await quota.limits(GUILD, 1, [])).images_per_hour == 3
    assert (await quota.limits(GUILD, 1, [500])).images_per_hour == 8
    assert (await quota.limits(GUILD, 1, [500, 501])).images_per_hour is None
    assert (await quota.limits(GUILD, 42, [])).max_steps == 20
    assert (await quota.limits(GUILD + 1, 1, [500])).images_per_hour == 10, "overrides are per server"
    with pytest.raises(Refused, match=r"banned you \(spam\)"):
        await quota.reserve(job(13), [])
    assert await admin.unban(GUILD, 13, by_id=9, now=NOW)
    await quota.reserve(job(13), [])
    cursor = await reopened.db.execute("SELECT by_id, action FROM admin_log ORDER BY rowid")
    actions = [tuple(row) for row in await cursor.fetchall()]
    assert actions[0] == (9, f"guild {GUILD}: images_per_hour 3") and actions[-1] == (9, "unban 13")
    await admin.set_override(GUILD, Scope.GUILD, GUILD, "images_per_hour", None, by_id=9, now=NOW)
    assert (await quota.limits(GUILD, 1, [])).images_per_hour == 10
    await reopened_db.close()


async def test_the_estimator_learns_this_device_and_keeps_it(store: JobStore, tmp_path: Path) -> None:
    estimator = Estimator(store.database)
    await estimator.load()
    assert estimator.rate == DEFAULT_RATE
    params = GenerationParams(prompt="fox", width=1000, height=1000, steps=10)
    assert work(params) == 10.0
    for _ in range(20):
        await estimator.observe(params, seconds=5.0)
    assert estimator.rate == pytest.approx(0.5, rel=0.01)
    assert estimator.start_at([params, params], [(params, NOW - 2)], NOW) == pytest.approx(NOW + 3 + 10, rel=0.01)
    # Two running together since 2 s ago: 10 s of work left to them in all.
    together = [(params, NOW - 2), (params, NOW - 2)]
    assert estimator.start_at([params], together, NOW) == pytest.approx(NOW + 8 + 5, rel=0.01)
    assert estimator.start_at([], [], NOW) == NOW
    # Two engines share what is left and what waits: half the wait.
    estimator.parallel = 2
    assert estimator.start_at([params], together, NOW) == pytest.approx(NOW + (8 + 5) / 2, rel=0.01)
    again = Estimator(store.database)
    await again.load()
    assert again.rate == estimator.rate
