"""Feeding the engine: take jobs from the fair queue one at a time, track their state, hand results over."""

from __future__ import annotations

import asyncio
import logging
import time

import discord

from bot.delivery import Delivery
from bot.engine_client import Engine, EngineCrashed, JobFailedError
from bot.fair_queue import FairQueue
from bot.jobs import Job
from bot.presses import IMAGE_GONE
from bot.progress import Clock, ProgressReporter
from bot.render import progress_text, starting_text
from bot.source_images import SourceImages
from bot.store import JobStore
from engine.wire import JobResult, Progress

log = logging.getLogger(__name__)

ENGINE_CRASHED = "The image engine stopped while drawing this and has been restarted: please try again."


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
        clock: Clock = time.time,
        progress_interval: float = 1.0,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.store = store
        self.delivery = delivery
        self.sources = sources
        self.clock = clock
        self.progress_interval = progress_interval
        self._handovers: set[asyncio.Task[None]] = set()

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
        await self.store.mark_running(job.id, self.clock())
        reporter = ProgressReporter(
            lambda text: self.delivery.edit_status(job, text), self.clock, self.progress_interval
        )
        reporter.report(starting_text())

        def on_progress(progress: Progress) -> None:
            reporter.report(progress_text(progress.step, progress.total))

        try:
            source = await self._source(job)
            result = await self.engine.generate(job.id, job.params, on_progress, source)
        except JobFailedError as exc:
            await self._fail(job, reporter, str(exc))
            return
        except EngineCrashed as exc:
            log.error("job %s: %s", job.id, exc)
            await self._fail(job, reporter, ENGINE_CRASHED)
            return
        # On disk before "done", so the result's buttons have their images whatever happens next.
        await asyncio.to_thread(self.sources.images.save, job.id, [image.png for image in result.images])
        await self.store.mark_done(job.id, self.clock())
        task = asyncio.create_task(self._deliver(job, result, reporter), name=f"deliver-{job.id}")
        self._handovers.add(task)
        task.add_done_callback(self._handovers.discard)

    async def _source(self, job: Job) -> bytes | None:
        """The image a derived job works from; JobFailedError when it is gone."""
        if job.parent_id is None or job.source_index is None:
            return None
        parent = await self.store.get(job.parent_id)
        source = await self.sources.get(parent, job.source_index) if parent is not None else None
        if source is None:
            raise JobFailedError(IMAGE_GONE)
        return source

    async def _deliver(self, job: Job, result: JobResult, reporter: ProgressReporter) -> None:
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
