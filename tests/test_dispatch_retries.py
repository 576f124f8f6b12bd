"""How the dispatcher retries a batch when the engine dies: blame, cancels and answers that came before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from bot.dispatch import CRASH_ATTEMPTS, ENGINE_CRASHED, Dispatcher
from bot.engine_client import EngineCrashed, JobFailedError, Outcome, ProgressCallback
from engine.infotext import ModelInfo
from engine.params import GenerationParams
from engine.wire import GenerateRequest, JobResult, Progress

FOX = GenerationParams(prompt="fox", width=64, height=64, steps=2)
MODEL = ModelInfo(name="tiny", hash="")


def result(job_id: str) -> JobResult:
    return JobResult(job_id=job_id, images=(), seconds=0.1, model=MODEL)


class ScriptedEngine:
    """Dies as the script says: after some steps of the batch (or none), having answered some jobs first."""

    def __init__(self, script: list[tuple[int, Sequence[str]] | None], dispatcher: list[Dispatcher]) -> None:
        self.script = script  # per call: (steps drawn, jobs answered) before dying, or None to finish
        self.calls: list[list[str]] = []
        self.dispatcher = dispatcher

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        self.calls.append([r.job_id for r in requests])
        plan = self.script.pop(0)
        if plan is None:
            return [result(r.job_id) for r in requests]
        steps, answered = plan
        for step in range(1, steps + 1):
            on_progress(Progress(job_id=requests[0].job_id, step=step, total=FOX.steps))
        raise EngineCrashed("the engine process exited with code -9", {j: result(j) for j in answered})


def dispatcher_over(script: list[tuple[int, Sequence[str]] | None]) -> tuple[Dispatcher, ScriptedEngine]:
    holder: list[Dispatcher] = []
    engine = ScriptedEngine(script, holder)
    none: Any = None
    dispatcher = Dispatcher(
        queue=none,
        engine=engine,
        store=none,
        delivery=none,
        sources=none,
        estimator=none,  # type: ignore[arg-type]
    )
    holder.append(dispatcher)
    return dispatcher, engine


REQUESTS = [GenerateRequest("a", FOX), GenerateRequest("b", FOX)]


async def test_a_batch_that_was_only_waiting_in_the_dead_engine_is_not_blamed() -> None:
    dispatcher, engine = dispatcher_over([(0, ()), (2, ()), None])
    outcomes = await dispatcher._generate(REQUESTS, lambda progress: None)
    assert [o.job_id for o in outcomes if isinstance(o, JobResult)] == ["a", "b"]
    assert len(engine.calls) == 3, "waiting, then denoised before the crash: neither counts against the jobs"


async def test_a_batch_the_engine_died_drawing_twice_is_given_up() -> None:
    dispatcher, engine = dispatcher_over([(1, ())] * CRASH_ATTEMPTS)
    with pytest.raises(JobFailedError, match=ENGINE_CRASHED):
        await dispatcher._generate(REQUESTS, lambda progress: None)
    assert len(engine.calls) == CRASH_ATTEMPTS


async def test_answers_before_the_crash_are_kept_and_a_cancel_during_it_is_not_drawn_again() -> None:
    dispatcher, engine = dispatcher_over([(1, ("a",)), None])
    requests = [*REQUESTS, GenerateRequest("c", FOX)]

    def cancel_c_when_drawing(progress: Progress) -> None:
        dispatcher._cancelled_by["c"] = 42

    outcomes = await dispatcher._generate(requests, cancel_c_when_drawing)
    assert engine.calls == [["a", "b", "c"], ["b"]]
    assert [type(o).__name__ for o in outcomes] == ["JobResult", "JobResult", "JobFailedError"]
    assert str(outcomes[2]) == "Cancelled."
