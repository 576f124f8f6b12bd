"""Nothing lost, nothing twice: restarts, engine crashes, expired tokens, upload limits, refused edits."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from bot.app import SdBot
from bot.pipeline.engine_client import Backoff, EngineCommand, Outcome, ProcessEngine, ProgressCallback
from bot.pipeline.intake import RESTARTING
from bot.pipeline.retries import ENGINE_CRASHED
from core.pngmeta import read_user_comment
from core.wire import GenerateRequest, Progress
from tests.support.bots import make_bot, results
from tests.support.fake_discord import CHANNEL_ID, USER_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine


async def test_a_result_drawn_but_not_delivered_is_posted_exactly_once_after_a_restart(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with fake.connected(make_bot(tmp_path, FakeEngine())):
        await (await fake.slash("imagine", {"prompt": "fox", "count": 2, "steps": 1})).wait_response()
        (first,) = await fake.wait_for(lambda: results(fake) or None)
    # As if the bot had been killed after posting but before recording the delivery.
    with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
        db.execute("UPDATE jobs SET state = 'done', result_message_id = NULL")
    engine = FakeEngine()
    async with fake.connected(make_bot(tmp_path, engine)):
        await fake.wait_for(lambda: len(posts(fake)) == 2, what="the delivery after the restart")
    assert results(fake) == [first], "the second post carried the same nonce, so Discord kept the first"
    assert posts(fake)[0].json["nonce"] == posts(fake)[1].json["nonce"]
    assert engine.calls == [], "nothing was drawn again"
    with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
        assert db.execute("SELECT state, result_message_id FROM jobs").fetchall() == [("delivered", first.id)]


def posts(fake: FakeDiscord) -> list:  # type: ignore[type-arg]
    return [r for r in fake.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"]


async def test_an_expired_interaction_token_loses_nothing(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    engine.gate.clear()
    inter = await fake.slash("imagine", {"prompt": "fox", "steps": 2})
    await inter.wait_response()
    fake.expire(inter)  # the 15 minutes have passed: webhook calls now answer 401/50027
    engine.gate.set()
    (posted,) = await fake.wait_for(lambda: results(fake) or None)
    assert posted.content == f"<@{USER_ID}>"
    ack = inter.original
    assert ack is not None
    await fake.wait_for(lambda: ack.content.startswith("✅ Done"), what="the status edited by the bot token")


async def test_an_image_over_the_upload_limit_arrives_reencoded_with_its_infotext(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with fake.connected(make_bot(tmp_path, FakeEngine(noise=True))):
        inter = await fake.slash("imagine", {"prompt": "fox", "seed": 3, "steps": 1}, attachment_size_limit=200_000)
        await inter.wait_response()
        (posted,) = await fake.wait_for(lambda: results(fake) or None)
    (attachment,) = posted.attachments
    assert attachment.size <= 200_000 and attachment.filename.endswith((".webp", ".jpg"))
    infotext = read_user_comment(attachment.data)
    assert infotext is not None and infotext.startswith("fox\nSteps: 1, ") and "Seed: 3," in infotext
    assert Image.open(io.BytesIO(attachment.data)).size == (512, 512)


async def test_refused_edits_stop_and_a_429_does_not_drop_the_result(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    engine.gate.clear()
    inter = await fake.slash("imagine", {"prompt": "fox", "steps": 30})
    await inter.wait_response()
    ack = inter.original
    assert ack is not None
    fake.fail_next("PATCH", rf"^/channels/{CHANNEL_ID}/messages/{ack.id}$", 400, 30046, "Too many edits")
    fake.fail_next("POST", rf"^/channels/{CHANNEL_ID}/messages$", 429, 0, "You are being rate limited.")
    engine.gate.set()
    await fake.wait_for(lambda: results(fake) or None, what="the result despite the 429")
    edits = [r for r in fake.requests if r.method == "PATCH" and r.path.endswith(f"/messages/{ack.id}")]
    assert len(edits) == 1, "after Discord refused an edit, the bot stopped editing that message"


class CrashOnPrompt(ProcessEngine):
    """The real engine process, killed with SIGKILL at the first step of any batch with a prompt saying "crash"."""

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        def progress(step: Progress) -> None:
            on_progress(step)
            if any("crash" in r.params.prompt for r in requests) and self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)

        return await super().generate_batch(requests, progress)


async def test_the_engine_may_die_but_the_bot_may_not(fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = CrashOnPrompt(EngineCommand(model=str(tiny_model_dir), device="cpu"), backoff=Backoff(initial=0.0))
    async with fake.connected(make_bot(tmp_path, engine), timeout=120) as client:
        first_pid = engine.pid
        crashing = await fake.slash("imagine", {"prompt": "crash me", "steps": 2})
        await crashing.wait_response()
        notice = await fake.wait_for(
            lambda: next((m for m in fake.messages(CHANNEL_ID) if "gave up" in m.content and m.reference), None),
            timeout=60,
        )
        assert notice.content == f"<@{USER_ID}> ❌ {ENGINE_CRASHED}"
        await (await fake.slash("imagine", {"prompt": "a calm fox", "steps": 2})).wait_response()
        (posted,) = await fake.wait_for(lambda: results(fake) or None, timeout=60)
        assert "a calm fox" in Image.open(io.BytesIO(posted.attachments[0].data)).text["parameters"]
        assert engine.pid not in (None, first_pid) and not client.is_closed()
    with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
        assert sorted(db.execute("SELECT state FROM jobs").fetchall()) == [("delivered",), ("failed",)]


async def test_a_stopping_bot_refuses_new_jobs_and_lets_the_running_one_finish(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path
) -> None:
    engine.gate.clear()
    client = make_bot(tmp_path, engine, shutdown_grace=30.0)
    async with fake.connected(client):
        await (await fake.slash("imagine", {"prompt": "running", "steps": 1})).wait_response()
        await engine.wait_calls(1)
        closing = asyncio.create_task(client.close())
        await fake.wait_for(lambda: client.closing or None)
        refused = await fake.slash("imagine", {"prompt": "too late", "steps": 1})
        assert (await refused.wait_response()).data["content"] == RESTARTING  # type: ignore[index]
        assert refused.ephemeral
        engine.gate.set()
        await closing
    assert [p.prompt for _, p in engine.calls] == ["running"]
    with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
        assert db.execute("SELECT state FROM jobs").fetchall() == [("delivered",)]


async def test_a_job_that_took_the_bot_down_with_it_twice_is_failed_at_the_next_start_not_drawn(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with fake.connected(make_bot(tmp_path, engine)):
        await (await fake.slash("imagine", {"prompt": "poison", "steps": 1})).wait_response()
        await engine.wait_calls(1)
        with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
            assert db.execute("SELECT attempts FROM jobs").fetchall() == [(1,)], "counted when handed to the engine"
    with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
        # A clean stop abandoned it through no fault of its own: the attempt was given back.
        assert db.execute("SELECT state, attempts FROM jobs").fetchall() == [("running", 0)]
        # As two deaths of the whole bot while drawing it would have left it.
        db.execute("UPDATE jobs SET attempts = 2")
    again = FakeEngine()
    async with fake.connected(make_bot(tmp_path, again)):
        notice = await fake.wait_for(
            lambda: next((m for m in fake.messages(CHANNEL_ID) if m.reference and ENGINE_CRASHED in m.content), None)
        )
        assert notice.content == f"<@{USER_ID}> ❌ {ENGINE_CRASHED}"
    assert again.calls == []
    with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
        assert db.execute("SELECT state FROM jobs").fetchall() == [("failed",)]
