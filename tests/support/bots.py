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
from bot.pipeline.engines import Engines
from bot.pipeline.images import ImageStore
from bot.pipeline.progress import Clock
from core.chunking import ChunkCounter
from tests.support.fake_discord import CHANNEL_ID, GUILD_ID, USER_ID, FakeDiscord, FakeInteraction, FakeMessage

# Loading CLIP's shipped tokenizer takes about 0.1 s; a bot process does it once, and so does the test session: every
# bot the tests build shares this counter (it loads on first use and serialises its callers).
CHUNKS = ChunkCounter()


def make_bot(
    folder: Path,
    engine: Engine | Engines,
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
        engines=engine if isinstance(engine, Engines) else Engines([engine]),
        images=ImageStore(folder / "data", keep_days=30),
        limits=limits,
        guild_ids=guild_ids,
        progress_interval=0.0,
        # on_ready fires this long after the last GUILD_CREATE, which the fake sends right after READY; connected()
        # proves every event was handled with a heartbeat round trip whenever on_ready comes.
        guild_ready_timeout=0.01,
        shutdown_grace=shutdown_grace,
        clock=clock,
        chunks=CHUNKS,
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


async def drawn_order(fake: FakeDiscord, bot: SdBot, jobs: int = 50, members: int = 10) -> list[str]:
    """Jobs from several members, queued before any engine may start, then drawn: the prompts in the order the
    dispatcher handed them to engines, once every result is posted."""
    order: list[str] = []
    hand_over = bot.store.hand_over

    async def recording(job_ids: list[str], now: float, engine: str = "local") -> dict[str, int]:
        # Before any await: the batches' tasks reach it in the order the dispatcher formed them.
        order.extend(job_ids)
        return await hand_over(job_ids, now, engine)

    bot.store.hand_over = recording  # type: ignore[method-assign]
    await bot.queue.pause()
    for job in range(jobs):
        inter = await fake.slash(
            "imagine", {"prompt": f"job {job}", "steps": 2, "seed": 1}, user_id=USER_ID + job % members
        )
        await inter.wait_response()
    await fake.wait_for(lambda: len(bot.queue) == jobs or None)
    await bot.queue.resume()
    posted = await fake.wait_for(lambda: results(fake) if len(results(fake)) == jobs else None, timeout=60)
    assert sorted(m.embeds[0]["description"] for m in posted) == sorted(f"job {job}" for job in range(jobs))
    return [(await bot.store.get(job_id)).params.prompt for job_id in order]  # type: ignore[union-attr]


async def autocomplete(
    fake: FakeDiscord, command: str, options: dict[str, Any], focused: str, **how: Any
) -> list[dict[str, str]]:
    """The choices the bot offers for the `focused` option, as Discord gets them."""
    inter = await fake.autocomplete(command, options, focused, **how)
    callback = await inter.wait_response()
    assert callback.type == 8 and callback.data is not None
    return list(callback.data["choices"])
