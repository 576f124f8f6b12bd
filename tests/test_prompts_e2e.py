"""/imagine with A1111 prompt habits: LoRA names checked against the folder before queueing, clip skip kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import SdBot
from core.jobs import JobState
from tests.support.bots import make_bot, results
from tests.support.fake_discord import GUILD_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine


@pytest.fixture
async def lora_bot(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path) -> AsyncIterator[SdBot]:
    """The real bot with two LoRA files in its folder (their contents do not matter to the bot)."""
    loras = tmp_path / "loras"
    (loras / "styles").mkdir(parents=True)
    (loras / "add_detail.safetensors").write_bytes(b"")
    (loras / "styles" / "inkwash_v2.safetensors").write_bytes(b"")
    client = make_bot(tmp_path, engine, lora_dir=loras)
    async with fake.connected(client):
        yield client


async def test_the_prompt_tokenizer_is_loaded_before_the_first_member_asks(lora_bot: SdBot) -> None:
    # Loading it takes seconds on a busy machine, and an interaction must be answered within 3 s.
    assert lora_bot.intake.installed.chunks.loaded


async def test_clip_skip_is_an_imagine_option_bounded_as_a1111(fake: FakeDiscord, lora_bot: SdBot) -> None:
    command = fake.command("imagine", GUILD_ID)
    assert command is not None
    (option,) = [o for o in command["options"] if o["name"] == "clip_skip"]
    assert (option["type"], option["min_value"], option["max_value"]) == (4, 1, 12)
    assert option["description"] and not option.get("required")


async def test_a_misspelt_lora_gets_the_close_names_and_queues_nothing(
    fake: FakeDiscord, lora_bot: SdBot, engine: FakeEngine
) -> None:
    inter = await fake.slash("imagine", {"prompt": "a castle <lora:inkwash_v3:0.7>"})
    callback = await inter.wait_response()
    assert callback.data is not None and inter.ephemeral
    assert callback.data["content"] == "There is no LoRA named 'inkwash_v3': did you mean inkwash_v2?"
    assert await lora_bot.store.in_states(*JobState) == []
    assert engine.calls == []


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        ({"prompt": "a (cat:1.2.3) on a mat"}, "The weight in `(cat:1.2.3)` must be a number such as 1.2."),
        (
            {"prompt": "a cat", "negative_prompt": "blurry, (a:.)"},
            "The weight in `(a:.)` must be a number such as 1.2.",
        ),
        (
            {"prompt": "a castle <lora:add_detail:nan>"},
            "The weight in <lora:add_detail:nan> must be a number from -10 to 10: write it as <lora:add_detail:0.8>.",
        ),
        (
            {"prompt": "a castle BREAK " * 9 + "a moat"},
            "The prompt takes 10 chunks of 75 tokens (each BREAK starts a new one): shorten it to 8 chunks (600 tokens)"
            " or fewer.",
        ),
        (
            {"prompt": "a castle <hypernet:anime:1>"},
            "This bot applies LoRAs (<lora:name:0.8>) and no other networks: remove <hypernet:anime:1> from the"
            " prompt.",
        ),
    ],
)
async def test_a_prompt_the_engine_would_fail_or_misread_gets_a_sentence_and_nothing_queues(
    fake: FakeDiscord, lora_bot: SdBot, engine: FakeEngine, options: dict[str, str], sentence: str
) -> None:
    inter = await fake.slash("imagine", options)
    callback = await inter.wait_response()
    assert callback.data is not None and inter.ephemeral
    assert callback.data["content"] == sentence
    assert await lora_bot.store.in_states(*JobState) == []
    assert engine.calls == []


async def test_an_installed_lora_and_clip_skip_reach_the_engine_as_written(
    fake: FakeDiscord, lora_bot: SdBot, engine: FakeEngine
) -> None:
    prompt = "a castle <lora:add_detail:0.7:0.4>, (ink:1.2) <lyco:inkwash_v2>"
    inter = await fake.slash("imagine", {"prompt": prompt, "clip_skip": 2, "steps": 2})
    callback = await inter.wait_response()
    assert callback.data is not None and not inter.ephemeral
    await fake.wait_for(lambda: engine.calls or None, what="the job to reach the engine")
    ((job_id, params),) = engine.calls
    assert (params.prompt, params.clip_skip) == (prompt, 2)
    stored = await lora_bot.store.get(job_id)
    assert stored is not None and stored.params.clip_skip == 2
    (posted,) = await fake.wait_for(lambda: results(fake) or None, what="the result message")
    (embed,) = posted.embeds
    assert {f["name"]: f["value"] for f in embed["fields"]}["Clip skip"] == "2"


async def test_a_button_on_a_result_whose_lora_was_removed_since_gets_a_sentence(
    fake: FakeDiscord, lora_bot: SdBot, engine: FakeEngine, tmp_path: Path
) -> None:
    inter = await fake.slash("imagine", {"prompt": "a castle <lora:add_detail:0.7>", "steps": 1})
    await inter.wait_response()
    (posted,) = await fake.wait_for(lambda: results(fake) or None, what="the result message")
    (tmp_path / "loras" / "add_detail.safetensors").unlink()
    reroll = next(c for c in posted.custom_ids() if c.startswith("sdbot:reroll:"))
    press = await fake.press(posted, reroll)
    callback = await press.wait_response()
    assert callback.data is not None and press.ephemeral
    assert callback.data["content"].startswith("There is no LoRA named 'add_detail'")
    assert len(engine.calls) == 1, "nothing queued for the press"


async def test_a_repeated_lora_counts_once_and_the_owner_bounds_how_many(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path
) -> None:
    loras = tmp_path / "loras"
    loras.mkdir()
    for name in ("add_detail", "inkwash_v2"):
        (loras / f"{name}.safetensors").write_bytes(b"")
    client = make_bot(tmp_path, engine, lora_dir=loras, max_loras=1)
    async with fake.connected(client):
        refused = await fake.slash("imagine", {"prompt": "a castle <lora:add_detail:0.7> <lora:inkwash_v2>"})
        callback = await refused.wait_response()
        assert callback.data is not None and refused.ephemeral
        assert callback.data["content"] == (
            "The prompt applies 2 LoRAs and this bot applies at most 1 at once: remove 1 of them."
        )
        prompt = "a castle " + "<lora:add_detail:0.1>" * 60  # 60 adapters before, one now
        accepted = await fake.slash("imagine", {"prompt": prompt, "steps": 1})
        await accepted.wait_response()
        assert not accepted.ephemeral
        await fake.wait_for(lambda: engine.calls or None, what="the job to reach the engine")
        ((_job_id, params),) = engine.calls
        assert params.prompt == prompt, "the prompt stays as written; the engine applies the LoRA once"


async def test_an_unknown_lora_among_long_file_names_still_gets_a_sentence_within_discords_limit(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path
) -> None:
    loras = tmp_path / "loras"
    loras.mkdir()
    for index in range(12):
        (loras / f"{index:02d}_{'very_long_lora_name_' * 11}.safetensors").write_bytes(b"")
    async with fake.connected(make_bot(tmp_path, engine, lora_dir=loras)):
        inter = await fake.slash("imagine", {"prompt": "a castle <lora:zzz:0.7>"})
        callback = await inter.wait_response()
    assert callback.data is not None and inter.ephemeral
    content = str(callback.data["content"])
    assert (
        content.startswith("There is no LoRA named 'zzz': the installed ones are 00_very_long") and len(content) <= 2000
    )
    assert engine.calls == []
