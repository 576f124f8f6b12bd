"""Feeding the engine: take jobs from the fair queue one at a time, track their state, hand results over."""

from __future__ import annotations

import asyncio
import logging
import time

import discord

from bot.delivery import Delivery
from bot.engine_client import Engine, EngineCrashed, EngineStartError, JobFailedError, ProgressCallback
from bot.estimates import Estimator
from bot.fair_queue import FairQueue
from bot.jobs import Job, JobState
from bot.policy import Flagged
from bot.presses import IMAGE_GONE
from bot.progress import Clock, ProgressReporter
from bot.render import cancelled_text, progress_text, starting_text
from bot.source_images import SourceImages
from bot.store import JobStore
from engine.params import GenerationParams
from engine.pngmeta import infotext_of
from engine.wire import GeneratedImage, JobResult, Progress

log = logging.getLogger(__name__)

ENGINE_CRASHED = (
    "The image engine stopped twice while drawing this, so I gave up on it: try other settings, and tell the"
    " owner if it happens again."
)
ENGINE_DOWN = "The image engine cannot start at the moment; the owner can see why in the bot's log."
# A job that kills the engine is tried on a fresh one once more, then failed, so it cannot stall the queue.
CRASH_ATTEMPTS = 2


class Dispatcher:
    """The one consumer of the queue; uploads run beside the next job so the GPU is not kept waiting."""

    def __init__(
        self,
        *,
        queue: FairQueue[Job],
        engine: Engine,
        store: JobStore,
        delivery: Delivery,
        sources: SourceImages,
        estimator: Estimator,
        clock: Clock = time.time,
        progress_interval: float = 1.0,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.store = store
        self.delivery = delivery
        self.sources = sources
        self.estimator = estimator
        self.clock = clock
        self.progress_interval = progress_interval
        self._handovers: set[asyncio.Task[None]] = set()
        self._running: tuple[Job, float] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._cancelled_by: dict[str, int] = {}

    def running_job(self) -> tuple[Job, float] | None:
        """The job with the engine, and since when."""
        return self._running

    def running(self) -> tuple[GenerationParams, float] | None:
        """The running job's parameters and start time, for start-time estimates."""
        return (self._running[0].params, self._running[1]) if self._running else None

    async def cancel(self, job: Job, by_id: int) -> str:
        """Cancel a waiting job at once, a running one between two steps; return a sentence saying which."""
        waiting = self.queue.remove(lambda queued: queued.id == job.id)
        if waiting is not None:
            await self.store.mark_cancelled(job.id, f"cancelled by {by_id}", self.clock())
            await self.delivery.edit_status(waiting, cancelled_text(by_id), final=True)
            return "Cancelled."
        if self._running is not None and self._running[0].id == job.id:
            self._cancelled_by[job.id] = by_id
            await self.engine.cancel(job.id)
            return "Stopping it after the current step."
        return "That job is not waiting or running any more."

    async def run(self) -> None:
        """Serve the queue until cancelled."""
        while True:
            job = await self.queue.get()
            try:
                await self.run_job(job)
            except Exception:
                log.exception("job %s: unexpected error in the dispatcher", job.id)

    async def run_job(self, job: Job) -> None:
        """Draw one job, then hand its result (or failure) to delivery without waiting for the upload."""
        started = self.clock()
        await self.store.mark_running(job.id, started)
        self._running = (job, started)
        self._idle.clear()
        try:
            await self._run(job)
        finally:
            self._running = None
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no job is with the engine."""
        await self._idle.wait()

    async def _run(self, job: Job) -> None:
        reporter = ProgressReporter(
            lambda text: self.delivery.edit_status(job, text), self.clock, self.progress_interval
        )
        reporter.report(starting_text())

        def on_progress(progress: Progress) -> None:
            reporter.report(progress_text(progress.step, progress.total))

        try:
            source = await self._source(job)
            result = await self._generate(job, on_progress, source)
        except JobFailedError as exc:
            if job.id in self._cancelled_by:
                await reporter.finish()
                by_id = self._cancelled_by.pop(job.id)
                await self.store.mark_cancelled(job.id, f"cancelled by {by_id}", self.clock())
                await self.delivery.edit_status(job, cancelled_text(by_id), final=True)
            else:
                await self._fail(job, reporter, str(exc))
            return
        # A cancel that came after the last step is too late: the result is delivered.
        self._cancelled_by.pop(job.id, None)
        # On disk before "done", so the result's buttons have their images whatever happens next.
        await asyncio.to_thread(self.sources.images.save, job.id, [image.png for image in result.images])
        flagged = tuple(i for i, image in enumerate(result.images, start=1) if image.flagged)
        await self.store.mark_done(job.id, self.clock(), result.seconds, result.model, flagged)
        await self.estimator.observe(job.params, result.seconds)
        self._hand_over(job, result, reporter)

    async def _generate(self, job: Job, on_progress: ProgressCallback, source: bytes | None) -> JobResult:
        """Draw a job; if the engine dies under it, run it once more on a fresh engine, then give up on it."""
        for attempt in range(1, CRASH_ATTEMPTS + 1):
            try:
                check = job.on_flagged is not Flagged.POST
                return await self.engine.generate(job.id, job.params, on_progress, source, check_safety=check)
            except EngineCrashed as exc:
                log.error("job %s: %s (attempt %d of %d)", job.id, exc, attempt, CRASH_ATTEMPTS)
            except EngineStartError as exc:
                log.error("job %s: the engine cannot start again: %s", job.id, exc)
                raise JobFailedError(ENGINE_DOWN) from None
        raise JobFailedError(ENGINE_CRASHED)

    def _hand_over(self, job: Job, result: JobResult, reporter: ProgressReporter | None) -> None:
        task = asyncio.create_task(self._deliver(job, result, reporter), name=f"deliver-{job.id}")
        self._handovers.add(task)
        task.add_done_callback(self._handovers.discard)

    async def deliver_pending(self) -> None:
        """After a restart: post what was drawn but not delivered (the same nonce keeps it from doubling)."""
        for job in await self.store.in_states(JobState.DONE):
            details = await self.store.done_details(job.id)
            loaded = [
                await asyncio.to_thread(self.sources.images.load, job.id, i) for i in range(1, job.params.count + 1)
            ]
            pngs = [png for png in loaded if png is not None]
            if details is None or len(pngs) != job.params.count:
                log.error("job %s: its images are gone, it cannot be delivered", job.id)
                await self.store.mark_failed(job.id, IMAGE_GONE, self.clock())
                continue
            seconds, model = details
            images = tuple(
                GeneratedImage(seed=seed, infotext=infotext_of(png), png=png, flagged=index in job.flagged)
                for index, (seed, png) in enumerate(zip(job.params.seeds(), pngs, strict=True), start=1)
            )
            log.info("job %s: delivering after a restart", job.id)
            self._hand_over(job, JobResult(job_id=job.id, images=images, seconds=seconds, model=model), None)

    async def _source(self, job: Job) -> bytes | None:
        """The image a derived job works from; JobFailedError when it is gone."""
        if job.parent_id is None or job.source_index is None:
            return None
        parent = await self.store.get(job.parent_id)
        source = await self.sources.get(parent, job.source_index) if parent is not None else None
        if source is None:
            raise JobFailedError(IMAGE_GONE)
        return source

    async def _deliver(self, job: Job, result: JobResult, reporter: ProgressReporter | None) -> None:
        if reporter is not None:
            await reporter.finish()
        try:
            message = await self.delivery.post_result(job, result)
        except discord.HTTPException as exc:
            log.error("job %s: could not post its result: %s", job.id, exc)
            return
        await self.store.mark_delivered(job.id, message.id)

    async def _fail(self, job: Job, reporter: ProgressReporter, sentence: str) -> None:
        await reporter.finish()
        await self.store.mark_failed(job.id, sentence, self.clock())
        await self.delivery.post_failure(job, sentence)

    async def drain(self) -> None:
        """Wait for the uploads in flight."""
        if self._handovers:
            await asyncio.gather(*self._handovers, return_exceptions=True)
