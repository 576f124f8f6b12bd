"""The bot as the end-to-end tests build it: real SQLite and kept images in a temporary folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bot.app import NO_LIMITS, SdBot
from bot.limits.rules import Limits
from bot.pipeline.database import Database
from bot.pipeline.delivery import PREVIEW_FILENAME
from bot.pipeline.engine_client import Engine
from bot.pipeline.images import ImageStore
from bot.pipeline.progress import Clock
from tests.support.fake_discord import CHANNEL_ID, GUILD_ID, FakeDiscord, FakeInteraction, FakeMessage


def make_bot(
    folder: Path,
    engine: Engine,
    *,
    limits: Limits = NO_LIMITS,
    shutdown_grace: float = 0.0,
    clock: Clock = time.time,
    guild_ids: tuple[int, ...] = (GUILD_ID,),
    **options: Any,
) -> SdBot:
    """A bot whose database and images live in `folder`; a job still running at close runs again next start.

    Commands are synced to the test guild (`guild_ids=()`: globally, as DMs need); `options` go to SdBot as they are
    (a LoRA folder, the models, …)."""
    return SdBot(
        database=Database(folder / "sdbot.sqlite3"),
        engine=engine,
        images=ImageStore(folder / "data", keep_days=30),
        limits=limits,
        guild_ids=guild_ids,
        progress_interval=0.0,
        guild_ready_timeout=0.05,
        shutdown_grace=shutdown_grace,
        clock=clock,
        **options,
    )


def results(fake: FakeDiscord) -> list[FakeMessage]:
    """The result posts in the test channel (those with images, not a status with its preview), not deleted."""
    return [
        m
        for m in fake.messages(CHANNEL_ID)
        if m.attachments and not m.deleted and m.attachments[0].filename != PREVIEW_FILENAME
    ]


async def answer(inter: FakeInteraction) -> str:
    """The text of an interaction's first answer, once it has come."""
    callback = await inter.wait_response()
    assert callback.data is not None
    return str(callback.data["content"])
