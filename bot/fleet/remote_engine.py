"""One engine of a worker, as the dispatcher sees it: batches go out on the worker's stream, answers come back through
the hub, which hands each to the engine that sent its batch."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.fleet.streams import Kind, WorkerCard, batches_key
from bot.pipeline.engine_client import (
    EngineCrashed,
    EngineGarbled,
    EngineLost,
    JobFailedError,
    Outcome,
    ProgressCallback,
    UnusableFrame,
    batch_outcomes,
    check_progress,
    check_result,
)
from core.params import GenerationParams
from core.prompt_syntax import split_loras
from core.wire import CancelRequest, EngineReady, GenerateBatch, GenerateRequest, JobFailed, JobResult, Progress, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Batch:
    """A batch sent and not yet answered in full."""

    requests: dict[str, GenerateRequest]
    futures: dict[str, asyncio.Future[JobResult]]
    on_progress: ProgressCallback


class RemoteEngine:
    """Engine `index` of its worker: what it draws with, and which models and files it has, come from the worker's
    card."""

    def __init__(self, redis: Redis, card: WorkerCard, index: int) -> None:
        self.redis = redis
        self.host = card.name
        self.index = index
        self._ready = card.engines[index]
        # The worker's folders as its latest card lists them (a rescan changes them).
        self.card = card
        self.restarts = 0
        self.last_heartbeat: float | None = None
        # Whether its worker can be reached now (Redis is up and the worker's heartbeat lives).
        self.reachable = True
        self._batches: dict[str, _Batch] = {}

    @property
    def ready(self) -> EngineReady | None:
        return self._ready

    @property
    def available(self) -> bool:
        return self.reachable

    def draws(self, params: GenerationParams) -> bool:
        """Whether its worker has the model, the LoRAs, the upscaler and the VAE the job names."""
        card = self.card
        if params.model and params.model not in card.model_names:
            return False
        if params.upscaler_model is not None and params.upscaler_model not in card.upscalers:
            return False
        if params.vae and params.vae not in card.vae_names:
            return False
        return all(tag.name in card.loras for tag in split_loras(params.prompt)[1])

    async def start(self, on_starting: Callable[[str], object] | None = None) -> EngineReady:
        """Its worker started it before announcing it."""
        return self._ready

    def holds(self, batch_id: str, job_id: str) -> bool:
        """Whether `job_id` of batch `batch_id` was sent here and is still unanswered."""
        batch = self._batches.get(batch_id)
        return batch is not None and job_id in batch.futures and not batch.futures[job_id].done()

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        """Send the batch on the worker's stream and wait for each job's answer; EngineLost if it cannot be sent or
        the worker is declared dead before answering, EngineCrashed if its engine died drawing it."""
        if not self.reachable:
            raise EngineLost(f"the worker {self.host} cannot be reached")
        loop = asyncio.get_running_loop()
        batch_id = uuid.uuid4().hex
        batch = _Batch(
            {request.job_id: request for request in requests},
            {request.job_id: loop.create_future() for request in requests},
            on_progress,
        )
        self._batches[batch_id] = batch
        fields = {
            "kind": Kind.BATCH.value,
            "engine": str(self.index),
            "batch": batch_id,
            "frame": encode(GenerateBatch(tuple(requests))),
        }
        try:
            await self.redis.xadd(batches_key(self.host), fields)  # type: ignore[arg-type]
            outcomes = await asyncio.gather(*batch.futures.values(), return_exceptions=True)
        except RedisError as exc:
            # Given nothing more until the hub sees its heartbeat again (or Redis back).
            self.reachable = False
            raise EngineLost(f"the batch could not be sent to {self.host}: {exc}") from None
        finally:
            del self._batches[batch_id]
        return batch_outcomes(requests, outcomes)

    def answer(self, batch_id: str, message: JobResult | JobFailed) -> bool:
        """A job's result or failure for a batch sent here; False (nothing done) when it answers none of them.
        A result that is not what the job asked for fails its batch as garbled."""
        batch = self._batches.get(batch_id)
        if batch is None or not self.holds(batch_id, message.job_id):
            return False
        future = batch.futures[message.job_id]
        if isinstance(message, JobFailed):
            future.set_exception(JobFailedError(message.message))
            return True
        try:
            check_result(batch.requests[message.job_id], message)
        except UnusableFrame as exc:
            log.error("worker %s sent a result I cannot use: %s", self.host, exc)
            self._fail(batch, EngineGarbled(f"the worker {self.host} sent a result I cannot use: {exc}"))
            return True
        future.set_result(message)
        return True

    def progress(self, batch_id: str, progress: Progress) -> None:
        """A step of a job of a batch sent here; anything else (an old batch's, a garbled one) is ignored."""
        batch = self._batches.get(batch_id)
        if batch is None or not self.holds(batch_id, progress.job_id):
            return
        try:
            check_progress(progress)
            batch.on_progress(progress)
        except UnusableFrame as exc:
            log.warning("worker %s sent a step I cannot use: %s", self.host, exc)
        except Exception:
            log.exception("job %s: showing its progress failed", progress.job_id)

    def crashed(self, batch_id: str, message: str, drawing: frozenset[str]) -> None:
        """The worker's engine died drawing the batch (the worker starts it again for the next one)."""
        batch = self._batches.get(batch_id)
        if batch is not None:
            self._fail(batch, EngineCrashed(f"the engine of {self.host} died: {message}", drawing=drawing))

    def lost(self, reason: str) -> None:
        """The worker is gone: every batch it holds ends unanswered, for other engines to draw."""
        self.reachable = False
        for batch in self._batches.values():
            self._fail(batch, EngineLost(reason))

    @staticmethod
    def _fail(batch: _Batch, error: Exception) -> None:
        for future in batch.futures.values():
            if not future.done():
                future.set_exception(error)

    async def _send(self, kind: Kind, frame: bytes | None = None) -> None:
        fields: dict[str, str | bytes] = {"kind": kind.value, "engine": str(self.index)}
        if frame is not None:
            fields["frame"] = frame
        try:
            await self.redis.xadd(batches_key(self.host), fields)  # type: ignore[arg-type]
        except RedisError as exc:
            log.warning("could not reach the worker %s to %s: %s", self.host, kind.value, exc)

    async def cancel(self, job_id: str) -> None:
        """Ask the worker to stop `job_id` between two steps."""
        await self._send(Kind.CANCEL, encode(CancelRequest(job_id=job_id)))

    async def reload_models(self) -> None:
        await self._send(Kind.RELOAD)

    def begin_shutdown(self) -> None:
        """The worker's engines are its own to stop."""

    async def close(self) -> None:
        """Nothing to stop here: the worker keeps serving."""
