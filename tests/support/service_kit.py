"""The services as the bot wires them, over a real SQLite file and image folder but no Discord: service tests drive
them through the fake interaction port (tests/support/fake_port.py)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from bot.community.store import CommunityStore
from bot.interactions.port import Caller
from bot.limits.admin_store import AdminStore
from bot.limits.quota import Quota
from bot.limits.rules import Limits
from bot.pipeline.estimates import Estimator
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.images import ImageStore
from bot.pipeline.installed import Installed
from bot.pipeline.intake import Intake
from bot.pipeline.store import JobStore
from bot.policy.store import PolicyStore
from core.infotext import ModelInfo
from core.jobs import Job, new_job_id
from core.params import GenerationParams
from core.wire import EngineReady

NOW = 1_800_000_000.0
NO_LIMITS = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_s=0.0)
RESULT_MESSAGE_ID = 820_000_000_000_000_001
READY = EngineReady(ModelInfo("kit-model", "0123456789"), "fake", 512, 512, max_pixels=4 * 512 * 512)


def job_for(caller: Caller, prompt: str = "a red fox", **params: Any) -> Job:
    """A new job as `caller` would ask for it, in their channel."""
    assert caller.channel_id is not None
    return Job(
        new_job_id(),
        GenerationParams(prompt=prompt, **params),
        caller.user_id,
        caller.user_name,
        caller.guild_id,
        caller.channel_id,
        NOW,
    )


def png(width: int, height: int) -> bytes:
    """A grey PNG of that size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "grey").save(buffer, format="PNG")
    return buffer.getvalue()


class Clock:
    """Time as the test sets it."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Kit:
    """The stores and the intake behind every service; `ready` and `closing` are the engine's and the bot's state."""

    store: JobStore
    images: ImageStore
    admin: AdminStore
    policy: PolicyStore
    community: CommunityStore
    queue: FairQueue[Job]
    quota: Quota
    intake: Intake
    clock: Clock
    ready: EngineReady | None = READY
    closing: bool = False

    def engine_ready(self) -> EngineReady | None:
        """What the engine reported, as services ask for it."""
        return self.ready

    async def delivered(
        self,
        job: Job,
        *,
        result_message_id: int = RESULT_MESSAGE_ID,
        flagged: tuple[int, ...] = (),
        kept: bool = True,
    ) -> Job:
        """`job` as the dispatcher leaves it once its result is posted: stored, drawn (its images `kept` on disk,
        those in `flagged` flagged by the checker), delivered."""
        await self.store.add(job)
        await self.store.mark_done(job.id, self.clock(), 1.0, READY.model, flagged)
        await self.store.mark_delivered(job.id, result_message_id)
        if kept:
            self.images.save(job.id, [png(job.params.width, job.params.height)] * job.params.count)
        stored = await self.store.get(job.id)
        assert stored is not None
        return stored


@asynccontextmanager
async def service_kit(
    folder: Path, *, limits: Limits = NO_LIMITS, allow_dms: bool = False, installed: Installed | None = None
) -> AsyncIterator[Kit]:
    """A kit whose database and images live in `folder`, open for the test's duration."""
    store = JobStore(folder / "sdbot.sqlite3")
    await store.open()
    try:
        clock = Clock()
        admin = AdminStore(store)
        queue: FairQueue[Job] = FairQueue()
        quota = Quota(store=store, admin=admin, defaults=limits, clock=clock)
        policy = PolicyStore(admin)
        intake = Intake(
            store=store,
            queue=queue,
            quota=quota,
            estimator=Estimator(admin),
            running=list,
            # The kit's own flag, read when a job comes in (as the bot's `closing` is).
            closing=lambda: kit.closing,
            clock=clock,
            policy=policy,
            installed=installed,
            allow_dms=allow_dms,
        )
        kit = Kit(
            store=store,
            images=ImageStore(folder / "data", keep_days=30),
            admin=admin,
            policy=policy,
            community=CommunityStore(store),
            queue=queue,
            quota=quota,
            intake=intake,
            clock=clock,
        )
        yield kit
    finally:
        await store.close()
