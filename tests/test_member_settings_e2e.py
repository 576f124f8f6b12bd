"""/settings end to end: the real discord.py client against the fake Discord, real SQLite, a models folder with
sidecars, and an engine that records what it was asked to draw."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import SdBot
from bot.models.picker import Models
from core.aspect import AspectRatio
from core.catalog import scan
from core.params import DEFAULT_STEPS, GenerationParams
from tests.support.bots import answer, autocomplete, make_bot, results
from tests.support.checkpoint_headers import SD1_KEYS, write_header_only
from tests.support.fake_discord import OWNER_ID, USER_ID, FakeDiscord, FakeInteraction
from tests.support.fake_engine import FakeEngine

OTHER = USER_ID + 5


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    write_header_only(folder / "deliberate_v2.safetensors", SD1_KEYS)
    (folder / "deliberate_v2.json").write_text('{"steps": 12, "sampler": "Euler a", "negative_prompt": "lowres"}')
    write_header_only(folder / "openjourney.safetensors", SD1_KEYS)
    return folder


@pytest.fixture
async def bot(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path, models_dir: Path) -> AsyncIterator[SdBot]:
    models = Models(catalog=scan(models_dir), folder=models_dir, default_location=str(tmp_path / "default"))
    client = make_bot(tmp_path, engine, models=models)
    async with fake.connected(client):
        yield client


async def settings(fake: FakeDiscord, user_id: int = USER_ID, **options: Any) -> str:
    inter = await fake.slash("settings", options, user_id=user_id)
    text = await answer(inter)
    assert inter.ephemeral
    return text


async def drawn(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine, user_id: int = USER_ID, **options: Any
) -> tuple[FakeInteraction, GenerationParams]:
    """/imagine by `user_id`, once drawn and posted: the interaction and what the engine drew."""
    before = len(results(fake))
    inter = await fake.slash("imagine", {"prompt": "a red fox", **options}, user_id=user_id)
    await fake.wait_for(lambda: len(results(fake)) > before or None)
    return inter, engine.calls[-1][1]


def line(text: str, label: str) -> str:
    (found,) = [row for row in text.splitlines() if row.startswith(f"**{label}:**")]
    return found


async def test_a_members_steps_apply_to_their_imagine_and_not_to_the_next_member(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    shown = await settings(fake)
    assert line(shown, "Steps") == f"**Steps:** {DEFAULT_STEPS} — the bot's default"
    saved = await settings(fake, steps=3)
    assert saved.startswith("**Your defaults for /imagine** (saved)")
    assert line(saved, "Steps") == "**Steps:** 3 — your setting"
    _, params = await drawn(fake, bot, engine)
    assert params.steps == 3
    _, params = await drawn(fake, bot, engine, steps=5)
    assert params.steps == 5  # the option given wins
    _, params = await drawn(fake, bot, engine, user_id=OTHER)
    assert params.steps == DEFAULT_STEPS
    # Kept in SQLite: a restarted bot reads it back.
    await bot.shared.member_settings.load()
    assert bot.shared.member_settings.get(USER_ID, None).steps == 3
    assert line(await settings(fake, reset="steps"), "Steps") == f"**Steps:** {DEFAULT_STEPS} — the bot's default"


async def test_the_members_model_beats_the_channels_and_brings_its_sidecar(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    inter = await fake.slash("sdadmin", {"model": "openjourney"}, subcommand="models channel", user_id=OWNER_ID)
    await answer(inter)
    assert line(await settings(fake), "Model") == "**Model:** openjourney — this channel's default"
    assert [c["value"] for c in await autocomplete(fake, "settings", {"model": "delib"}, "model")] == ["deliberate_v2"]
    shown = await settings(fake, model="Deliberate_V2")
    assert line(shown, "Model") == "**Model:** deliberate_v2 — your setting"
    assert line(shown, "Steps") == "**Steps:** 12 — the model's defaults"
    assert line(shown, "Sampler") == "**Sampler:** Euler a — the model's defaults"
    assert line(shown, "Negative prompt") == "**Negative prompt:** `lowres` — the model's defaults"
    _, params = await drawn(fake, bot, engine)
    assert (params.model, params.steps, params.sampler, params.negative_prompt) == (
        "deliberate_v2",
        12,
        "Euler a",
        "lowres",
    )
    _, params = await drawn(fake, bot, engine, user_id=OTHER)
    assert params.model == "openjourney"


async def test_an_aspect_ratio_setting_sizes_the_job_and_a_width_given_replaces_it(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    await settings(fake, ar="16:9")
    _, params = await drawn(fake, bot, engine)
    native = engine.ready.native_width * engine.ready.native_height
    assert (params.width, params.height) == AspectRatio(16, 9).size(native, 1536)
    _, params = await drawn(fake, bot, engine, width=640, height=448)
    assert (params.width, params.height) == (640, 448)


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        ({"steps": 20}, "Your limit here is 10 steps: set at most that. Nothing was changed."),
        ({"width": 512}, "Set the width and the height together. Nothing was changed."),
        ({"ar": "16:9", "width": 512, "height": 512}, "Set an aspect ratio or a width and height, not both."),
        ({"model": "realisticvision"}, "There is no model called `realisticvision`"),
        ({"style": "noir"}, "This server has no style called `noir`"),
        ({"negative_prompt": "(blurry:1.2.3)"}, "The weight in `(blurry:1.2.3)` must be a number"),
        ({"steps": 4, "cfg": 5.0, "width": 2000}, None),
    ],
)
async def test_a_value_the_member_may_not_keep_gets_a_sentence_and_nothing_is_stored(
    fake: FakeDiscord, bot: SdBot, options: dict[str, Any], sentence: str | None
) -> None:
    inter = await fake.slash(
        "sdadmin", {"setting": "max_steps", "value": 10}, subcommand="limits set", user_id=OWNER_ID
    )
    await answer(inter)
    await settings(fake, sampler="Euler")
    # Past Discord's own bounds (a width of 2000) only a forged request gets through: the fake lets it.
    inter = await fake.slash("settings", options, user_id=USER_ID, validate=sentence is not None)
    text = await answer(inter)
    assert inter.ephemeral and (sentence or "width") in text, text
    assert bot.shared.member_settings.get(USER_ID, None).sampler == "Euler"
    assert bot.shared.member_settings.get(USER_ID, None).steps is None


async def test_a_setting_the_server_no_longer_allows_falls_back_with_a_note(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine, models_dir: Path
) -> None:
    await settings(fake, model="deliberate_v2", steps=50)
    (models_dir / "deliberate_v2.safetensors").unlink()
    inter = await fake.slash("sdadmin", {}, subcommand="models reload", user_id=OWNER_ID)
    await answer(inter)
    inter = await fake.slash(
        "sdadmin", {"setting": "max_steps", "value": 10}, subcommand="limits set", user_id=OWNER_ID
    )
    await answer(inter)
    shown = await settings(fake)
    assert "Your default model `deliberate_v2` is not available here now: the default applies." in shown
    assert "Your 50 steps are over your limit here (10): the default applies." in shown
    inter, params = await drawn(fake, bot, engine, steps=8)
    assert (params.model, params.steps) == ("", 8)
    (note,) = await fake.wait_for(lambda: inter.followups or None)
    assert note.ephemeral and note.content.startswith("Your default model `deliberate_v2` is not available")
    assert "Your 50 steps" not in note.content  # the option given replaced them: nothing fell back


async def test_quiet_results_name_the_member_without_pinging_them(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    assert line(await settings(fake, quiet=True), "Results") == "**Results:** posted quietly (no ping) — your setting"
    await drawn(fake, bot, engine)
    await drawn(fake, bot, engine, user_id=OTHER)
    quiet_post, loud_post = results(fake)
    assert quiet_post.content.startswith(f"<@{USER_ID}>") and quiet_post.allowed_mentions == {"parse": []}
    assert loud_post.content.startswith(f"<@{OTHER}>") and "users" in loud_post.allowed_mentions["parse"]


async def test_a_hires_fix_from_the_option_or_the_members_settings(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    _, params = await drawn(fake, bot, engine, hires="2×")
    assert (params.hires, params.hires_strength, params.hires_steps, params.hires_upscaler) == (2.0, 0.5, 0, "Latent")
    shown = await settings(fake, hires="1.5×", hires_strength=0.35, hires_upscaler="Lanczos")
    assert line(shown, "Hires fix") == "**Hires fix:** 1.5× — your setting"
    assert line(shown, "Hires steps") == "**Hires steps:** the job's steps — the bot's default"
    _, params = await drawn(fake, bot, engine)
    assert (params.hires, params.hires_strength, params.hires_upscaler) == (1.5, 0.35, "Lanczos")
    _, params = await drawn(fake, bot, engine, hires="off")
    assert params.hires == 0
    # Over an image prompt there is no hires fix: the member's setting stays out of it rather than refuse the job.
    assert (await drawn(fake, bot, engine, user_id=OTHER))[1].hires == 0


async def test_a_hires_fix_over_the_members_largest_side(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    inter = await fake.slash(
        "sdadmin", {"setting": "max_size", "value": 512}, subcommand="limits set", user_id=OWNER_ID
    )
    await answer(inter)
    inter = await fake.slash("imagine", {"prompt": "a fox", "width": 384, "height": 384, "hires": "2×"})
    assert await answer(inter) == "Your limit is 512 pixels a side: ask for a smaller image or hires scale."
    await settings(fake, hires="2×", width=384, height=384)
    inter, params = await drawn(fake, bot, engine)
    assert (params.width, params.hires) == (384, 0)
    (note,) = await fake.wait_for(lambda: inter.followups or None)
    assert note.content.startswith("Your hires fix would make 768×768, over your largest side here (512)")


async def test_a_members_hires_fix_past_what_one_may_make_falls_back(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    await settings(fake, hires="2×")
    # 1152 wide at 2× would be 2304, past the 2048 a hires fix may make: drawn without it, with a note.
    inter, params = await drawn(fake, bot, engine, width=1152, height=64)
    assert (params.width, params.hires) == (1152, 0)
    (note,) = await fake.wait_for(lambda: inter.followups or None)
    assert note.content.startswith("Your hires fix can't apply to this one (Hires fix would make a 2304×128 image")
    # Asked for in the command itself, the same is refused with the sentence.
    inter = await fake.slash("imagine", {"prompt": "a fox", "width": 1152, "height": 64, "hires": "2×"})
    assert (await answer(inter)).startswith("Hires fix would make a 2304×128 image, more than 2048 pixels a side")
