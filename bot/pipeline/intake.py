"""Taking a job in, for /imagine and buttons alike: checks, then store → acknowledge → queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from bot.interactions.port import Caller, Responder, ResponseFailed
from bot.limits.pauses import hold_reason
from bot.limits.quota import Quota
from bot.pipeline.estimates import Estimator
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.installed import Installed
from bot.pipeline.progress import Clock
from bot.pipeline.store import JobStore
from bot.policy.rules import blocked_sentence
from bot.policy.store import PolicyStore
from bot.results.buttons import cancel_view
from bot.results.render import WORKERS_UNREACHABLE, queued_text
from core.jobs import Job, new_job_id
from core.params import GenerationParams, InvalidParams
from core.wire import EngineReady

log = logging.getLogger(__name__)

RESTARTING = "I'm restarting: try again in a minute."
DMS_OFF = "I only work in servers: use me in a server we share."


def check_channel(caller: Caller) -> int:
    """The channel id results go to, or InvalidParams when the bot cannot post there."""
    if caller.channel_id is None:
        raise InvalidParams("I can only draw in a channel.")
    if caller.bot_missing:
        raise InvalidParams(
            f"I can't post images in this channel: ask an admin to give me {', '.join(caller.bot_missing)} here,"
            " or use me in another channel."
        )
    return caller.channel_id


ENGINE_STARTING = "The image engine is starting up: try again in a minute."


def ready_engine(engine_ready: Callable[[], EngineReady | None]) -> EngineReady:
    """What the engine can draw, or InvalidParams while it is still starting."""
    ready = engine_ready()
    if ready is None:
        raise InvalidParams(ENGINE_STARTING)
    return ready


def check_fits(params: GenerationParams, engine: EngineReady, family: str | None) -> None:
    """InvalidParams when the job would draw more pixels at once than the device holds with its model (of
    `family`; None for the default model)."""
    limit = engine.pixels_for(family)
    if limit == 0:
        name = params.model or "the default model"
        raise InvalidParams(f"{name} needs more memory than this GPU has: pick another model.")
    if params.pixels > limit:
        width, height = params.output_size
        what = f"{width}×{height}" + (f" × {params.count} images" if params.count > 1 else "")
        fix = "work from a smaller image" if params.needs_source else "lower the width, height or count"
        if params.hires:
            fix = "lower the width, height, count or hires scale"
        raise InvalidParams(
            f"{what} is more than this GPU can draw at once ({limit / 1e6:.1f} megapixels at most): {fix}."
        )


class Intake:
    """Every job is in SQLite before its member is acknowledged, and acknowledged before it is queued.

    The member's limits are checked and the job stored in one step, so a burst of presses cannot overshoot.
    """

    def __init__(
        self,
        *,
        store: JobStore,
        queue: FairQueue[Job],
        quota: Quota,
        estimator: Estimator,
        running: Callable[[], list[tuple[GenerationParams, float]]],
        closing: Callable[[], bool],
        clock: Clock,
        policy: PolicyStore,
        installed: Installed | None = None,
        allow_dms: bool = False,
        stalled: Callable[[], bool] = lambda: False,
        quiet: Callable[[int, int | None], bool] = lambda user_id, guild_id: False,
    ) -> None:
        # Whether a member wants results posted without a ping, there (their /settings).
        self.quiet = quiet
        # Whether no job can start now for want of a reachable engine (Redis is down and all engines are remote).
        self.stalled = stalled
        self.installed = installed or Installed()
        self.store = store
        self.queue = queue
        self.quota = quota
        self.estimator = estimator
        self.running = running
        self.closing = closing
        self.clock = clock
        self.policy = policy
        self.allow_dms = allow_dms

    def check_fits(self, params: GenerationParams, engine: EngineReady) -> None:
        """`check_fits` with the memory budget of the model the job names."""
        check_fits(params, engine, self.installed.models.family(params.model))

    def new_job(self, caller: Caller, params: GenerationParams, channel_id: int, job_id: str | None = None) -> Job:
        """A new job for `caller`, posting in `channel_id`."""
        return Job(
            id=job_id or new_job_id(),
            params=params,
            user_id=caller.user_id,
            user_name=caller.user_name,
            guild_id=caller.guild_id,
            channel_id=channel_id,
            created_at=self.clock(),
        )

    def _queued_text(self, job: Job, turns: int) -> str:
        position = self.queue.next_position(job.user_id, job.guild_id, turns)
        ahead = [queued.params for queued in self.queue.order()[: position - 1]]
        now = self.clock()
        held = hold_reason(self.queue, job.guild_id)
        if held is None and self.stalled():
            return WORKERS_UNREACHABLE
        return queued_text(position, self.estimator.start_at(ahead, self.running(), now), now, held)

    async def _admit(self, caller: Caller, job: Job) -> Job:
        """The job as the channel's policy takes it, or InvalidParams with the sentence refusing it."""
        if self.closing():
            raise InvalidParams(RESTARTING)
        if job.guild_id is None and not self.allow_dms:
            # Discord offers no command in DMs then, but buttons and modals on older messages still arrive from there.
            raise InvalidParams(DMS_OFF)
        # Off the event loop: counting a long prompt's tokens takes milliseconds.
        await asyncio.to_thread(self.installed.check, job.params)
        policy = await self.policy.policy(job.guild_id)
        rules = policy.rules(caller.policy_channel_id, caller.age_restricted)
        # Only the prompt: negative prompts name what to keep out, often the very words a block list holds.
        found = rules.block_list.find(job.params.prompt)
        if found is not None:
            log.info("job %s refused for %s: blocked %r", job.id, job.user_id, found)
            raise InvalidParams(blocked_sentence(found))
        return replace(
            job,
            size_limit=caller.upload_limit,
            on_flagged=rules.on_flagged,
            quiet=self.quiet(job.user_id, job.guild_id),
        )

    async def precheck(self, caller: Caller, responder: Responder, job: Job) -> bool:
        """Everything `accept` checks (a ban and the limits included) without reserving: for work that must only be
        done for a job that may run, such as downloading its image. Answers a refusal itself; False then."""
        try:
            await self.quota.check(await self._admit(caller, job), caller.role_ids)
        except InvalidParams as exc:
            await responder.reply_privately(str(exc))
            return False
        return True

    async def accept(self, caller: Caller, responder: Responder, job: Job) -> Job | None:
        """Check the channel's content policy, reserve within the limits (or refuse), acknowledge, queue.

        The public acknowledgement replaces a public "thinking…" when the caller of `accept` deferred."""
        try:
            job = await self._admit(caller, job)
            limits = await self.quota.reserve(job, caller.role_ids)
        except InvalidParams as exc:
            await responder.reply_privately(str(exc))
            return None
        try:
            message_id = await responder.acknowledge(self._queued_text(job, limits.turns), cancel_view(job))
        except ResponseFailed as exc:
            # The member saw "interaction failed" and will likely ask again: running this one too would double it.
            log.warning("job %s: could not acknowledge, dropping it: %s", job.id, exc)
            await self.store.mark_failed(job.id, "Discord refused the acknowledgement.", self.clock())
            return None
        await self.store.set_message(job.id, message_id)
        job = job.with_message(message_id)
        await self.queue.put(job.user_id, job, job.guild_id, turns=limits.turns)
        log.info("job %s queued for %s (%s): %s", job.id, job.user_name, job.user_id, job.params)
        return job
