"""How a batch is retried when the engine dies: blame, cancels and answers that came before, and the
attempts counted in SQLite so that a job that keeps killing the engine (or the bot) is given up across restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bot.pipeline.database import Database
from bot.pipeline.engine_client import EngineCrashed, Outcome, ProgressCallback
from bot.pipeline.retries import CRASH_ATTEMPTS, ENGINE_CRASHED, Retries
from bot.pipeline.store import JobStore
from core.infotext import ModelInfo
from core.jobs import Job
from core.params import GenerationParams
from core.wire import GenerateRequest, JobResult, Progress

FOX = GenerationParams(prompt="fox", width=64, height=64, steps=2)
MODEL = ModelInfo(name="tiny", hash="")


def result(job_id: str) -> JobResult:
    return JobResult(job_id=job_id, images=(), seconds=0.1, model=MODEL)


class ScriptedEngine:
    """Dies as the script says: after some steps of the batch (or none), having answered some jobs first."""

    def __init__(self, script: list[tuple[int, Sequence[str]] | None]) -> None:
        self.script = script  # per call: (steps drawn, jobs answered) before dying, or None to finish
        self.calls: list[list[str]] = []
        self.host = "local"

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        self.calls.append([r.job_id for r in requests])
        plan = self.script.pop(0)
        if plan is None:
            return [result(r.job_id) for r in requests]
        steps, answered = plan
        # As the engine reports it: each step for every job of the loop.
        for step in range(1, steps + 1):
            for request in requests:
                on_progress(Progress(job_id=request.job_id, step=step, total=FOX.steps))
        raise EngineCrashed("the engine process exited with code -9", {j: result(j) for j in answered})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    """A real job log holding the jobs the tests send: a, b and c."""
    database = Database(tmp_path / "sdbot.sqlite3")
    store = JobStore(database)
    await database.open()
    for job_id in "abc":
        await store.add(Job(id=job_id, params=FOX, user_id=1, user_name="fox", guild_id=2, channel_id=3, created_at=0))
    yield store
    await database.close()


def retries_over(script: list[tuple[int, Sequence[str]] | None], store: JobStore) -> tuple[Retries, ScriptedEngine]:
    engine = ScriptedEngine(script)
    return Retries(engine, store), engine  # type: ignore[arg-type]


def never(job_id: str) -> bool:
    return False


def ignore(progress: Progress) -> None:
    pass


def attempts(store: JobStore) -> dict[str, int]:
    with sqlite3.connect(store.database.path) as db:
        return dict(db.execute("SELECT id, attempts FROM jobs"))


REQUESTS = [GenerateRequest("a", FOX), GenerateRequest("b", FOX)]


async def test_a_batch_that_was_only_waiting_in_the_dead_engine_is_not_blamed(store: JobStore) -> None:
    retries, engine = retries_over([(0, ()), (2, ()), None], store)
    outcomes = await retries.draw(REQUESTS, ignore, never)
    assert [o.job_id for o in outcomes if isinstance(o, JobResult)] == ["a", "b"]
    assert len(engine.calls) == 3, "waiting, then denoised before the crash: neither counts against the jobs"
    assert attempts(store) == {"a": 1, "b": 1, "c": 0}, "only the hand-over that was answered counts"


async def test_a_batch_the_engine_died_drawing_twice_is_given_up(store: JobStore) -> None:
    retries, engine = retries_over([(1, ())] * CRASH_ATTEMPTS, store)
    outcomes = await retries.draw(REQUESTS, ignore, never)
    assert [str(outcome) for outcome in outcomes] == [ENGINE_CRASHED] * 2
    assert len(engine.calls) == CRASH_ATTEMPTS


async def test_a_job_that_took_the_engine_down_before_a_restart_is_given_up_after_one_more(store: JobStore) -> None:
    # Before the restart: the bot died with the engine while drawing `a` (its attempt was never given back).
    await store.hand_over(["a"], 1.0)
    retries, engine = retries_over([(1, ()), None], store)
    outcomes = await retries.draw(REQUESTS, ignore, never)
    assert str(outcomes[0]) == ENGINE_CRASHED and isinstance(outcomes[1], JobResult)
    assert engine.calls == [["a", "b"], ["b"]], "a was not sent a third time"


async def test_a_job_whose_attempts_are_spent_is_not_sent_at_all(store: JobStore) -> None:
    for _ in range(CRASH_ATTEMPTS):
        await store.hand_over(["a"], 1.0)
    retries, engine = retries_over([None], store)
    outcomes = await retries.draw(REQUESTS, ignore, never)
    assert str(outcomes[0]) == ENGINE_CRASHED and isinstance(outcomes[1], JobResult)
    assert engine.calls == [["b"]]


async def test_in_a_loop_only_the_jobs_still_drawing_are_blamed(store: JobStore) -> None:
    class SecondLoopDies(ScriptedEngine):
        """`a` was denoised in a loop of its own before `b`'s loop began and died."""

        async def generate_batch(
            self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback
        ) -> list[Outcome]:
            if len(self.calls) == 0:
                self.calls.append([r.job_id for r in requests])
                on_progress(Progress(job_id="a", step=2, total=2))
                on_progress(Progress(job_id="b", step=1, total=2))
                raise EngineCrashed("the engine process exited with code -9")
            return await super().generate_batch(requests, on_progress)

    await Retries(SecondLoopDies([None]), store).draw(REQUESTS, ignore, never)  # type: ignore[arg-type]
    assert attempts(store) == {"a": 1, "b": 2, "c": 0}


async def test_answers_before_the_crash_are_kept_and_a_cancel_during_it_is_not_drawn_again(store: JobStore) -> None:
    retries, engine = retries_over([(1, ("a",)), None], store)
    requests = [*REQUESTS, GenerateRequest("c", FOX)]

    cancelled: set[str] = set()

    def cancel_c_when_drawing(progress: Progress) -> None:
        cancelled.add("c")

    outcomes = await retries.draw(requests, cancel_c_when_drawing, cancelled.__contains__)
    assert engine.calls == [["a", "b", "c"], ["b"]]
    assert [type(o).__name__ for o in outcomes] == ["JobResult", "JobResult", "JobFailedError"]
    assert str(outcomes[2]) == "Cancelled."
