"""Batches through the real bot: fair batches of compatible jobs, and previews on the status message."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from bot.app import SdBot
from bot.pipeline.delivery import PREVIEW_FILENAME
from bot.pipeline.engine_client import Outcome, ProgressCallback
from bot.pipeline.handover import SOMETHING_WRONG
from core.jobs import JobState
from core.wire import GenerateRequest
from tests.support.bots import make_bot, results
from tests.support.fake_discord import CHANNEL_ID, USER_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine

# Members other than the guild's owner (USER_ID + 1).
B, C, D = USER_ID + 10, USER_ID + 11, USER_ID + 12


async def queue_job(fake: FakeDiscord, bot: SdBot, user_id: int, prompt: str, width: int = 512) -> None:
    """/imagine, returning once the job is in the queue."""
    completion = asyncio.ensure_future(bot.wait_for("app_command_completion", timeout=10))
    inter = await fake.slash("imagine", {"prompt": prompt, "steps": 2, "width": width}, user_id=user_id)
    await inter.wait_response()
    await completion


async def test_compatible_jobs_of_several_members_share_a_batch_in_fair_order(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    engine = FakeEngine(max_batch=3)
    engine.gate.clear()
    bot = make_bot(tmp_path, engine)
    async with fake.connected(bot):
        await queue_job(fake, bot, USER_ID, "a1")
        await engine.wait_calls(1)
        for user, prompt, width in [
            (USER_ID, "a2", 512),
            (B, "b1", 512),
            (C, "c1", 768),
            (B, "b2", 512),
            (D, "d1", 512),
        ]:
            await queue_job(fake, bot, user, prompt, width)
        engine.gate.set()
        await fake.wait_for(lambda: len(results(fake)) == 6 or None, what="six results")
    prompts = {job_id: params.prompt for job_id, params in engine.calls}
    # Fair order while a1 runs is a2, b1, c1, d1 (everyone's first waiting job), then b2: c1 (another size)
    # waits for its own batch, and the cap of three images leaves b2 for the next.
    assert [[prompts[job] for job in batch] for batch in engine.batches] == [["a1"], ["a2", "b1", "d1"], ["c1"], ["b2"]]


async def test_the_status_shows_previews_while_drawing_and_drops_them_at_the_end(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    preview = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(preview, format="WEBP")
    engine.previews = {1: preview.getvalue()}
    engine.gate.clear()
    inter = await fake.slash("imagine", {"prompt": "a red fox", "steps": 2}, user_id=USER_ID)
    await inter.wait_response()
    ack = inter.original
    assert ack is not None
    # Steps start once the "starting" edit is done, so the first step's edit (with its preview) is not skipped.
    await fake.wait_for(lambda: "starting" in ack.content or None, what="the status saying starting")
    engine.gate.set()
    await fake.wait_for(lambda: results(fake) or None, what="the result")
    await fake.wait_for(lambda: ack.content.startswith("✅") or None, what="the status saying done")
    edits = [r for r in fake.requests if r.method == "PATCH" and r.path.endswith(f"/messages/{ack.id}")]
    assert any(PREVIEW_FILENAME in edit.files for edit in edits), "a progress edit carried the preview"
    assert ack.attachments == [], "the finished status no longer shows the preview"


class BreaksOnce(FakeEngine):
    """An engine whose first batch fails in a way nobody planned for."""

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        if not self.batches:
            self.batches.append([r.job_id for r in requests])
            raise RuntimeError("a bug")
        return await super().generate_batch(requests, on_progress)


async def test_an_unexpected_error_fails_its_jobs_with_a_sentence_and_the_queue_goes_on(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    engine = BreaksOnce()
    bot = make_bot(tmp_path, engine)
    async with fake.connected(bot):
        await queue_job(fake, bot, USER_ID, "first")
        (job_id,) = (await fake.wait_for(lambda: engine.batches or None, what="the first batch"))[0]
        sentence = f"<@{USER_ID}> ❌ {SOMETHING_WRONG.format(job=job_id)}"
        await fake.wait_for(
            lambda: any(m.content == sentence for m in fake.messages(CHANNEL_ID)) or None, what="the failure notice"
        )
        job = await bot.store.get(job_id)
        assert job is not None and job.state is JobState.FAILED
        await queue_job(fake, bot, B, "second")
        await fake.wait_for(lambda: results(fake) or None, what="the next job's result")
