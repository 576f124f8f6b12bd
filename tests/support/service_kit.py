"""The pipeline and stores as the app builds them (bot.features.build_shared), over a real SQLite file, an image
folder and the fake engine but no Discord: service tests drive the services through the fake interaction port
(tests/support/fake_port.py)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
from PIL import Image

from bot.community.store import CommunityStore
from bot.features import Options, Shared, build_shared
from bot.interactions.port import Caller
from bot.limits.admin_store import AdminStore
from bot.limits.quota import Quota
from bot.limits.rules import Limits
from bot.models.picker import Models
from bot.pipeline.database import Database
from bot.pipeline.engines import Engines
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.images import ImageStore
from bot.pipeline.intake import Intake
from bot.pipeline.store import Done, JobStore
from bot.policy.store import PolicyStore
from core.jobs import Job, new_job_id
from core.params import GenerationParams
from core.wire import EngineReady
from tests.support.bots import CHUNKS
from tests.support.fake_engine import MODEL, FakeEngine

NOW = 1_800_000_000.0
NO_LIMITS = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_s=0.0)
RESULT_MESSAGE_ID = 820_000_000_000_000_001


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
    """The pipeline and stores as the app builds them (never started: no dispatcher runs), and the bot's state."""

    shared: Shared
    engine: FakeEngine
    community: CommunityStore
    closing: bool = False

    @property
    def store(self) -> JobStore:
        return self.shared.jobs

    @property
    def images(self) -> ImageStore:
        return self.shared.images

    @property
    def admin(self) -> AdminStore:
        return self.shared.admin

    @property
    def policy(self) -> PolicyStore:
        return self.shared.policy

    @property
    def queue(self) -> FairQueue[Job]:
        return self.shared.queue

    @property
    def quota(self) -> Quota:
        return self.shared.quota

    @property
    def intake(self) -> Intake:
        return self.shared.intake

    @property
    def clock(self) -> Clock:
        assert isinstance(self.shared.clock, Clock)
        return self.shared.clock

    def engine_ready(self) -> EngineReady | None:
        """What the engine reported (None until it has started), as services ask for it."""
        return self.shared.engine_ready()

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
        await self.store.mark_done([Done(job.id, 1.0, MODEL, flagged)], self.clock())
        await self.store.mark_delivered(job.id, result_message_id)
        if kept:
            self.images.save(job.id, [png(job.params.width, job.params.height)] * job.params.count)
        stored = await self.store.get(job.id)
        assert stored is not None
        return stored


@asynccontextmanager
async def service_kit(folder: Path, *, limits: Limits = NO_LIMITS, allow_dms: bool = False) -> AsyncIterator[Kit]:
    """A kit whose database and images live in `folder`, its engine ready, open for the test's duration."""
    database = Database(folder / "sdbot.sqlite3")
    await database.open()
    try:
        engine = FakeEngine()
        await engine.start()
        shared = build_shared(
            # Never connected: services reach Discord only through the port here.
            discord.Client(intents=discord.Intents(guilds=True)),
            database=database,
            engines=Engines([engine]),
            images=ImageStore(folder / "data", keep_days=30),
            models=Models(),
            chunks=CHUNKS,
            options=Options(limits=limits, clock=Clock(), allow_dms=allow_dms),
            # The kit's own flag, read when a job comes in (as the bot's `closing` is).
            closing=lambda: kit.closing,
        )
        kit = Kit(shared=shared, engine=engine, community=CommunityStore(database))
        yield kit
    finally:
        await database.close()
