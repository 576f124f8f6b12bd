"""/imagine end to end: the real discord.py client against the fake Discord, real SQLite, and an engine."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import discord
import numpy as np
import pytest
from PIL import Image

from bot.app import SdBot
from bot.pipeline.engine_client import EngineCommand, ProcessEngine
from core.jobs import JobState
from core.params import SAMPLERS
from tests.support.bots import make_bot, results
from tests.support.fake_discord import CHANNEL_ID, GUILD_ID, USER_ID, FakeDiscord, FakeInteraction
from tests.support.fake_engine import FakeEngine

OTHER_USER = USER_ID + 5  # not OWNER_ID (USER_ID + 1)


async def completed_slash(fake: FakeDiscord, bot: SdBot, options: dict[str, object], **how: Any) -> FakeInteraction:
    """Invoke /imagine and return once its handler has finished (discord.py's completion event)."""
    completion = asyncio.ensure_future(bot.wait_for("app_command_completion", timeout=10))
    interaction = await fake.slash("imagine", options, **how)
    await completion
    return interaction


async def test_imagine_is_synced_with_discord_side_constraints(fake: FakeDiscord, bot: SdBot) -> None:
    command = fake.command("imagine", GUILD_ID)
    assert command is not None and command["description"]
    options = {o["name"]: o for o in command["options"]}
    assert list(options) == [
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "steps",
        "cfg",
        "seed",
        "count",
        "sampler",
        "clip_skip",
        "model",
        "image",
        "strength",
        "ar",
        "style",
        "hires",
    ]
    assert all(o["description"] for o in options.values())
    assert options["prompt"]["required"] and options["prompt"]["max_length"] == 1500
    assert not any(o.get("required") for name, o in options.items() if name != "prompt")
    bounds = {name: (o["type"], o.get("min_value"), o.get("max_value")) for name, o in options.items()}
    assert bounds["width"] == bounds["height"] == (4, 64, 1536)
    assert bounds["steps"] == (4, 1, 100)
    assert bounds["cfg"] == (10, 1.0, 30.0)
    assert bounds["seed"] == (4, 0, 4294967295)
    assert bounds["count"] == (4, 1, 4)
    assert bounds["image"] == (11, None, None)
    assert bounds["strength"] == (10, 0.05, 1.0)
    assert [c["value"] for c in options["sampler"]["choices"]] == list(SAMPLERS)
    assert [c["value"] for c in options["ar"]["choices"]] == ["1:1", "4:5", "2:3", "9:16", "5:4", "3:2", "16:9", "21:9"]


async def test_imagine_acknowledges_stores_and_posts_pngs_with_metadata(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    inter = await fake.slash(
        "imagine",
        {
            "prompt": "  a red fox  ",
            "negative_prompt": "blurry",
            "seed": 42,
            "count": 2,
            "steps": 3,
            "width": 256,
            "height": 192,
            "cfg": 6.5,
            "sampler": "Euler a",
        },
    )
    callback = await inter.wait_response()
    assert inter.response_time is not None and inter.response_time < 3.0
    assert callback.type == 4 and callback.data is not None and callback.data["content"].startswith("⏳ Queued")
    ack = inter.original
    assert ack is not None and not ack.ephemeral

    (posted,) = await fake.wait_for(lambda: results(fake) or None, what="the result message")
    assert posted.content == f"<@{USER_ID}>"
    assert posted.reference is not None and int(posted.reference["message_id"]) == ack.id
    assert [a.filename for a in posted.attachments] == [f"sdbot-{engine.calls[0][0]}-{s}.png" for s in (42, 43)]
    for attachment, seed in zip(posted.attachments, (42, 43), strict=True):
        image = Image.open(io.BytesIO(attachment.data))
        assert image.format == "PNG" and image.size == (256, 192)
        assert image.text["parameters"] == (
            f"a red fox\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, CFG scale: 6.5, Seed: {seed}, "
            "Size: 256x192, Model hash: 0123456789, Model: fake-model"
        )
    (embed,) = posted.embeds
    assert embed["description"] == "a red fox"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields == {
        "Negative prompt": "blurry",
        "Seeds": "42, 43",
        "Steps": "3",
        "CFG scale": "6.5",
        "Sampler": "Euler a",
        "Size": "256×192",
        "Model": "fake-model",
        "Time": "0.2 s",
        "Asked by": f"<@{USER_ID}>",
    }

    await fake.wait_for(lambda: ack.content.startswith("✅ Done"), what="the acknowledgement marked done")
    shown = [h.get("content", "") for h in ack.history]
    assert any(text.startswith("🎨 Generating") for text in shown), shown
    assert posted.id == int(ack.content.rsplit("/", 1)[1])

    job = await bot.store.get(engine.calls[0][0])
    assert job is not None and job.state is JobState.DELIVERED and job.message_id == ack.id
    assert (job.params.prompt, job.params.seed, job.user_id, job.channel_id) == ("a red fox", 42, USER_ID, CHANNEL_ID)


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        ({"prompt": "   "}, "The prompt is empty: describe what you want to see."),
        ({"prompt": "fox", "width": 500}, "The width must be a multiple of 8: try 496 or 504 instead of 500."),
        ({"prompt": "fox", "width": 1536, "height": 1536, "count": 4}, "1536×1536 × 4 images is more than this GPU"),
        ({"prompt": "fox", "ar": "16:9", "width": 512}, "Give an aspect ratio or a width and height, not both"),
    ],
)
async def test_input_discord_cannot_check_gets_an_ephemeral_sentence_and_queues_nothing(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine, options: dict[str, object], sentence: str
) -> None:
    inter = await fake.slash("imagine", options)
    callback = await inter.wait_response()
    assert callback.type == 4 and callback.data is not None
    assert callback.data["content"].startswith(sentence)
    assert inter.ephemeral
    assert await bot.store.in_states(*JobState) == []
    assert len(bot.queue) == 0 and engine.calls == []


async def test_an_aspect_ratio_draws_that_shape_at_the_native_pixel_count(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    await completed_slash(fake, bot, {"prompt": "a wide valley", "ar": "16:9", "seed": 3, "steps": 2})
    (posted,) = await fake.wait_for(lambda: results(fake) or None)
    png = Image.open(io.BytesIO(posted.attachments[0].data))
    assert png.size == (680, 384)
    assert "Seed: 3, Size: 680x384" in png.text["parameters"]


async def test_missing_channel_permissions_are_named(fake: FakeDiscord, bot: SdBot) -> None:
    without_attach = discord.Permissions.all()
    without_attach.attach_files = False
    inter = await fake.slash("imagine", {"prompt": "fox"}, app_permissions=without_attach.value)
    callback = await inter.wait_response()
    assert callback.data is not None and inter.ephemeral
    assert "ask an admin to give me Attach Files here" in callback.data["content"]
    assert await bot.store.in_states(*JobState) == []


async def test_acknowledgement_shows_the_fair_queue_position(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    engine.gate.clear()
    acks = []
    for index, user in enumerate((USER_ID, USER_ID, USER_ID, OTHER_USER)):
        inter = await completed_slash(fake, bot, {"prompt": f"fox for {user}", "steps": 1}, user_id=user)
        acks.append(inter.response.data["content"])  # type: ignore[union-attr,index]
        if index == 0:
            await engine.wait_calls(1)
    # The first job is already with the engine; the newcomer goes ahead of the first member's third.
    assert acks == [
        "⏳ Queued — you're next.",
        "⏳ Queued — you're next.",
        "⏳ Queued — position 2 in line (1 ahead of you).",
        "⏳ Queued — position 2 in line (1 ahead of you).",
    ]
    engine.gate.set()
    await fake.wait_for(lambda: len(results(fake)) == 4, what="four results")
    served = [params.prompt for _, params in engine.calls]
    assert served == [f"fox for {USER_ID}"] * 2 + [f"fox for {OTHER_USER}", f"fox for {USER_ID}"]


async def test_engine_failure_reaches_the_member(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    engine.fail_with = "The GPU ran out of memory drawing this: try a smaller size or fewer images."
    inter = await fake.slash("imagine", {"prompt": "fox"})
    await inter.wait_response()
    notice = await fake.wait_for(
        lambda: next((m for m in fake.messages(CHANNEL_ID) if "ran out of memory" in m.content and m.reference), None)
    )
    assert notice.content.startswith(f"<@{USER_ID}> ❌ The GPU ran out of memory")
    (job,) = await bot.store.in_states(JobState.FAILED)
    assert job.error == engine.fail_with


async def test_jobs_queued_at_shutdown_run_after_a_restart(fake: FakeDiscord, tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    first = make_bot(tmp_path, engine)
    async with fake.connected(first):
        for prompt in ("first", "second"):
            await completed_slash(fake, first, {"prompt": prompt, "steps": 1})
        await engine.wait_calls(1)
    assert results(fake) == []

    restarted_engine = FakeEngine()
    second = make_bot(tmp_path, restarted_engine)
    async with fake.connected(second):
        await fake.wait_for(lambda: len(results(fake)) == 2, what="both jobs delivered after the restart")
        assert sorted(p.prompt for _, p in restarted_engine.calls) == ["first", "second"]
        # The posts are in; each is marked delivered once Discord's answer reaches the bot.
        await second.dispatcher.handover.drain()
        assert {j.state for j in await second.store.in_states(*JobState)} == {JobState.DELIVERED}


async def test_real_engine_process_draws_the_same_pixels_for_the_same_seed(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    engine = ProcessEngine(EngineCommand(model=str(tiny_model_dir), device="cpu"))
    client = make_bot(tmp_path, engine)
    async with fake.connected(client, timeout=120):
        for _ in range(2):
            inter = await fake.slash("imagine", {"prompt": "a red fox", "seed": 7, "steps": 2})
            await inter.wait_response()
        first, second = await fake.wait_for(lambda: results(fake) if len(results(fake)) == 2 else None, timeout=60)
    images = [Image.open(io.BytesIO(m.attachments[0].data)) for m in (first, second)]
    assert images[0].size == (64, 64), "the default size is the model's native size"
    assert images[0].text["parameters"].startswith("a red fox\nSteps: 2, Sampler: DPM++ 2M, Schedule type: Karras,")
    assert "Seed: 7, Size: 64x64" in images[0].text["parameters"]
    assert images[0].text["parameters"].endswith("Model: tiny-sd")
    assert np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


async def test_an_acknowledgement_discord_refuses_drops_the_job(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    fake.fail_next("POST", r"^/interactions/\d+/[^/]+/callback$", 404, 10062, "Unknown interaction")
    await completed_slash(fake, bot, {"prompt": "fox"})
    (failed,) = await bot.store.in_states(*JobState)
    assert failed.state is JobState.FAILED and failed.error == "Discord refused the acknowledgement."
    assert len(bot.queue) == 0 and engine.calls == []


async def test_an_error_on_our_side_is_a_sentence_not_a_failed_interaction(fake: FakeDiscord, bot: SdBot) -> None:
    await bot.database.close()  # the next write fails as a broken database would
    inter = await fake.slash("imagine", {"prompt": "fox"})
    callback = await inter.wait_response()
    assert inter.ephemeral and callback.data is not None
    assert callback.data["content"].startswith("Something went wrong on my side")
