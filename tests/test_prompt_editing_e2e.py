"""Prompt editing and the hires fix through the real bot and a real engine process on the tiny model: a job with a
schedule batches with plain jobs and draws what it draws alone; a hires fix posts its output size."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bot.app import SdBot
from bot.pipeline.engine_client import EngineCommand, Outcome, ProcessEngine, ProgressCallback
from core.infotext import parse_infotext
from core.wire import GenerateRequest
from tests.support.bots import answer, make_bot, results
from tests.support.fake_discord import USER_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine

OTHER = USER_ID + 5
EDITED = "[a red cat:a blue dog:1], night"


class Recording(ProcessEngine):
    """The real engine process, recording the prompts of each batch it is handed."""

    def __init__(self, command: EngineCommand) -> None:
        super().__init__(command)
        self.batches: list[list[str]] = []

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        self.batches.append([request.params.prompt for request in requests])
        return await super().generate_batch(requests, on_progress)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


async def test_a_prompt_editing_job_batched_with_plain_jobs_draws_as_alone_and_hires_posts_its_size(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    engine = Recording(EngineCommand(model=str(tiny_model_dir), device="cpu"))
    bot = make_bot(tmp_path, engine)
    common = {"steps": 4, "sampler": "DDIM", "seed": 11}
    async with fake.connected(bot, timeout=120):
        await bot.queue.pause()
        for user, prompt in ((USER_ID, "a fox"), (OTHER, EDITED), (USER_ID + 6, "an owl")):
            inter = await fake.slash("imagine", {"prompt": prompt, **common}, user_id=user)
            await inter.wait_response()
        await fake.wait_for(lambda: len(bot.queue) == 3 or None)
        await bot.queue.resume()
        batched = await fake.wait_for(lambda: results(fake) if len(results(fake)) == 3 else None, timeout=60)
        inter = await fake.slash("imagine", {"prompt": EDITED, **common}, user_id=OTHER)
        await inter.wait_response()
        alone = (await fake.wait_for(lambda: results(fake) if len(results(fake)) == 4 else None, timeout=60))[-1]
        inter = await fake.slash("imagine", {"prompt": "a fox", "steps": 2, "hires": "2×", "seed": 3})
        await inter.wait_response()
        hires = (await fake.wait_for(lambda: results(fake) if len(results(fake)) == 5 else None, timeout=60))[-1]
    assert sorted(engine.batches[0]) == sorted(["a fox", EDITED, "an owl"]) and engine.batches[1] == [EDITED]
    (in_batch,) = [m for m in batched if m.embeds[0]["description"] == EDITED]
    batched_pixels, alone_pixels = pixels(in_batch.attachments[0].data), pixels(alone.attachments[0].data)
    assert np.abs(batched_pixels - alone_pixels).max() <= 3
    image = Image.open(io.BytesIO(hires.attachments[0].data))
    assert image.size == (128, 128)
    info = parse_infotext(image.text["parameters"])
    assert info is not None and "Size: 64x64" in image.text["parameters"]
    assert (info.get("Hires upscale"), info.get("Hires upscaler"), info.get("Denoising strength")) == (
        "2",
        "Latent",
        "0.5",
    )


async def test_a_prompt_edit_past_the_last_step_gets_a_sentence_and_nothing_is_queued(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    inter = await fake.slash("imagine", {"prompt": "[a red cat:a blue dog:30]", "steps": 20})
    text = await answer(inter)
    assert inter.ephemeral and text.startswith("`[a red cat:a blue dog:30]` switches at step 30, but the job draws 20")
    assert len(bot.queue) == 0 and engine.calls == []
