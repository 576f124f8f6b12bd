"""Models end to end: /imagine model: with autocomplete, sidecar defaults in the job, channel defaults, reload."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import SdBot
from bot.models.picker import Models
from core.catalog import scan
from tests.support.bots import answer, autocomplete, make_bot, results
from tests.support.checkpoint_headers import SD1_KEYS, SDXL_KEYS, write_header_only
from tests.support.fake_discord import CHANNEL_ID, GUILD_ID, OWNER_ID, USER_ID, FakeDiscord, FakeInteraction
from tests.support.fake_engine import FakeEngine


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    write_header_only(folder / "deliberate_v2.safetensors", SD1_KEYS)
    (folder / "deliberate_v2.json").write_text(
        '{"steps": 12, "cfg": 5.5, "sampler": "Euler a", "negative_prompt": "lowres", "description": "photoreal",'
        ' "clip_skip": 2}'
    )
    write_header_only(folder / "sd_xl_base_1.0.safetensors", SDXL_KEYS)
    (folder / "anything-v3.ckpt").write_bytes(b"never unpickled")
    (folder / "anything-v3.toml").write_text('clip_skip = 2\ndescription = "anime"\n')
    return folder


@pytest.fixture
async def bot(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path, models_dir: Path) -> AsyncIterator[SdBot]:
    """The real bot with a models folder; SDBOT_MODEL is outside it."""
    models = Models(catalog=scan(models_dir), folder=models_dir, default_location=str(tmp_path / "default"))
    client = make_bot(tmp_path, engine, models=models)
    async with fake.connected(client):
        yield client


async def imagine(fake: FakeDiscord, bot: SdBot, **options: Any) -> FakeInteraction:
    completion = asyncio.ensure_future(bot.wait_for("app_command_completion", timeout=10))
    inter = await fake.slash("imagine", {"prompt": "a red fox", **options})
    await completion
    return inter


async def admin(fake: FakeDiscord, subcommand: str, options: dict[str, Any] | None = None) -> str:
    inter = await fake.slash("sdadmin", options or {}, subcommand=subcommand, user_id=OWNER_ID)
    text = await answer(inter)
    assert inter.ephemeral
    return text


async def choices(fake: FakeDiscord, typed: str, command: str = "imagine", **how: Any) -> list[dict[str, str]]:
    options = {"prompt": "x", "model": typed} if command == "imagine" else {"model": typed}
    return await autocomplete(fake, command, options, "model", **how)


async def test_model_option_autocompletes_names_and_descriptions(fake: FakeDiscord, bot: SdBot) -> None:
    command = fake.command("imagine", GUILD_ID)
    assert command is not None
    (model,) = [o for o in command["options"] if o["name"] == "model"]
    assert model["autocomplete"] and not model.get("required")
    assert await choices(fake, "") == [
        {"name": "anything-v3 — anime", "value": "anything-v3"},
        {"name": "deliberate_v2 — photoreal", "value": "deliberate_v2"},
        {"name": "sd_xl_base_1.0", "value": "sd_xl_base_1.0"},
    ]
    assert await choices(fake, "photo") == [{"name": "deliberate_v2 — photoreal", "value": "deliberate_v2"}]


async def test_the_sidecar_fills_what_the_member_left_out(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    assert (await answer(await imagine(fake, bot, model="deliberate_v2", cfg=9.0))).startswith("⏳ Queued")
    await engine.wait_calls(1)
    params = engine.calls[0][1]
    assert (params.model, params.steps, params.cfg, params.sampler) == ("deliberate_v2", 12, 9.0, "Euler a")
    assert (params.negative_prompt, params.width, params.height, params.clip_skip) == ("lowres", 512, 512, 2)
    await fake.wait_for(lambda: results(fake) or None)
    assert (await answer(await imagine(fake, bot, model="deliberate_v2", clip_skip=1))).startswith("⏳ Queued")
    await engine.wait_calls(2)
    assert engine.calls[1][1].clip_skip == 1, "the member's own clip skip wins over the sidecar's"


async def test_a_model_without_a_sidecar_gets_its_family_size_and_the_bot_defaults(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    await answer(await imagine(fake, bot, model="SD_XL_BASE_1.0", steps=2))
    await engine.wait_calls(1)
    params = engine.calls[0][1]
    assert (params.model, params.width, params.height, params.steps) == ("sd_xl_base_1.0", 1024, 1024, 2)
    await fake.wait_for(lambda: results(fake) or None)


async def test_unknown_and_pickle_models_are_refused_with_a_sentence(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    refused = await imagine(fake, bot, model="deliberate")
    assert await answer(refused) == "There is no model called `deliberate`: did you mean `deliberate_v2`?"
    assert refused.ephemeral
    pickle = await imagine(fake, bot, model="anything-v3")
    assert (await answer(pickle)).startswith("The model anything-v3 is a pickle checkpoint (.ckpt/.pt)")
    assert pickle.ephemeral and engine.calls == []


async def test_admins_set_a_channel_default(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    assert await choices(fake, "sd_", command="sdadmin", subcommand="models channel", user_id=OWNER_ID) == [
        {"name": "sd_xl_base_1.0", "value": "sd_xl_base_1.0"}
    ]
    text = await admin(fake, "models channel", {"model": "sd_xl_base_1.0"})
    assert text == f"<#{CHANNEL_ID}> now draws with `sd_xl_base_1.0` unless a member picks another model."
    assert f"<#{CHANNEL_ID}> draws with `sd_xl_base_1.0`" in await admin(fake, "models list")
    await answer(await imagine(fake, bot, steps=1))
    await answer(await imagine(fake, bot, steps=1, model="deliberate_v2"))
    assert await admin(fake, "models channel") == f"<#{CHANNEL_ID}> draws with the bot's default model again."
    await answer(await imagine(fake, bot, steps=1))
    await engine.wait_calls(3)
    assert [p.model for _, p in engine.calls] == ["sd_xl_base_1.0", "deliberate_v2", ""]
    assert (engine.calls[0][1].width, engine.calls[2][1].width) == (1024, 512)
    assert "no model called `nope`" in await admin(fake, "models channel", {"model": "nope"})
    await fake.wait_for(lambda: len(results(fake)) == 3 or None)


async def test_members_cannot_use_the_model_admin_commands(fake: FakeDiscord, bot: SdBot) -> None:
    inter = await fake.slash("sdadmin", {}, subcommand="models reload", user_id=USER_ID + 5)
    assert await answer(inter) == "Only members with Manage Server can use /sdadmin."


async def test_reload_rescans_the_folder_here_and_in_the_engine(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine, models_dir: Path
) -> None:
    write_header_only(models_dir / "dreamshaper_8.safetensors", SD1_KEYS)
    (models_dir / "anything-v3.ckpt").unlink()
    (models_dir / "lora.safetensors").write_bytes(b"\x01")
    assert [c["value"] for c in await choices(fake, "dream")] == []
    text = await admin(fake, "models reload")
    assert text == (
        "Rescanned the models folder: 3 models (new: dreamshaper_8; gone: anything-v3).\n"
        "Skipped lora.safetensors: too short to be a safetensors file"
    )
    assert engine.reloads == 1
    assert [c["value"] for c in await choices(fake, "dream")] == ["dreamshaper_8"]
    (models_dir / "dreamshaper_8.json").write_text('{"steps": "lots"}')
    text = await admin(fake, "models reload")
    assert text.startswith("The models folder has a problem, so I kept the models I had: ")
    assert text.endswith("dreamshaper_8.json: steps must be a whole number from 1 to 100, not 'lots'")
    assert engine.reloads == 1 and "dreamshaper_8" in bot.models.catalog.entries


async def test_the_dispatcher_serves_the_loaded_model_first_within_a_round(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    engine.gate.clear()
    await answer(await imagine(fake, bot, steps=1, model="deliberate_v2"))
    await engine.wait_calls(1)  # drawing with deliberate_v2 now; three members queue behind it
    for offset, model in ((10, "sd_xl_base_1.0"), (11, "deliberate_v2"), (12, "sd_xl_base_1.0")):
        completion = asyncio.ensure_future(bot.wait_for("app_command_completion", timeout=10))
        inter = await fake.slash("imagine", {"prompt": "fox", "steps": 1, "model": model}, user_id=USER_ID + offset)
        await completion
        await answer(inter)
    engine.gate.set()
    await engine.wait_calls(4)
    # Fair order would be xl, deliberate, xl (three switches); deliberate, already loaded, goes first: one switch.
    assert [p.model for _, p in engine.calls] == ["deliberate_v2", "deliberate_v2", "sd_xl_base_1.0", "sd_xl_base_1.0"]
    await fake.wait_for(lambda: len(results(fake)) == 4 or None)


async def test_each_model_is_held_to_the_memory_the_gpu_has_with_it_at_intake_and_in_batches(
    fake: FakeDiscord, tmp_path: Path, models_dir: Path
) -> None:
    # The default model's budget holds one SDXL image at most; with SDXL loaded the engine reports two.
    sdxl = 2 * 1024 * 1024
    engine = FakeEngine(max_batch=4, max_pixels=1024 * 1024, family_pixels={"sd1": 1024 * 1024, "sdxl": sdxl})
    models = Models(catalog=scan(models_dir), folder=models_dir, default_location=str(tmp_path / "default"))
    client = make_bot(tmp_path, engine, models=models)
    async with fake.connected(client):
        engine.gate.clear()
        await answer(await imagine(fake, client, steps=1, model="deliberate_v2"))
        await engine.wait_calls(1)
        for offset in (10, 11, 12):
            completion = asyncio.ensure_future(client.wait_for("app_command_completion", timeout=10))
            inter = await fake.slash(
                "imagine", {"prompt": "fox", "steps": 1, "model": "sd_xl_base_1.0"}, user_id=USER_ID + offset
            )
            await completion
            await answer(inter)
        too_many = await imagine(fake, client, model="sd_xl_base_1.0", count=3)
        assert await answer(too_many) == (
            "1024×1024 × 3 images is more than this GPU can draw at once (2.1 megapixels at most):"
            " lower the width, height or count."
        )
        assert too_many.ephemeral
        # deliberate_v2 (SD 1.x) keeps its own budget: four 512² images are 1.0 megapixels.
        await answer(await imagine(fake, client, steps=1, model="deliberate_v2", count=4))
        engine.gate.set()
        await fake.wait_for(lambda: len(results(fake)) == 5 or None, what="five results")
    models_of = {job_id: params.model for job_id, params in engine.calls}
    sizes = [[models_of[job] for job in batch] for batch in engine.batches]
    # The deliberate job queued last goes with the loaded model; two SDXL images fill SDXL's budget.
    assert sizes == [["deliberate_v2"], ["deliberate_v2"], ["sd_xl_base_1.0"] * 2, ["sd_xl_base_1.0"]]


async def test_a_model_too_big_for_the_gpu_is_refused_with_a_sentence(
    fake: FakeDiscord, tmp_path: Path, models_dir: Path
) -> None:
    engine = FakeEngine(family_pixels={"sd1": 4 * 512 * 512, "sdxl": 0})
    models = Models(catalog=scan(models_dir), folder=models_dir, default_location=str(tmp_path / "default"))
    client = make_bot(tmp_path, engine, models=models)
    async with fake.connected(client):
        refused = await imagine(fake, client, model="sd_xl_base_1.0", width=512, height=512)
        assert await answer(refused) == "sd_xl_base_1.0 needs more memory than this GPU has: pick another model."
        assert refused.ephemeral and engine.calls == []


async def test_a_channel_default_that_became_a_refused_pickle_is_a_sentence(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    bot.models.allow_pickle = True
    await admin(fake, "models channel", {"model": "anything-v3"})
    bot.models.allow_pickle = False  # as after a restart without SDBOT_ALLOW_PICKLE=1
    refused = await imagine(fake, bot)
    assert (await answer(refused)).startswith("The model anything-v3 is a pickle checkpoint")
    assert refused.ephemeral and engine.calls == []
