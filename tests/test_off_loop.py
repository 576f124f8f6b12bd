"""The bot's CPU work on images (re-encoding to fit the upload limit, reading sizes and infotext back) runs beside
the event loop, which must stay free for Discord's heartbeats and the 3-second answers.

Each probe wraps the real function and notes, per call, whether an event loop was running in the calling thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.bots import make_bot, results
from tests.support.community import (
    art_posts,
    first_result,
    guild_with_art_channel,
    job_id_of,
    private_followup,
    set_art_channel,
)
from tests.support.fake_discord import CHANNEL_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine


class Probe:
    """Calls the wrapped function; `on_loop` holds, per call, whether it ran in the event loop's thread."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.on_loop: list[bool] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        return self.function(*args, **kwargs)


def probe(monkeypatch: pytest.MonkeyPatch, target: str) -> Probe:
    """Wrap the function at `target` ("module.name") in a Probe."""
    module_name, name = target.rsplit(".", 1)
    module = __import__(module_name, fromlist=[name])
    wrapped = Probe(getattr(module, name))
    monkeypatch.setattr(module, name, wrapped)
    return wrapped


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(guilds=[guild_with_art_channel()]) as fake:
        yield fake
        fake.assert_clean()


async def test_a_result_over_the_upload_limit_is_reencoded_beside_the_event_loop(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit_under = probe(monkeypatch, "bot.pipeline.delivery.fit_under")
    async with fake.connected(make_bot(tmp_path, FakeEngine(noise=True))):
        inter = await fake.slash("imagine", {"prompt": "fox", "steps": 1}, attachment_size_limit=200_000)
        await inter.wait_response()
        (posted,) = await fake.wait_for(lambda: results(fake) or None)
    assert posted.attachments[0].filename.endswith(".webp"), "it was re-encoded"
    assert fit_under.on_loop == [False]


async def test_a_shared_image_is_fitted_to_the_upload_limit_beside_the_event_loop(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fake.connected(make_bot(tmp_path, FakeEngine())):
        grid = await first_result(fake, {"prompt": "fox", "count": 2, "steps": 1})
        await set_art_channel(fake)
        fit_under = probe(monkeypatch, "bot.pipeline.delivery.fit_under")
        await private_followup(fake, await fake.press(grid, f"sdbot:share:{job_id_of(grid)}:2"))
        assert len(art_posts(fake)) == 1
    assert fit_under.on_loop == [False]


async def test_a_press_reads_its_image_beside_the_event_loop(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fake.connected(make_bot(tmp_path, FakeEngine())):
        single = await first_result(fake, {"prompt": "fox", "steps": 1, "width": 256, "height": 192})
        # Only the press opens an image: results are PNGs within the limit, and the fake reads PNG headers itself.
        opened = probe(monkeypatch, "PIL.Image.open")
        await (await fake.press(single, f"sdbot:vary-subtle:{job_id_of(single)}:1")).wait_response()
        await fake.wait_for(lambda: len(results(fake)) == 2)
    assert opened.on_loop == [False]


async def test_a_result_delivered_after_a_restart_reads_its_infotext_beside_the_event_loop(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fake.connected(make_bot(tmp_path, FakeEngine())):
        await first_result(fake, {"prompt": "fox", "count": 2, "steps": 1})
    # As if the bot had been stopped after drawing, before posting.
    with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
        db.execute("UPDATE jobs SET state = 'done', result_message_id = NULL")
    infotext_of = probe(monkeypatch, "bot.pipeline.handover.infotext_of")

    def posted() -> bool:
        return sum(r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages" for r in fake.requests) == 2

    async with fake.connected(make_bot(tmp_path, FakeEngine())):
        await fake.wait_for(posted, what="the delivery after the restart")
    assert infotext_of.on_loop == [False, False]
