"""Feeding the engine: take fair batches of compatible jobs from the queue, track their state, hand results over."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable

import discord

from bot.models.picker import Models
from bot.pipeline.delivery import Delivery
from bot.pipeline.engine_client import (
    Engine,
    EngineCrashed,
    EngineGarbled,
    EngineStartError,
    JobFailedError,
    Outcome,
    ProgressCallback,
)
from bot.pipeline.estimates import Estimator
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.progress import Clock, ProgressReporter
from bot.pipeline.source_images import SourceImages
from bot.pipeline.store import JobStore
from bot.results.presses import IMAGE_GONE
from bot.results.render import cancelled_text, progress_text, starting_text
from core.batching import compatible, fits
from core.jobs import Flagged, Job, JobState
from core.params import GenerationParams
from core.pngmeta import infotext_of
from core.wire import GeneratedImage, GenerateRequest, JobResult, Progress

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
SOMETHING_WRONG = "Something went wrong with job {job}; the owner can find the error in the bot's log."
CANCELLED = "Cancelled."
# A job that kills the engine is tried on a fresh one once more, then failed, so it cannot stall the queue.
CRASH_ATTEMPTS = 2


class Dispatcher:
    """The one consumer of the queue: takes a fair batch of compatible jobs, and forms the next one as soon
    as the engine has finished denoising, so PNG encoding and uploads never keep the GPU waiting."""

    def __init__(
        self,
        *,
        queue: FairQueue[Job],
        engine: Engine,
        store: JobStore,
        delivery: Delivery,
        sources: SourceImages,
        estimator: Estimator,
        models: Models | None = None,
        clock: Clock = time.time,
        progress_interval: float = 1.0,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.store = store
        self.delivery = delivery
        self.sources = sources
        self.estimator = estimator
        self.models = models or Models()
        self.clock = clock
        self.progress_interval = progress_interval
        self._handovers: set[asyncio.Task[None]] = set()
        self._batches: set[asyncio.Task[None]] = set()
        self._running: dict[str, tuple[Job, float]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._cancelled_by: dict[str, int] = {}
        # The model the engine has on the device (as the queue's affinity names it): jobs for it may go first.
        self._loaded: Hashable = None

    def running_jobs(self) -> list[tuple[Job, float]]:
        """The jobs with the engine, oldest first, and since when."""
        return list(self._running.values())

    def running(self) -> list[tuple[GenerationParams, float]]:
        """The running jobs' parameters and start times, for start-time estimates."""
        return [(job.params, started) for job, started in self._running.values()]

    async def cancel(self, job: Job, by_id: int) -> str:
        """Cancel a waiting job at once, a running one between two steps; return a sentence saying which."""
        waiting = self.queue.remove(lambda queued: queued.id == job.id)
        if waiting is not None:
            await self.store.mark_cancelled(job.id, f"cancelled by {by_id}", self.clock())
            await self.delivery.edit_status(waiting, cancelled_text(by_id), final=True)
            return "Cancelled."
        if job.id in self._running:
            self._cancelled_by[job.id] = by_id
            await self.engine.cancel(job.id)
            return "Stopping it after the current step."
        return "That job is not waiting or running any more."

    def _joiner(self, first: Job) -> Callable[[Job], bool]:
        """Whether a waiting job may join the batch `first` opens, within the engine's image limit and the pixels
        memory holds with their model."""
        ready = self.engine.ready
        max_images = ready.max_batch if ready is not None else 1
        max_pixels = ready.pixels_for(self.models.family(first.params.model)) if ready else first.params.pixels
        batch = [first.params]

        def can_join(job: Job) -> bool:
            if not compatible(first.params, job.params) or not fits([*batch, job.params], max_images, max_pixels):
                return False
            batch.append(job.params)
            return True

        return can_join

    async def run(self) -> None:
        """Serve the queue until cancelled."""
        while True:
            first = await self.queue.get(prefer=self._loaded)
            self._loaded = self.queue.affinity(first)
            batch = [first, *self.queue.take_more(self._joiner(first))]
            # Running from the moment they leave the queue, so a cancel before the batch starts still finds them.
            started = self.clock()
            for job in batch:
                self._running[job.id] = (job, started)
            self._idle.clear()
            denoised = asyncio.Event()
            task = asyncio.create_task(self.run_batch(batch, denoised), name=f"batch-{first.id}")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            await denoised.wait()

    async def run_batch(self, batch: list[Job], denoised: asyncio.Event | None = None) -> None:
        """Draw jobs together, then hand each result (or failure) to delivery without waiting for the upload;
        `denoised` is set once the engine no longer needs the GPU for them."""
        denoised = denoised or asyncio.Event()
        started = self.clock()
        for job in batch:
            self._running.setdefault(job.id, (job, started))
        self._idle.clear()
        try:
            for job in batch:
                await self.store.mark_running(job.id, started)
            await self._run(batch, denoised)
        except Exception:
            log.exception("jobs %s: unexpected error in the dispatcher", ", ".join(job.id for job in batch))
            await self._fail_unfinished(batch)
        finally:
            denoised.set()
            for job in batch:
                self._running.pop(job.id, None)
            if not self._running:
                self._idle.set()

    async def _fail_unfinished(self, batch: list[Job]) -> None:
        """After an unexpected error, tell the members whose jobs it left neither done nor failed."""
        for job in batch:
            try:
                stored = await self.store.get(job.id)
                if stored is not None and stored.state in (JobState.QUEUED, JobState.RUNNING):
                    sentence = SOMETHING_WRONG.format(job=job.id)
                    await self.store.mark_failed(job.id, sentence, self.clock())
                    await self.delivery.post_failure(job, sentence)
            except Exception:
                log.exception("job %s: could not record its failure either", job.id)

    async def wait_idle(self) -> None:
        """Return once no job is with the engine."""
        await self._idle.wait()

    async def _run(self, batch: list[Job], denoised: asyncio.Event) -> None:
        reporters = {job.id: self._reporter(job) for job in batch}
        for reporter in reporters.values():
            reporter.report(starting_text())

        def on_progress(progress: Progress) -> None:
            if progress.step >= progress.total:
                denoised.set()
            if progress.job_id in reporters:
                reporters[progress.job_id].report(progress_text(progress.step, progress.total), progress.preview)

        requests = []
        for job in batch:
            try:
                check = job.on_flagged is not Flagged.POST
                requests.append(GenerateRequest(job.id, job.params, await self._source(job), check_safety=check))
            except JobFailedError as exc:
                await self._fail(job, reporters.pop(job.id), str(exc))
        if not requests:
            return
        drawn: set[str] = set()

        def note_drawing(progress: Progress) -> None:
            drawn.add(progress.job_id)
            on_progress(progress)

        outcomes = await self._generate(requests, note_drawing)
        denoised.set()
        by_id = {job.id: job for job in batch}
        done: list[tuple[Job, JobResult]] = []
        for request, outcome in zip(requests, outcomes, strict=True):
            job, reporter = by_id[request.job_id], reporters[request.job_id]
            if isinstance(outcome, JobResult):
                done.append((job, outcome))
            elif job.id in self._cancelled_by:
                await reporter.finish()
                who = self._cancelled_by.pop(job.id)
                # Once the engine has drawn a step of it, the GPU time is spent: it counts against the limits.
                charged = job.id in drawn
                await self.store.mark_cancelled(job.id, f"cancelled by {who}", self.clock(), charged=charged)
                await self.delivery.edit_status(job, cancelled_text(who, charged), final=True)
            else:
                await self._fail(job, reporter, str(outcome))
        if done:
            await self.estimator.observe_batch([job.params for job, _ in done], done[0][1].seconds)
        for job, result in done:
            # A cancel that came after the last step is too late: the result is delivered.
            self._cancelled_by.pop(job.id, None)
            # On disk before "done", so the result's buttons have their images whatever happens next.
            await asyncio.to_thread(self.sources.images.save, job.id, [image.png for image in result.images])
            flagged = tuple(i for i, image in enumerate(result.images, start=1) if image.flagged)
            await self.store.mark_done(job.id, self.clock(), result.seconds, result.model, flagged)
            self._hand_over(job, result, reporters[job.id])

    def _reporter(self, job: Job) -> ProgressReporter:
        async def edit(text: str, preview: bytes | None) -> None:
            await self.delivery.edit_status(job, text, preview=preview)

        return ProgressReporter(edit, self.clock, self.progress_interval)

    async def _generate(self, requests: list[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        """Draw a batch; a job the engine dies drawing is drawn once more on a fresh engine, then given up.

        Each hand-over is counted in SQLite, so a job that takes the engine (or the whole bot) down with it is given
        up across restarts too. A job that was only waiting in the engine, or already denoised, is not to blame.
        """
        outcomes: dict[str, Outcome] = {}
        tries = 0
        while True:
            # A job cancelled while the engine was down is not sent to the next one.
            for request in requests:
                if request.job_id in self._cancelled_by:
                    outcomes.setdefault(request.job_id, JobFailedError(CANCELLED))
            pending = [request for request in requests if request.job_id not in outcomes]
            if pending:
                attempts = await self.store.begin_attempt([request.job_id for request in pending])
                for request in pending:
                    if attempts[request.job_id] > CRASH_ATTEMPTS:
                        log.error("job %s: given up after %d engine crashes", request.job_id, CRASH_ATTEMPTS)
                        outcomes[request.job_id] = JobFailedError(ENGINE_CRASHED)
                pending = [request for request in pending if request.job_id not in outcomes]
            if not pending:
                return [outcomes[request.job_id] for request in requests]
            last: dict[str, Progress] = {}

            def progress(update: Progress, last: dict[str, Progress] = last) -> None:
                last[update.job_id] = update
                on_progress(update)

            try:
                results = await self.engine.generate_batch(pending, progress)
                outcomes.update((request.job_id, result) for request, result in zip(pending, results, strict=True))
            except EngineGarbled as exc:
                outcomes.update(exc.finished)
                log.error("jobs %s: %s", ", ".join(request.job_id for request in pending), exc)
                outcomes.update((request.job_id, JobFailedError(ENGINE_GARBLED)) for request in pending)
            except EngineCrashed as exc:
                outcomes.update(exc.finished)
                unanswered = [request.job_id for request in pending if request.job_id not in outcomes]
                drawing = [job_id for job_id in unanswered if job_id in last and last[job_id].step < last[job_id].total]
                await self.store.forgive_attempt([job_id for job_id in unanswered if job_id not in drawing])
                tries += 1
                log.error("jobs %s: %s (drawing %s)", ", ".join(unanswered), exc, ", ".join(drawing) or "none of them")
                if tries > CRASH_ATTEMPTS + 1:
                    # The engine dies before drawing anything: no job is to blame, but none gets drawn either.
                    outcomes.update((job_id, JobFailedError(ENGINE_CRASHED)) for job_id in unanswered)
            except EngineStartError as exc:
                log.error("the engine cannot start again: %s", exc)
                outcomes.update((request.job_id, JobFailedError(ENGINE_DOWN)) for request in pending)
            except asyncio.CancelledError:
                # The bot is stopping: the jobs run again after the restart, and this attempt is not theirs to bear.
                await self.store.forgive_attempt([request.job_id for request in pending])
                raise

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
            # Reading the infotext back parses each PNG: CPU work, beside the event loop.
            infotexts = [await asyncio.to_thread(infotext_of, png) for png in pngs]
            images = tuple(
                GeneratedImage(seed=seed, infotext=infotext, png=png, flagged=index in job.flagged)
                for index, (seed, png, infotext) in enumerate(
                    zip(job.params.seeds(), pngs, infotexts, strict=True), start=1
                )
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
            if isinstance(exc, discord.NotFound):
                # The channel is gone: trying again at every start would never end. (Missing permissions may be
                # given back, so those results are tried again at the next start.)
                await self.store.mark_failed(job.id, f"Discord refused the result: {exc.text}", self.clock())
            return
        await self.store.mark_delivered(job.id, message.id)

    async def _fail(self, job: Job, reporter: ProgressReporter, sentence: str) -> None:
        await reporter.finish()
        await self.store.mark_failed(job.id, sentence, self.clock())
        await self.delivery.post_failure(job, sentence)

    async def stop(self) -> None:
        """Abandon the batches still with the engine: their jobs stay running in SQLite and run after a restart."""
        for task in self._batches:
            task.cancel()
        await asyncio.gather(*self._batches, return_exceptions=True)

    async def drain(self) -> None:
        """Wait for the uploads in flight."""
        if self._handovers:
            await asyncio.gather(*self._handovers, return_exceptions=True)
