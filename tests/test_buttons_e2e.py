"""Buttons on results, end to end: the real client, the fake Discord, real SQLite and kept images on disk."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import discord
import pytest
from PIL import Image

from bot.app import SdBot
from bot.pipeline.database import Database
from bot.pipeline.engine_client import EngineCommand, ProcessEngine
from bot.pipeline.images import ImageStore
from bot.pipeline.store import JobStore
from bot.results.buttons import Press, result_buttons
from core.jobs import Job, JobState
from core.params import GenerationParams, JobMode
from tests.support.bots import make_bot, results
from tests.support.community import private_followup
from tests.support.fake_discord import CHANNEL_ID, USER_ID, FakeDiscord, FakeMessage
from tests.support.fake_engine import FakeEngine

STRANGER = USER_ID + 7


async def first_result(fake: FakeDiscord, options: dict[str, object]) -> FakeMessage:
    await (await fake.slash("imagine", options)).wait_response()
    (message,) = await fake.wait_for(lambda: results(fake) or None, what="the first result")
    return message


def job_id_of(message: FakeMessage) -> str:
    return Press.parse(message.custom_ids()[0]).job_id


async def test_results_carry_their_buttons_as_discord_allows(fake: FakeDiscord, bot: SdBot) -> None:
    grid = await first_result(fake, {"prompt": "fox", "count": 4, "steps": 1, "seed": 1})
    job = job_id_of(grid)
    assert len(grid.components) <= 5 and all(len(row["components"]) <= 5 for row in grid.components)
    assert grid.custom_ids() == (
        [f"sdbot:upscale:{job}:{i}" for i in range(1, 5)]
        + [f"sdbot:vary-subtle:{job}:{i}" for i in range(1, 5)]
        + [f"sdbot:vary-strong:{job}:{i}" for i in range(1, 5)]
        + [f"sdbot:reroll:{job}", f"sdbot:remix:{job}", f"sdbot:delete:{job}"]
        + [f"sdbot:share:{job}:{i}" for i in range(1, 5)]
    )
    assert all(len(custom_id) <= 100 for custom_id in grid.custom_ids())


def test_single_images_get_outpaint_buttons_and_lose_those_that_would_pass_the_cap() -> None:
    small = Job("ab12", GenerationParams(prompt="x", width=512, height=512), 1, "a", 2, 3, 0.0)
    actions = [b.press.action for b in result_buttons(small, 1)]
    assert actions == [
        "upscale",
        "vary-subtle",
        "vary-strong",
        "zoom-1.5",
        "zoom-2",
        "faces",
        "pan-left",
        "pan-right",
        "pan-up",
        "pan-down",
        "reroll",
        "remix",
        "share",
        "delete",
    ]
    big = Job(
        "ab12",
        GenerationParams(prompt="x", width=1536, height=1024, mode=JobMode.UPSCALE, strength=0.3),
        1,
        "a",
        2,
        3,
        0.0,
    )
    actions = [b.press.action for b in result_buttons(big, 1)]
    assert "upscale" not in actions and "pan-left" not in actions and "pan-up" in actions


async def test_upscale_press_replies_to_the_result_with_a_bigger_image(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    grid = await first_result(fake, {"prompt": "fox", "count": 2, "steps": 2, "seed": 40, "width": 256, "height": 256})
    parent = job_id_of(grid)
    press = await fake.press(grid, f"sdbot:upscale:{parent}:2", user_id=STRANGER)
    ack = await press.wait_response()
    assert ack.data is not None and ack.data["content"].startswith("⏳ Queued")
    reply = await fake.wait_for(lambda: next((m for m in results(fake) if m.id != grid.id), None))
    assert reply.reference is not None and int(reply.reference["message_id"]) == grid.id
    assert reply.content == f"<@{STRANGER}>", "the result belongs to whoever pressed"
    (attachment,) = reply.attachments
    image = Image.open(io.BytesIO(attachment.data))
    assert image.size == (512, 512)
    assert "Seed: 41, Size: 512x512" in image.text["parameters"], "an upscale keeps the image's own seed"
    assert "Denoising strength: 0.3" in image.text["parameters"]
    child_id, child_params = engine.calls[-1]
    assert child_params.mode == "upscale"
    assert engine.sources[child_id] == grid.attachments[1].data, "the engine drew over image 2"
    child = await bot.store.get(child_id)
    assert child is not None and (child.parent_id, child.source_index, child.user_id) == (parent, 2, STRANGER)
    upscaled_buttons = [Press.parse(c).action for c in reply.custom_ids()]
    assert "zoom-2" in upscaled_buttons and "pan-left" in upscaled_buttons and "upscale" in upscaled_buttons


@pytest.mark.parametrize(
    ("custom_id", "mode", "size"),
    [
        ("vary-subtle", "vary", (256, 192)),
        ("vary-strong", "vary", (256, 192)),
        ("zoom-1.5", "zoom", (256, 192)),
        ("zoom-2", "zoom", (256, 192)),
        ("pan-left", "pan", (384, 192)),
        ("pan-down", "pan", (256, 288)),
    ],
)
async def test_every_image_action_queues_the_right_job(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine, custom_id: str, mode: str, size: tuple[int, int]
) -> None:
    single = await first_result(fake, {"prompt": "fox", "steps": 3, "width": 256, "height": 192})
    await (await fake.press(single, f"sdbot:{custom_id}:{job_id_of(single)}:1")).wait_response()
    await fake.wait_for(lambda: len(results(fake)) == 2)
    _, params = engine.calls[-1]
    assert (params.mode, params.width, params.height, params.count) == (mode, *size, 1)
    assert params.prompt == "fox"


async def test_reroll_of_an_upscale_redoes_the_pass_over_the_same_image(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    grid = await first_result(fake, {"prompt": "fox", "count": 2, "steps": 2, "width": 128, "height": 128})
    await (await fake.press(grid, f"sdbot:upscale:{job_id_of(grid)}:1")).wait_response()
    upscaled = await fake.wait_for(lambda: next((m for m in results(fake) if m.id != grid.id), None))
    await (await fake.press(upscaled, f"sdbot:reroll:{job_id_of(upscaled)}")).wait_response()
    await fake.wait_for(lambda: len(results(fake)) == 3)
    (first_id, first), (second_id, second) = engine.calls[-2:]
    assert second.mode == "upscale" and (second.width, second.height) == (256, 256)
    assert second.seed != first.seed
    assert engine.sources[second_id] == engine.sources[first_id] == grid.attachments[0].data


async def test_a_press_works_after_a_restart_and_after_the_kept_image_expired(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    first_engine = FakeEngine()
    async with fake.connected(make_bot(tmp_path, first_engine)):
        grid = await first_result(fake, {"prompt": "fox", "count": 2, "steps": 1, "width": 128, "height": 128})
    shutil.rmtree(tmp_path / "data")  # as if SDBOT_KEEP_DAYS had passed

    engine = FakeEngine()
    bot = make_bot(tmp_path, engine)
    async with fake.connected(bot):
        press = await fake.press(grid, f"sdbot:vary-strong:{job_id_of(grid)}:2")
        await press.wait_response()
        await fake.wait_for(lambda: len(results(fake)) == 2, what="the variation after a restart")
        ((child_id, params),) = engine.calls
        child = await bot.store.get(child_id)
        # Deferred while the image came back from Discord: the "thinking…" message became the job's status.
        assert press.original is not None and child is not None and child.message_id == press.original.id
    assert params.mode == "vary" and params.strength == 0.7
    assert engine.sources[child_id] == grid.attachments[1].data, "fetched back from the message on Discord"
    assert (tmp_path / "data" / "jobs" / job_id_of(grid) / "2.png").read_bytes() == grid.attachments[1].data


async def test_a_press_whose_image_is_gone_everywhere_gets_a_sentence(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    grid = await first_result(fake, {"prompt": "fox", "count": 2, "steps": 1, "width": 128, "height": 128})
    shutil.rmtree(bot.images.root)
    fake.fail_next("GET", rf"^/channels/{CHANNEL_ID}/messages/{grid.id}$", 404, 10008, "Unknown Message")
    press = await fake.press(grid, f"sdbot:upscale:{job_id_of(grid)}:1")
    # Not on disk: deferred while it is looked for on Discord; the sentence replaces the "thinking…".
    refusal = await private_followup(fake, press)
    assert refusal.content.startswith("The image this works from is gone")
    assert press.original is not None and press.original.deleted
    assert len(engine.calls) == 1


async def test_malformed_and_unknown_buttons_get_a_sentence(fake: FakeDiscord, bot: SdBot) -> None:
    grid = await first_result(fake, {"prompt": "fox", "steps": 1})
    cases = [
        ("sdbot:launch:12345678", "I don't know that button"),
        ("something-else", "I don't know that button"),
        # An action of one family with the other's shape.
        ("sdbot:reroll:deadbeef00:1", "I don't know that button"),
        ("sdbot:upscale:deadbeef00", "I don't know that button"),
        ("sdbot:upscale:deadbeef00:1", "I have no record of that result"),
        ("sdbot:reroll:deadbeef00", "I have no record of that result"),
    ]
    # As on a message posted by an older version of the bot, or by a job since removed from the database.
    for custom_id, sentence in cases:
        grid.components[:] = [
            {"type": 1, "components": [{"type": 2, "style": 2, "label": "?", "custom_id": custom_id}]}
        ]
        inter = await fake.press(grid, custom_id)
        answer = await inter.wait_response()
        assert inter.ephemeral and answer.data is not None and answer.data["content"].startswith(sentence)


async def test_delete_by_a_stranger_is_refused_and_by_the_owner_or_a_moderator_done(
    fake: FakeDiscord, bot: SdBot
) -> None:
    grid = await first_result(fake, {"prompt": "fox", "steps": 1})
    delete = f"sdbot:delete:{job_id_of(grid)}"
    member = discord.Permissions(view_channel=True, send_messages=True, read_message_history=True)
    refused = await fake.press(grid, delete, user_id=STRANGER, member_permissions=member.value)
    answer = await refused.wait_response()
    assert refused.ephemeral and answer.data is not None
    assert answer.data["content"] == f"Only <@{USER_ID}> or someone with Manage Messages can delete this."
    assert not grid.deleted

    moderator = discord.Permissions(member.value)
    moderator.manage_messages = True
    allowed = await fake.press(grid, delete, user_id=STRANGER, member_permissions=moderator.value)
    await allowed.wait_response()
    assert grid.deleted

    own = await first_result(fake, {"prompt": "fox again", "steps": 1})
    mine = await fake.press(own, f"sdbot:delete:{job_id_of(own)}")
    assert (await mine.wait_response()).data["content"] == "Deleted."  # type: ignore[index]
    assert own.deleted


async def test_kept_images_expire_after_keep_days(tmp_path: Path) -> None:
    images = ImageStore(tmp_path, keep_days=30)
    images.save("aa11", [b"one", b"two"])
    images.save("bb22", [b"three"])
    folder = tmp_path / "jobs" / "aa11"
    made = folder.joinpath("1.png").stat().st_mtime
    assert images.prune(made + 29 * 86400) == 0
    assert images.load("aa11", 2) == b"two"
    assert images.prune(made + 31 * 86400) == 2
    assert images.load("aa11", 1) is None and images.load("bb22", 1) is None


async def test_real_engine_variation_press(fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = ProcessEngine(EngineCommand(model=str(tiny_model_dir), device="cpu"))
    async with fake.connected(make_bot(tmp_path, engine), timeout=120):
        single = await first_result(fake, {"prompt": "a red fox", "seed": 7, "steps": 4})
        await (await fake.press(single, f"sdbot:vary-subtle:{job_id_of(single)}:1")).wait_response()
        reply = await fake.wait_for(lambda: next((m for m in results(fake) if m.id != single.id), None), timeout=60)
    image = Image.open(io.BytesIO(reply.attachments[0].data))
    assert image.size == (64, 64)
    assert "Denoising strength: 0.35" in image.text["parameters"]
    database = Database(tmp_path / "sdbot.sqlite3")
    store = JobStore(database)
    await database.open()
    jobs = await store.in_states(*JobState)
    await database.close()
    assert [(j.state, j.params.mode) for j in jobs] == [(JobState.DELIVERED, "txt2img"), (JobState.DELIVERED, "vary")]
