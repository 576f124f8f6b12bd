"""The crash-retry policy: a batch the engine dies drawing is drawn once more on a fresh engine, then given up; a batch
whose engine is lost for good (a worker that stopped answering) goes back to the queue for another engine.

Each hand-over of a job to an engine is counted in SQLite, so a job that takes the engine (or the whole bot) down with
it is given up across restarts too. A job that was only waiting in the engine, or already denoised, is not to blame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.pipeline.engine_client import (
    Engine,
    EngineCrashed,
    EngineGarbled,
    EngineLost,
    EngineStartError,
    JobFailedError,
    Outcome,
    ProgressCallback,
)
from bot.pipeline.store import JobStore
from core.wire import GenerateRequest, Progress

log = logging.getLogger(__name__)

ENGINE_CRASHED = (
    "The image engine stopped twice while drawing this, so I gave up on it: try other settings, and tell the"
    " owner if it happens again."
)
ENGINE_DOWN = "The image engine cannot start at the moment; the owner can see why in the bot's log."
ENGINE_GARBLED = (
    "The image engine answered with something I could not read while drawing this, so I restarted it: try again,"
    " and tell the owner if it happens again (it is in the bot's log)."
)
CANCELLED = "Cancelled."
# A job that kills the engine is tried on a fresh one once more, then failed, so it cannot stall the queue.
CRASH_ATTEMPTS = 2


@dataclass(frozen=True)
class Reroute:
    """A job's outcome when its engine was lost before answering: draw it on another engine."""

    reason: str


class Retries:
    """Draws batches on the engine, each job's attempts counted in the job log."""

    def __init__(self, engine: Engine, store: JobStore, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.store = store
        self.clock = clock

    async def draw(
        self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback, cancelled: Callable[[str], bool]
    ) -> list[Outcome | Reroute]:
        """Each job's result, the sentence it failed with, or Reroute, in the order asked; a job `cancelled` while
        the engine was down is not sent to the next one."""
        outcomes: dict[str, Outcome | Reroute] = {}
        tries = 0
        while True:
            for request in requests:
                if cancelled(request.job_id):
                    outcomes.setdefault(request.job_id, JobFailedError(CANCELLED))
            pending = await self._hand_over([request for request in requests if request.job_id not in outcomes])
            outcomes.update(pending.given_up)
            if not pending.sent:
                return [outcomes[request.job_id] for request in requests]
            last: dict[str, Progress] = {}

            def progress(update: Progress, last: dict[str, Progress] = last) -> None:
                last[update.job_id] = update
                on_progress(update)

            sent = pending.sent
            try:
                results = await self.engine.generate_batch(sent, progress)
                outcomes.update((request.job_id, result) for request, result in zip(sent, results, strict=True))
            except EngineGarbled as exc:
                outcomes.update(exc.finished)
                log.error("jobs %s: %s", ", ".join(request.job_id for request in sent), exc)
                outcomes.update((request.job_id, JobFailedError(ENGINE_GARBLED)) for request in sent)
            except EngineCrashed as exc:
                outcomes.update(exc.finished)
                unanswered = [request.job_id for request in sent if request.job_id not in outcomes]
                drawing = _drawing(unanswered, last, exc)
                await self.store.forgive_attempt([job_id for job_id in unanswered if job_id not in drawing])
                log.error("jobs %s: %s (drawing %s)", ", ".join(unanswered), exc, ", ".join(drawing) or "none of them")
                if isinstance(exc, EngineLost):
                    # Gone for good: another engine draws them (those it was drawing keep this attempt).
                    outcomes.update((job_id, Reroute(str(exc))) for job_id in unanswered)
                    continue
                tries += 1
                if tries > CRASH_ATTEMPTS + 1:
                    # The engine dies before drawing anything: no job is to blame, but none gets drawn either.
                    outcomes.update((job_id, JobFailedError(ENGINE_CRASHED)) for job_id in unanswered)
            except EngineStartError as exc:
                log.error("the engine cannot start again: %s", exc)
                outcomes.update((request.job_id, JobFailedError(ENGINE_DOWN)) for request in sent)
            except asyncio.CancelledError:
                # The bot is stopping: the jobs run again after the restart, and this attempt is not theirs to bear.
                await self.store.forgive_attempt([request.job_id for request in sent])
                raise

    async def _hand_over(self, requests: list[GenerateRequest]) -> _HandOver:
        """Count an attempt for each job; those whose attempts are spent are given up instead of sent."""
        if not requests:
            return _HandOver([], {})
        job_ids = [request.job_id for request in requests]
        attempts = await self.store.hand_over(job_ids, self.clock(), self.engine.host)
        given_up: dict[str, Outcome] = {}
        for request in requests:
            if attempts[request.job_id] > CRASH_ATTEMPTS:
                log.error("job %s: given up after %d engine crashes", request.job_id, CRASH_ATTEMPTS)
                given_up[request.job_id] = JobFailedError(ENGINE_CRASHED)
        return _HandOver([request for request in requests if request.job_id not in given_up], given_up)


def _drawing(unanswered: list[str], last: dict[str, Progress], crash: EngineCrashed) -> list[str]:
    """The unanswered jobs the engine was denoising when it died (as it said, or as its last steps showed): they bear
    the attempt; those waiting behind them or already denoised do not."""
    if crash.drawing is not None:
        return [job_id for job_id in unanswered if job_id in crash.drawing]
    return [job_id for job_id in unanswered if job_id in last and last[job_id].step < last[job_id].total]


@dataclass(frozen=True)
class _HandOver:
    """The jobs sent to the engine this time, and those given up before it."""

    sent: list[GenerateRequest]
    given_up: dict[str, Outcome]
