"""Frames the bot cannot use: the jobs they concern fail with a sentence, the engine restarts, nothing hangs.

The engine here is a real child process speaking real frames (tests.support.scripted_engine), so the bot's reader
meets the bytes exactly as a broken engine would send them.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from bot.pipeline.engine_client import Backoff, EngineCommand, EngineCrashed, EngineGarbled, ProcessEngine
from bot.pipeline.retries import ENGINE_GARBLED
from core.params import GenerationParams
from core.wire import GenerateRequest, JobResult, Progress
from tests.support.bots import make_bot, results
from tests.support.fake_discord import CHANNEL_ID, USER_ID, FakeDiscord
from tests.support.scripted_engine import GARBAGE

FOX = GenerationParams(prompt="fox", width=64, height=64, steps=2, seed=5)


@dataclass(frozen=True)
class ScriptedCommand(EngineCommand):
    """The scripted engine in place of `python -m engine`: garbles its first job with `kind`."""

    marker: str = ""
    kind: str = ""
    batches: int = 1

    def argv(self) -> list[str]:
        return [self.python, "-m", "tests.support.scripted_engine", self.marker, self.kind, str(self.batches)]


def scripted(tmp_path: Path, kind: str, batches: int = 1) -> ProcessEngine:
    command = ScriptedCommand("scripted", "cpu", marker=str(tmp_path / "garbled"), kind=kind, batches=batches)
    return ProcessEngine(command, backoff=Backoff(initial=0.0))


def ignore(progress: Progress) -> None:
    pass


@pytest.mark.parametrize("kind", sorted(GARBAGE))
async def test_a_frame_the_bot_cannot_use_fails_the_job_with_a_sentence_and_the_engine_starts_again(
    fake: FakeDiscord, tmp_path: Path, kind: str
) -> None:
    engine = scripted(tmp_path, kind)
    async with fake.connected(make_bot(tmp_path, engine)):
        first_pid = engine.pid
        await (await fake.slash("imagine", {"prompt": "garbled", "steps": 2})).wait_response()
        notice = await fake.wait_for(
            lambda: next((m for m in fake.messages(CHANNEL_ID) if m.reference and ENGINE_GARBLED in m.content), None),
            what="the member told",
        )
        assert notice.content == f"<@{USER_ID}> ❌ {ENGINE_GARBLED}"
        await (await fake.slash("imagine", {"prompt": "a calm fox", "steps": 2})).wait_response()
        (posted,) = await fake.wait_for(lambda: results(fake) or None, what="the next job drawn")
        assert "a calm fox" in Image.open(io.BytesIO(posted.attachments[0].data)).text["parameters"]
        assert engine.pid not in (None, first_pid), "the engine was restarted"
    with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
        assert sorted(db.execute("SELECT state FROM jobs").fetchall()) == [("delivered",), ("failed",)]


async def test_a_bad_frame_fails_the_batch_it_is_about_and_the_other_batch_in_flight_is_drawn_again(
    tmp_path: Path,
) -> None:
    engine = scripted(tmp_path, "step-past-the-end", batches=2)
    await engine.start()
    try:
        first = asyncio.ensure_future(
            engine.generate_batch([GenerateRequest("a", FOX), GenerateRequest("b", FOX)], ignore)
        )
        second = asyncio.ensure_future(engine.generate_batch([GenerateRequest("c", FOX)], ignore))
        with pytest.raises(EngineGarbled):
            await first
        with pytest.raises(EngineCrashed) as crashed:
            await second
        assert not isinstance(crashed.value, EngineGarbled), "the batch waiting behind it did nothing wrong"
        (again,) = await engine.generate_batch([GenerateRequest("c", FOX)], ignore)
        assert isinstance(again, JobResult) and [image.seed for image in again.images] == [5]
    finally:
        await engine.close()
