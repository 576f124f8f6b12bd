"""/describe end to end: the real bot against the fake Discord, the real captioning child process on a tiny random
BLIP, and its prompts' buttons running /imagine."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import SdBot
from bot.describe.command import BUSY
from bot.describe.runner import NOT_INSTALLED
from bot.results.buttons import ImageAction, Press
from tests.support.bots import answer, make_bot
from tests.support.fake_discord import CHANNEL_ID, OWNER_ID, USER_ID, FakeDiscord
from tests.support.fake_discord.config import FakeFile
from tests.support.fake_engine import FakeEngine
from tests.support.tiny_blip import save_tiny_blip

OTHER = USER_ID + 5


def upload(name: str = "photo.png", data: bytes | None = None, kind: str = "image/png") -> FakeFile:
    if data is None:
        buffer = io.BytesIO()
        Image.new("RGB", (48, 32), (200, 120, 40)).save(buffer, format="PNG")
        data = buffer.getvalue()
    return FakeFile(name, data, kind)


@pytest.fixture(scope="module")
def blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture
async def bot(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path, blip: Path) -> AsyncIterator[SdBot]:
    client = make_bot(tmp_path, engine, describe_model=blip)
    async with fake.connected(client):
        yield client


async def test_describe_answers_four_prompts_whose_buttons_imagine_them(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    inter = await fake.slash("describe", {"image": upload()}, user_id=USER_ID)
    answered = await inter.wait_original(lambda m: m.content.startswith("**Prompts for photo.png**"), timeout=120)
    lines = answered.content.splitlines()[1:]
    assert [line.split(" ", 1)[0] for line in lines] == ["**1.**", "**2.**", "**3.**", "**4.**"]
    prompts = [line.split(" ", 1)[1] for line in lines]
    assert len(set(prompts)) == 4 and all(p.strip() for p in prompts)
    ids = answered.custom_ids()
    assert [Press.parse(i).index for i in ids] == [1, 2, 3, 4]
    press = await fake.press(answered, ids[1], user_id=OTHER)
    await press.wait_response()
    await fake.wait_for(lambda: engine.calls or None)
    (job_id, params) = engine.calls[0]
    assert params.prompt == prompts[1]
    job = await bot.store.get(job_id)
    assert job is not None and (job.user_id, job.channel_id) == (OTHER, CHANNEL_ID)


async def test_what_is_not_an_image_gets_the_image_prompts_sentence(fake: FakeDiscord, bot: SdBot) -> None:
    inter = await fake.slash("describe", {"image": upload("notes.txt", b"hello", "text/plain")})
    assert await answer(inter) == "notes.txt is not a PNG, JPEG or WebP image: attach one of those."
    assert inter.ephemeral


async def test_without_a_captioning_model_describe_says_how_to_install_one(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path
) -> None:
    async with fake.connected(make_bot(tmp_path, engine)):
        inter = await fake.slash("describe", {"image": upload()})
        assert await answer(inter) == NOT_INSTALLED
        assert inter.ephemeral


async def test_a_banned_member_and_a_second_request_at_once_get_a_sentence(fake: FakeDiscord, bot: SdBot) -> None:
    service = bot.registry.presses[ImageAction.DESCRIBE].__self__  # type: ignore[union-attr]
    async with service.describer._one:
        # While one image is described, another request is refused, not queued past Discord's 15 minutes.
        busy = await fake.slash("describe", {"image": upload()}, user_id=OTHER)
        assert await answer(busy) == BUSY
    ban = await fake.slash("sdadmin", {"member": USER_ID, "reason": "spam"}, subcommand="ban", user_id=OWNER_ID)
    await answer(ban)
    inter = await fake.slash("describe", {"image": upload()}, user_id=USER_ID)
    assert await answer(inter) == "You can't use me in this server: an admin has banned you (spam)."
