"""Feeding the engines: fair batches of compatible jobs from the queue, each built for the engine that is free.

How a batch survives the engine dying is bot.pipeline.retries; what happens to each job after is bot.pipeline.handover.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from bot.models.picker import Models
from bot.pipeline.delivery import Delivery
from bot.pipeline.engine_client import Engine, JobFailedError
from bot.pipeline.engine_stats import Ending, EngineStats, EngineStatus, JobEnd
from bot.pipeline.engines import Engines
from bot.pipeline.estimates import Estimator
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.handover import Handover
from bot.pipeline.progress import Clock, ProgressReporter
from bot.pipeline.retries import Reroute, Retries
from bot.pipeline.source_images import SourceImages
from bot.pipeline.store import JobStore
from bot.results.presses import IMAGE_GONE
from bot.results.render import progress_text, starting_text
from core.batching import compatible, fits
from core.jobs import Flagged, Job
from core.params import GenerationParams
from core.wire import GenerateRequest, JobResult, Progress

log = logging.getLogger(__name__)

# Batches one engine holds at once: one denoising, and the one before it still being encoded and checked.
MAX_IN_FLIGHT = 2
REROUTED = "The GPU worker drawing this went away: it is back at the front of the queue for another one."


@dataclass(eq=False)
class _Slot:
    """One engine as the dispatcher feeds it."""

    number: int
    engine: Engine
    retries: Retries
    in_flight: int = 0
    denoising: bool = False
    # The model the engine has on the device (as the queue's affinity names it): jobs for it may go first.
    loaded: Hashable = None
    stats: EngineStats = field(default_factory=EngineStats)

    @property
    def device(self) -> str:
        ready = self.engine.ready
        return ready.device if ready is not None else "starting"

    @property
    def free(self) -> bool:
        """Whether it may take the next batch: reachable, nothing denoising, and room for one more in flight."""
        return self.engine.available and not self.denoising and self.in_flight < MAX_IN_FLIGHT

    def accepts(self, job: Job) -> bool:
        """Whether its engine has the job's model and LoRAs (a worker may lack some of the bot's, and the bot some of a
        worker's)."""
        return self.engine.draws(job.params)


def _least_busy(slot: _Slot) -> tuple[int, float, int]:
    return slot.in_flight, slot.stats.last_batch_at or float("-inf"), slot.number


class Dispatcher:
    """The one consumer of the queue: gives the next fair batch of compatible jobs to whichever engine is free,
    built for that engine's batch size and memory, and forms an engine's next one as soon as it has finished
    denoising, so PNG encoding and uploads never keep a GPU waiting."""

    def __init__(
        self,
        *,
        queue: FairQueue[Job],
        engines: Engines,
        store: JobStore,
        delivery: Delivery,
        sources: SourceImages,
        estimator: Estimator,
        models: Models | None = None,
        clock: Clock = time.time,
        progress_interval: float = 1.0,
    ) -> None:
        self.queue = queue
        self.engines = engines
        self.store = store
        self.delivery = delivery
        self.sources = sources
        self.models = models or Models()
        self.clock = clock
        self.progress_interval = progress_interval
        self._slots = [
            _Slot(number, engine, Retries(engine, store, clock)) for number, engine in enumerate(engines.members)
        ]
        self._numbers = len(self._slots)
        self._slot_changed = asyncio.Event()
        self.handover = Handover(
            store=store, delivery=delivery, images=sources.images, estimator=estimator, clock=clock
        )
        self._batches: set[asyncio.Task[None]] = set()
        self._running: dict[str, tuple[Job, float]] = {}
        self._drawn_by: dict[str, _Slot] = {}
        self._reporters: dict[str, ProgressReporter] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._cancelled_by: dict[str, int] = {}
        # Told of every job that leaves an engine (the metrics listen here).
        self.job_ended: list[Callable[[JobEnd], object]] = []

    def attach(self, engine: Engine) -> None:
        """Feed one more engine (a worker's, as it announces itself) from the next batch on."""
        self._slots.append(_Slot(self._numbers, engine, Retries(engine, self.store, self.clock)))
        self._numbers += 1
        self.engines.add_remote(engine)
        self._engines_counted()

    def detach(self, engine: Engine) -> None:
        """Feed an engine no more (its worker is gone); its batches in flight end with it lost, and go elsewhere."""
        self._slots = [slot for slot in self._slots if slot.engine is not engine]
        self.engines.remove_remote(engine)
        self._engines_counted()

    def _engines_counted(self) -> None:
        """Engines came or went: estimates share the queue among as many, and a free one may now take a batch."""
        self.handover.estimator.parallel = max(1, len(self._slots))
        self._slot_changed.set()

    def engines_changed(self) -> None:
        """An engine became reachable again (or stopped being so): look again for a free one."""
        self._slot_changed.set()

    def tell_drawing(self, engine: Engine, text: str) -> None:
        """Show `text` on the status of each job `engine` holds (its worker cannot be reached, say)."""
        for job_id, slot in self._drawn_by.items():
            reporter = self._reporters.get(job_id)
            if slot.engine is engine and reporter is not None:
                reporter.report(text)

    def is_running(self, job_id: str) -> bool:
        return job_id in self._running

    def take_waiting(self, job_id: str) -> Job | None:
        """Take a waiting job out of the queue, to be finished by a result that came in without its batch (a worker's
        result the bot had not recorded before it restarted); None when it is not waiting."""
        return self.queue.remove(lambda queued: queued.id == job_id)

    async def finish_recovered(self, job: Job, result: JobResult) -> None:
        """Record and deliver a result for `job` drawn before the bot last stopped."""
        await self.handover.done([(job, result, self._reporter(job))])

    def engine_statuses(self, now: float) -> list[EngineStatus]:
        """Each engine as an operator sees it."""
        return [
            EngineStatus(
                number=slot.number + 1,
                device=slot.device,
                model=slot.stats.model or (slot.engine.ready.model.name if slot.engine.ready else None),
                in_flight=slot.in_flight,
                images=slot.stats.images,
                images_per_minute=slot.stats.images_per_minute(now),
                jobs=dict(slot.stats.jobs),
                last_batch_at=slot.stats.last_batch_at,
                restarts=slot.engine.restarts,
                host=slot.engine.host,
                last_heartbeat=slot.engine.last_heartbeat,
            )
            for slot in self._slots
        ]

    def running_jobs(self) -> list[tuple[Job, float]]:
        """The jobs with an engine, oldest first, and since when."""
        return list(self._running.values())

    def running(self) -> list[tuple[GenerationParams, float]]:
        """The running jobs' parameters and start times, for start-time estimates."""
        return [(job.params, started) for job, started in self._running.values()]

    async def cancel(self, job: Job, by_id: int) -> str:
        """Cancel a waiting job at once, a running one between two steps; return a sentence saying which."""
        waiting = self.queue.remove(lambda queued: queued.id == job.id)
        if waiting is not None:
            await self.handover.cancelled(waiting, by_id)
            return "Cancelled."
        if job.id in self._running:
            self._cancelled_by[job.id] = by_id
            slot = self._drawn_by.get(job.id)
            if slot is not None:
                await slot.engine.cancel(job.id)
            return "Stopping it after the current step."
        return "That job is not waiting or running any more."

    def _joiner(self, first: Job, engine: Engine) -> Callable[[Job], bool]:
        """Whether a waiting job may join the batch `first` opens on `engine`, within its image limit and the pixels
        its memory holds with their model."""
        ready = engine.ready
        max_images = ready.max_batch if ready is not None else 1
        max_pixels = ready.pixels_for(self.models.family(first.params.model)) if ready else first.params.pixels
        batch = [first.params]

        def can_join(job: Job) -> bool:
            if not compatible(first.params, job.params) or not fits([*batch, job.params], max_images, max_pixels):
                return False
            if not engine.draws(job.params):
                return False
            batch.append(job.params)
            return True

        return can_join

    def _next(self) -> tuple[_Slot, Job] | None:
        """The engine to build the next batch for (a free one: the least busy, then the one idle longest) and the
        batch's first job: the next in fair order that the engine has the model for; None when no free engine can take
        any waiting job."""
        for slot in sorted((slot for slot in self._slots if slot.free), key=_least_busy):
            taken = self.queue.take(prefer=slot.loaded, accept=slot.accepts)
            if taken is not None:
                return slot, taken[0]
        return None

    async def _changed(self) -> None:
        """Wait until a job joins the queue or an engine may take a batch."""
        waits = [asyncio.ensure_future(self.queue.changed.wait()), asyncio.ensure_future(self._slot_changed.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def run(self) -> None:
        """Serve the queue until cancelled."""
        while True:
            self.queue.changed.clear()
            self._slot_changed.clear()
            chosen = self._next()
            if chosen is None:
                await self._changed()
                continue
            slot, first = chosen
            slot.loaded = self.queue.affinity(first)
            limit = slot.engine.ready.max_batch - 1 if slot.engine.ready is not None else 0
            batch = [first, *self.queue.take_more(self._joiner(first, slot.engine), limit)]
            # Running from the moment they leave the queue, so a cancel before the batch starts still finds them.
            started = self.clock()
            for job in batch:
                self._running[job.id] = (job, started)
                self._drawn_by[job.id] = slot
            self._idle.clear()
            slot.in_flight += 1
            slot.denoising = True
            slot.stats.last_batch_at = started
            task = asyncio.create_task(self._run_batch(batch, slot), name=f"batch-{first.id}")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    def _denoised(self, slot: _Slot) -> None:
        """The engine no longer needs the GPU for its batch: it may take the next one."""
        if slot.denoising:
            slot.denoising = False
            self._slot_changed.set()

    async def _run_batch(self, batch: list[Job], slot: _Slot) -> None:
        """Draw jobs together on the slot's engine, then hand each result (or failure) to delivery without waiting
        for the upload."""
        started = self.clock()
        try:
            await self._run(batch, slot, started)
        except Exception:
            log.exception("jobs %s: unexpected error in the dispatcher", ", ".join(job.id for job in batch))
            await self.handover.fail_unfinished(batch)
        finally:
            self._denoised(slot)
            slot.in_flight -= 1
            self._slot_changed.set()
            for job in batch:
                self._running.pop(job.id, None)
                self._drawn_by.pop(job.id, None)
                self._reporters.pop(job.id, None)
            if not self._running:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no job is with the engine."""
        await self._idle.wait()

    async def _run(self, batch: list[Job], slot: _Slot, started: float) -> None:
        reporters = {job.id: self._reporter(job) for job in batch}
        self._reporters.update(reporters)
        for reporter in reporters.values():
            reporter.report(starting_text())

        def on_progress(progress: Progress) -> None:
            if progress.step >= progress.total:
                self._denoised(slot)
            if progress.job_id in reporters:
                reporters[progress.job_id].report(progress_text(progress.step, progress.total), progress.preview)

        requests = []
        for job in batch:
            try:
                check = job.on_flagged is not Flagged.POST
                requests.append(GenerateRequest(job.id, job.params, await self._source(job), check_safety=check))
            except JobFailedError as exc:
                await self.handover.failed(job, reporters.pop(job.id), str(exc))
        if not requests:
            return
        drawn: set[str] = set()

        def note_drawing(progress: Progress) -> None:
            drawn.add(progress.job_id)
            on_progress(progress)

        outcomes = await slot.retries.draw(requests, note_drawing, lambda job_id: job_id in self._cancelled_by)
        self._denoised(slot)
        by_id = {job.id: job for job in batch}
        done: list[tuple[Job, JobResult, ProgressReporter]] = []
        for request, outcome in zip(requests, outcomes, strict=True):
            job, reporter = by_id[request.job_id], reporters[request.job_id]
            # A cancel that came after the last step is too late: the result is delivered.
            who = self._cancelled_by.pop(job.id, None)
            if isinstance(outcome, JobResult):
                done.append((job, outcome, reporter))
                slot.stats.model = outcome.model.name
                self._ended(slot, job, Ending.DONE, started, outcome)
            elif isinstance(outcome, Reroute) and who is None:
                await self._reroute(job, reporter, outcome)
            elif who is not None:
                await self.handover.cancelled(job, who, charged=job.id in drawn, reporter=reporter)
                self._ended(slot, job, Ending.CANCELLED, started)
            else:
                await self.handover.failed(job, reporter, str(outcome))
                self._ended(slot, job, Ending.FAILED, started)
        await self.handover.done(done)

    async def _reroute(self, job: Job, reporter: ProgressReporter, reroute: Reroute) -> None:
        """A job whose engine was lost before it was drawn to the end: back to the front of its turn, for another
        engine (the attempt stays counted if it was drawing, so a job that kills every worker is given up)."""
        log.warning("job %s goes back to the queue: %s", job.id, reroute.reason)
        await self.store.requeue([job.id])
        reporter.report(REROUTED)
        await reporter.finish()
        await self.queue.put_back(job.user_id, job, job.guild_id)

    def _ended(self, slot: _Slot, job: Job, ending: Ending, started: float, result: JobResult | None = None) -> None:
        """Count a job leaving its engine, and tell whoever listens."""
        now = self.clock()
        end = JobEnd(
            engine=slot.number + 1,
            device=slot.device,
            ending=ending,
            images=len(result.images) if result is not None else 0,
            waited_s=max(0.0, started - job.created_at),
            drawn_s=result.seconds if result is not None else max(0.0, now - started),
            total_s=max(0.0, now - job.created_at),
            worker=slot.engine.host,
        )
        slot.stats.ended(end, now)
        for listener in self.job_ended:
            listener(end)

    def _reporter(self, job: Job) -> ProgressReporter:
        async def edit(text: str, preview: bytes | None) -> None:
            await self.delivery.edit_status(job, text, preview=preview)

        return ProgressReporter(edit, self.clock, self.progress_interval)

    async def _source(self, job: Job) -> bytes | None:
        """The image a derived job works from; JobFailedError when it is gone."""
        if job.parent_id is None or job.source_index is None:
            return None
        parent = await self.store.get(job.parent_id)
        source = await self.sources.get(parent, job.source_index) if parent is not None else None
        if source is None:
            raise JobFailedError(IMAGE_GONE)
        return source

    async def stop(self) -> None:
        """Abandon the batches still with the engines: their jobs stay running in SQLite and run after a restart."""
        for task in self._batches:
            task.cancel()
        await asyncio.gather(*self._batches, return_exceptions=True)
