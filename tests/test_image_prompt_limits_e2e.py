"""An image prompt costs a download, a decode and a file kept for days: none of it for a member who may not run it."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.app import SdBot
from bot.limits.rules import Limits
from tests.support.bots import answer, make_bot
from tests.support.fake_discord import OWNER_ID, USER_ID, FakeDiscord, FakeFile, FakeInteraction
from tests.support.fake_engine import FakeEngine

NOW = 1_800_000_000.0


def png_file() -> FakeFile:
    pixels = np.random.default_rng(3).integers(0, 256, (96, 128, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return FakeFile("src.png", buffer.getvalue(), "image/png")


def downloads(fake: FakeDiscord) -> int:
    return len([r for r in fake.requests if r.path.startswith("/attachments/")])


def kept_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data").rglob("*.png"))


async def sentence(inter: FakeInteraction) -> str:
    """A refusal: only the member sees it."""
    text = await answer(inter)
    assert inter.ephemeral
    return text


async def with_image(fake: FakeDiscord, **options: Any) -> FakeInteraction:
    return await fake.slash("imagine", {"prompt": "fox", "steps": 2, "image": png_file(), **options})


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


async def start(fake: FakeDiscord, tmp_path: Path, limits: Limits, clock: list[float]) -> tuple[SdBot, FakeEngine]:
    engine = FakeEngine()
    engine.gate.clear()
    return make_bot(tmp_path, engine, limits=limits, clock=lambda: clock[0]), engine


async def test_a_banned_member_s_image_is_not_downloaded(fake: FakeDiscord, tmp_path: Path, clock: list[float]) -> None:
    bot, _engine = await start(fake, tmp_path, Limits(None, None, None, 0.0), clock)
    async with fake.connected(bot):
        ban = await fake.slash("sdadmin", {"member": USER_ID, "reason": "spam"}, subcommand="ban", user_id=OWNER_ID)
        await ban.wait_response()
        assert (await sentence(await with_image(fake))).startswith("You can't use me in this server")
    assert downloads(fake) == 0 and kept_files(tmp_path) == []


@pytest.mark.parametrize(
    ("limits", "refusal"),
    [
        (Limits(images_per_hour=1, images_per_day=None, max_queued=None, cooldown_s=0.0), "You have used 1 of"),
        (Limits(images_per_hour=None, images_per_day=1, max_queued=None, cooldown_s=0.0), "You have used 1 of"),
        (Limits(images_per_hour=None, images_per_day=None, max_queued=1, cooldown_s=0.0), "You already have 1"),
        (Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_s=60.0), "Slow down"),
    ],
)
async def test_a_member_over_a_limit_gets_the_sentence_before_any_download(
    fake: FakeDiscord, tmp_path: Path, clock: list[float], limits: Limits, refusal: str
) -> None:
    bot, _engine = await start(fake, tmp_path, limits, clock)
    async with fake.connected(bot):
        assert (await answer(await fake.slash("imagine", {"prompt": "first", "steps": 1}))).startswith("⏳ Queued")
        clock[0] += 1
        assert (await sentence(await with_image(fake))).startswith(refusal)
    assert downloads(fake) == 0 and kept_files(tmp_path) == []


async def test_an_image_job_refused_after_its_download_keeps_no_file(
    fake: FakeDiscord, tmp_path: Path, clock: list[float]
) -> None:
    bot, _engine = await start(fake, tmp_path, Limits(None, None, None, cooldown_s=60.0), clock)
    async with fake.connected(bot):
        fake.downloads.clear()
        slow = await with_image(fake)
        handled = asyncio.ensure_future(
            bot.wait_for("app_command_completion", check=lambda interaction, _: interaction.id == slow.id, timeout=10)
        )
        await fake.wait_for(lambda: slow.deferred or None, what="the download begun")
        # Meanwhile the member's other command takes the turn the cooldown allows.
        assert (await answer(await fake.slash("imagine", {"prompt": "quick", "steps": 1}))).startswith("⏳ Queued")
        fake.downloads.set()
        await handled
        (refused,) = slow.followups
        assert refused.content.startswith("Slow down") and refused.ephemeral
    assert downloads(fake) == 1 and kept_files(tmp_path) == []


async def test_an_allowed_image_job_keeps_its_image(fake: FakeDiscord, tmp_path: Path, clock: list[float]) -> None:
    bot, engine = await start(fake, tmp_path, Limits(None, None, None, 0.0), clock)
    async with fake.connected(bot):
        await with_image(fake)
        await engine.wait_calls(1)
    ((job_id, _params),) = engine.calls
    assert downloads(fake) == 1 and kept_files(tmp_path) == [tmp_path / "data" / "jobs" / job_id / "0.png"]
