"""After the engine: each job's answer recorded in the job log and handed to delivery, also after a restart.

A result's images are on disk before the job counts as done, and its upload runs beside the next batch, so the GPU
never waits for Discord.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import discord

from bot.pipeline.delivery import Delivery
from bot.pipeline.estimates import Estimator
from bot.pipeline.images import ImageStore
from bot.pipeline.progress import Clock, ProgressReporter
from bot.pipeline.store import Done, JobStore
from bot.results.presses import IMAGE_GONE
from bot.results.render import cancelled_text
from core.jobs import Job, JobState
from core.pngmeta import infotext_of
from core.wire import GeneratedImage, JobResult

log = logging.getLogger(__name__)

SOMETHING_WRONG = "Something went wrong with job {job}; the owner can find the error in the bot's log."


class Handover:
    """Records how each job ended and posts it: results, failures and cancels."""

    def __init__(
        self, *, store: JobStore, delivery: Delivery, images: ImageStore, estimator: Estimator, clock: Clock
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.images = images
        self.estimator = estimator
        self.clock = clock
        self._uploads: set[asyncio.Task[None]] = set()
        # Told of the jobs whose end is in the job log (a worker's results may be let go of from then on).
        self.recorded: list[Callable[[Sequence[str]], object]] = []

    def _recorded(self, job_ids: Sequence[str]) -> None:
        for listener in self.recorded:
            listener(job_ids)

    async def done(self, drawn: Sequence[tuple[Job, JobResult, ProgressReporter]]) -> None:
        """Jobs drawn together: learn the device's speed, keep the images, record them done, upload them."""
        if not drawn:
            return
        await self.estimator.observe_batch([job.params for job, _, _ in drawn], drawn[0][1].seconds)
        # On disk before "done", so the results' buttons have their images whatever happens next; the batch's files
        # in one trip to a thread and its records in one transaction, so the next batch's writes queue behind less.
        await asyncio.to_thread(self._save, drawn)
        await self.store.mark_done([_done(job, result) for job, result, _ in drawn], self.clock())
        self._recorded([job.id for job, _, _ in drawn])
        for job, result, reporter in drawn:
            self._upload(job, result, reporter)

    def _save(self, drawn: Sequence[tuple[Job, JobResult, ProgressReporter]]) -> None:
        for job, result, _ in drawn:
            self.images.save(job.id, [image.png for image in result.images])

    async def failed(self, job: Job, reporter: ProgressReporter, sentence: str) -> None:
        """A job that produced nothing: recorded with its sentence, and its member told."""
        await reporter.finish()
        await self.store.mark_failed(job.id, sentence, self.clock())
        self._recorded([job.id])
        await self.delivery.post_failure(job, sentence)

    async def cancelled(
        self, job: Job, by_id: int, *, charged: bool = False, reporter: ProgressReporter | None = None
    ) -> None:
        """A job stopped by its member or an admin, waiting or running (`reporter`: its progress edits); `charged`
        once the engine had drawn a step of it (the GPU time is spent, so it counts against the limits)."""
        if reporter is not None:
            await reporter.finish()
        await self.store.mark_cancelled(job.id, f"cancelled by {by_id}", self.clock(), charged=charged)
        self._recorded([job.id])
        await self.delivery.edit_status(job, cancelled_text(by_id, charged), final=True)

    async def fail_unfinished(self, jobs: Sequence[Job]) -> None:
        """After an unexpected error, tell the members whose jobs it left neither done nor failed."""
        for job in jobs:
            try:
                stored = await self.store.get(job.id)
                if stored is not None and stored.state in (JobState.QUEUED, JobState.RUNNING):
                    sentence = SOMETHING_WRONG.format(job=job.id)
                    await self.store.mark_failed(job.id, sentence, self.clock())
                    await self.delivery.post_failure(job, sentence)
            except Exception:
                log.exception("job %s: could not record its failure either", job.id)

    async def deliver_pending(self) -> None:
        """After a restart: post what was drawn but not delivered (the same nonce keeps it from doubling)."""
        for job in await self.store.in_states(JobState.DONE):
            details = await self.store.done_details(job.id)
            loaded = [await asyncio.to_thread(self.images.load, job.id, i) for i in range(1, job.params.count + 1)]
            pngs = [png for png in loaded if png is not None]
            if details is None or len(pngs) != job.params.count:
                log.error("job %s: its images are gone, it cannot be delivered", job.id)
                await self.store.mark_failed(job.id, IMAGE_GONE, self.clock())
                continue
            seconds, model = details
            # Reading the infotext back parses each PNG: CPU work, beside the event loop.
            infotexts = [await asyncio.to_thread(infotext_of, png) for png in pngs]
            images = tuple(
                GeneratedImage(seed=seed, infotext=infotext, png=png, flagged=index in job.flagged)
                for index, (seed, png, infotext) in enumerate(
                    zip(job.params.seeds(), pngs, infotexts, strict=True), start=1
                )
            )
            log.info("job %s: delivering after a restart", job.id)
            self._upload(job, JobResult(job_id=job.id, images=images, seconds=seconds, model=model), None)

    def _upload(self, job: Job, result: JobResult, reporter: ProgressReporter | None) -> None:
        task = asyncio.create_task(self._post(job, result, reporter), name=f"deliver-{job.id}")
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    async def _post(self, job: Job, result: JobResult, reporter: ProgressReporter | None) -> None:
        if reporter is not None:
            await reporter.finish()
        try:
            message = await self.delivery.post_result(job, result)
        except discord.HTTPException as exc:
            log.error("job %s: could not post its result: %s", job.id, exc)
            if isinstance(exc, discord.NotFound):
                # The channel is gone: trying again at every start would never end. (Missing permissions may be
                # given back, so those results are tried again at the next start.)
                await self.store.mark_failed(job.id, f"Discord refused the result: {exc.text}", self.clock())
            return
        await self.store.mark_delivered(job.id, message.id)

    async def drain(self) -> None:
        """Wait for the uploads in flight."""
        if self._uploads:
            await asyncio.gather(*self._uploads, return_exceptions=True)


def _done(job: Job, result: JobResult) -> Done:
    """A drawn job as the log keeps it."""
    flagged = tuple(number for number, image in enumerate(result.images, start=1) if image.flagged)
    return Done(job.id, result.seconds, result.model, flagged)
