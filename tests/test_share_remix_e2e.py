"""⭐ Share, 🎛 Remix and the weekly digest, end to end: the real client, the fake Discord, real SQLite."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest

from bot.app import SdBot
from bot.community.sharing import FLAGGED, NO_ART_CHANNEL, blocked_here, unchecked_here
from tests.support.bots import make_bot, results
from tests.support.community import (
    ART_CHANNEL_ID,
    art_posts,
    content,
    first_result,
    guild_with_art_channel,
    job_id_of,
    private_followup,
    set_art_channel,
    text_inputs,
    turn_digest_on,
)
from tests.support.fake_discord import (
    CHANNEL_ID,
    GUILD_ID,
    OWNER_ID,
    USER_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMessage,
)
from tests.support.fake_engine import FakeEngine

STRANGER = USER_ID + 7
AFTER_DARK = CHANNEL_ID + 9
MEMBER = discord.Permissions(view_channel=True, send_messages=True, read_message_history=True).value


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(guilds=[guild_with_art_channel()]) as fake:
        yield fake
        fake.assert_clean()


def link(channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{GUILD_ID}/{channel_id}/{message_id}"


async def test_share_posts_once_to_the_art_channel_with_credit_settings_and_a_link_back(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    grid = await first_result(
        fake, {"prompt": "fox, snow", "negative_prompt": "blurry", "count": 2, "steps": 3, "seed": 5}
    )
    job = job_id_of(grid)
    share = f"sdbot:share:{job}:2"
    assert share in grid.custom_ids()

    unset = await fake.press(grid, share)
    assert content(await unset.wait_response()) == NO_ART_CHANNEL and unset.ephemeral
    await set_art_channel(fake)

    shared = await fake.press(grid, share)
    confirmation = await private_followup(fake, shared)
    (post,) = art_posts(fake)
    assert confirmation.content == f"Shared: {link(ART_CHANNEL_ID, post.id)}"
    assert post.attachments[0].data == grid.attachments[1].data, "image 2, as it was"
    assert post.content == f"⭐ <@{USER_ID}>'s image, shared by <@{USER_ID}>"
    (embed,) = post.embeds
    assert embed["description"] == "fox, snow" and embed["author"]["name"] == "⭐ by alice"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Negative prompt"] == "blurry" and fields["Seed"] == "6" and fields["Steps"] == "3"
    assert fields["Model"] == "fake-model"
    assert fields["Original"] == f"[Jump to the result]({link(CHANNEL_ID, grid.id)})"
    assert post.custom_ids() == [f"sdbot:remix:{job}", f"sdbot:upscale:{job}:2"]

    again = await private_followup(fake, await fake.press(grid, share))
    assert again.content == f"That image is already shared: {link(ART_CHANNEL_ID, post.id)}"
    stranger = await fake.press(grid, f"sdbot:share:{job}:1", user_id=STRANGER, member_permissions=MEMBER)
    assert (
        content(await stranger.wait_response()) == f"Only <@{USER_ID}> or someone with Manage Messages can share this."
    )
    assert len(art_posts(fake)) == 1

    # Others build on it from the art channel: the upscale answers the shared post there.
    await (await fake.press(post, f"sdbot:upscale:{job}:2", user_id=STRANGER)).wait_response()
    reply = await fake.wait_for(lambda: next((m for m in art_posts(fake) if m.attachments and m.id != post.id), None))
    assert reply.reference is not None and int(reply.reference["message_id"]) == post.id
    child_id, params = engine.calls[-1]
    assert params.mode == "upscale" and engine.sources[child_id] == grid.attachments[1].data


async def test_presses_at_once_share_an_image_exactly_once(fake: FakeDiscord, bot: SdBot) -> None:
    single = await first_result(fake, {"prompt": "fox", "steps": 1})
    await set_art_channel(fake)
    share = f"sdbot:share:{job_id_of(single)}:1"
    presses = await asyncio.gather(*(fake.press(single, share, user_id=u) for u in (USER_ID, OWNER_ID, USER_ID)))
    answers = [(await private_followup(fake, press)).content for press in presses]
    assert len(art_posts(fake)) == 1
    assert [a.startswith("Shared: ") for a in answers].count(True) == 1, answers
    assert all(a.startswith(("That image is", "Shared: ")) for a in answers), answers


async def test_remix_modal_is_prefilled_and_its_submission_runs_the_edited_job(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    single = await first_result(
        fake, {"prompt": "fox", "negative_prompt": "blurry", "steps": 3, "seed": 9, "width": 256, "height": 192}
    )
    job = job_id_of(single)
    press = await fake.press(single, f"sdbot:remix:{job}", user_id=STRANGER)
    opened = await press.wait_response()
    assert opened.type == 9 and opened.data is not None
    assert opened.data["custom_id"] == f"sdbot:remix:{job}"
    prefilled = {c["custom_id"]: c.get("value") for c in text_inputs(opened.data["components"])}
    assert prefilled == {
        "prompt": "fox",
        "negative": "blurry",
        "size": "256x192",
        "settings": "Steps: 3, CFG scale: 7, Seed: 9, Sampler: DPM++ 2M, Schedule type: Karras",
    }

    edit = {
        "prompt": "a blue fox",
        "size": "320x256",
        "settings": "Steps: 4, CFG scale: 5.5, Seed: 77, Sampler: Euler a",
    }
    submitted = await fake.submit_modal(press, {**edit, "negative": ""})
    assert content(await submitted.wait_response()).startswith("⏳ Queued")
    reply = await fake.wait_for(lambda: next((m for m in results(fake) if m.id != single.id), None))
    assert reply.reference is not None and int(reply.reference["message_id"]) == single.id
    assert reply.content == f"<@{STRANGER}>"
    _, params = engine.calls[-1]
    assert (params.prompt, params.negative_prompt, params.width, params.height) == ("a blue fox", "", 320, 256)
    assert (params.steps, params.cfg, params.seed, params.sampler, params.mode) == (4, 5.5, 77, "Euler a", "txt2img")


async def test_a_remix_left_as_it_was_keeps_the_sampler_and_its_schedule(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    # A1111 reads "Sampler: DPM++ 2M" alone as Karras: the form names the plain one's schedule.
    single = await first_result(fake, {"prompt": "fox", "steps": 3, "seed": 9, "sampler": "DPM++ 2M"})
    press = await fake.press(single, f"sdbot:remix:{job_id_of(single)}")
    opened = await press.wait_response()
    assert opened.data is not None
    prefilled = {c["custom_id"]: c.get("value") or "" for c in text_inputs(opened.data["components"])}
    assert prefilled["settings"] == "Steps: 3, CFG scale: 7, Seed: 9, Sampler: DPM++ 2M, Schedule type: SGM Uniform"
    submitted = await fake.submit_modal(press, prefilled)
    assert content(await submitted.wait_response()).startswith("⏳ Queued")
    await engine.wait_calls(2)
    assert [params.sampler for _, params in engine.calls] == ["DPM++ 2M", "DPM++ 2M"]


@pytest.mark.parametrize(
    ("edit", "sentence"),
    [
        (
            {"settings": "Steps: 500, CFG scale: 7, Seed: 1, Sampler: Euler"},
            "Steps must be between 1 and 100, not 500.",
        ),
        ({"size": "big"}, "Size must be written as WIDTHxHEIGHT"),
        ({"settings": "Steps: 4, Sampler: LMS"}, "I can't run the sampler LMS"),
        ({"settings": "Steps: 4, Seed: " + "9" * 30}, "Seed must be a number of at most 20 characters"),
        ({"settings": "Steps: 4, Clip skip: 2"}, "I don't know the setting 'Clip skip'"),
        ({"prompt": "   "}, "The prompt is empty"),
        ({"prompt": "a green fox --ar 5:1"}, "An aspect ratio must lie between 1:4 and 4:1, not 5:1."),
        ({"prompt": "a green fox --ar 2:3", "size": "320x256"}, "Give `--ar W:H` or a new size, not both"),
    ],
)
async def test_a_bad_remix_gets_a_sentence_and_the_edit_back(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine, edit: dict[str, str], sentence: str
) -> None:
    single = await first_result(fake, {"prompt": "fox", "steps": 3})
    press = await fake.press(single, f"sdbot:remix:{job_id_of(single)}")
    await press.wait_response()
    values = {"prompt": "a green fox", **edit}
    submitted = await fake.submit_modal(press, values)
    answer = content(await submitted.wait_response())
    assert submitted.ephemeral and answer.startswith(sentence)
    assert f"```\n{values['prompt']}\n" in answer and all(v in answer for v in edit.values())
    assert len(engine.calls) == 1, "nothing queued"


async def test_a_remix_with_ar_in_its_prompt_takes_that_shape_at_the_models_pixel_count(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    single = await first_result(fake, {"prompt": "fox", "steps": 3, "seed": 9})
    press = await fake.press(single, f"sdbot:remix:{job_id_of(single)}")
    opened = await press.wait_response()
    assert opened.data is not None
    prefilled = {c["custom_id"]: c.get("value") or "" for c in text_inputs(opened.data["components"])}
    submitted = await fake.submit_modal(press, {**prefilled, "prompt": "a tall fox --ar 9:16, moonlight"})
    assert content(await submitted.wait_response()).startswith("⏳ Queued")
    await engine.wait_calls(2)
    _, params = engine.calls[-1]
    assert (params.prompt, params.width, params.height) == ("a tall fox, moonlight", 384, 680)


async def test_weekly_digest_posts_the_most_reacted_shares(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path
) -> None:
    now = [1_800_000_000.0]
    bot = make_bot(tmp_path, engine, clock=lambda: now[0])
    async with fake.connected(bot):
        assert await turn_digest_on(fake) == "The weekly digest is on: the first comes in a week."
        grid = await first_result(fake, {"prompt": "foxes", "count": 3, "steps": 1})
        for i in (1, 2, 3):
            now[0] += 60
            await private_followup(fake, await fake.press(grid, f"sdbot:share:{job_id_of(grid)}:{i}"))
        first, second, third = art_posts(fake)
        fake.react(first, "⭐", 2)
        fake.react(second, "⭐", 4)
        fake.react(second, "🔥", 1)

        now[0] += 6 * 86400
        assert await bot.community.digest.run_due() == []
        now[0] += 86400
        (digest,) = await bot.community.digest.run_due()
        assert await bot.community.digest.run_due() == [], "one digest a week"
    posted = fake.message(digest.id)
    assert posted is not None and posted.channel_id == ART_CHANNEL_ID
    assert posted.content.splitlines() == [
        "🏆 **This week's most-loved images**",
        f"1. {link(ART_CHANNEL_ID, second.id)} — 5 reactions",
        f"2. {link(ART_CHANNEL_ID, first.id)} — 2 reactions",
    ]


async def test_a_remix_form_opened_before_a_restart_is_answered_after_it(fake: FakeDiscord, tmp_path: Path) -> None:
    async with fake.connected(make_bot(tmp_path, FakeEngine())):
        single = await first_result(fake, {"prompt": "fox", "steps": 2})
        press = await fake.press(single, f"sdbot:remix:{job_id_of(single)}")
        await press.wait_response()
    engine = FakeEngine()
    async with fake.connected(make_bot(tmp_path, engine)):
        submitted = await fake.submit_modal(press, {"prompt": "a fox after the restart"})
        assert content(await submitted.wait_response()).startswith("⏳ Queued")
        await engine.wait_calls(1)
    assert engine.calls[0][1].prompt == "a fox after the restart"


async def test_an_image_the_safety_checker_flagged_stays_out_of_the_art_channel(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    engine = FakeEngine(safety_checker=True)
    engine.flag_seeds = {42}
    async with fake.connected(make_bot(tmp_path, engine)):
        await set_art_channel(fake)
        grid = await first_result(fake, {"prompt": "a fox", "count": 2, "seed": 42, "steps": 1})
        job = job_id_of(grid)
        refused = await fake.press(grid, f"sdbot:share:{job}:1")
        assert content(await refused.wait_response()) == FLAGGED and refused.ephemeral
        assert art_posts(fake) == []
        await private_followup(fake, await fake.press(grid, f"sdbot:share:{job}:2"))
        assert len(art_posts(fake)) == 1, "the image it did not flag can be shared"


async def drawn_in(fake: FakeDiscord, channel_id: int, prompt: str, **options: object) -> FakeMessage:
    """Run /imagine in a channel and return its result post there."""
    before = {m.id for m in fake.messages(channel_id)}
    inter = await fake.slash("imagine", {"prompt": prompt, "steps": 1, **options}, channel_id=channel_id)
    await inter.wait_response()
    return await fake.wait_for(
        lambda: next((m for m in fake.messages(channel_id) if m.id not in before and m.attachments), None)
    )


@pytest.mark.parametrize("art_age_restricted", [False, True])
async def test_what_an_age_restricted_channel_made_is_shared_only_where_its_rules_would_have_let_it(
    tmp_path: Path, art_age_restricted: bool
) -> None:
    guild = FakeGuild(
        channels=(
            FakeChannel(),
            FakeChannel(id=ART_CHANNEL_ID, name="art", nsfw=art_age_restricted),
            FakeChannel(id=AFTER_DARK, name="after-dark", nsfw=True),
        )
    )
    engine = FakeEngine(safety_checker=True)
    async with FakeDiscord(guilds=[guild]) as fake, fake.connected(make_bot(tmp_path, engine)):
        await set_art_channel(fake)
        block = await fake.slash(
            "sdadmin", {"action": "add", "words": "nude"}, subcommand="policy blocklist", user_id=OWNER_ID
        )
        await block.wait_response()
        # Age-restricted: the block list does not apply and the checker does not run.
        statue = await drawn_in(fake, AFTER_DARK, "a nude statue")
        fox = await drawn_in(fake, AFTER_DARK, "a fox")
        assert not any(engine.checked.values())

        statue_answer = await private_followup(fake, await fake.press(statue, f"sdbot:share:{job_id_of(statue)}:1"))
        fox_answer = await private_followup(fake, await fake.press(fox, f"sdbot:share:{job_id_of(fox)}:1"))
        if art_age_restricted:
            assert statue_answer.content.startswith("Shared: ") and fox_answer.content.startswith("Shared: ")
            assert len(art_posts(fake)) == 2
        else:
            assert statue_answer.content == blocked_here("nude", ART_CHANNEL_ID)
            assert fox_answer.content == unchecked_here(ART_CHANNEL_ID)
            assert art_posts(fake) == []
            # Drawn where the checker ran, the same prompt goes.
            checked = await drawn_in(fake, CHANNEL_ID, "a fox")
            again = await private_followup(fake, await fake.press(checked, f"sdbot:share:{job_id_of(checked)}:1"))
            assert again.content.startswith("Shared: ") and len(art_posts(fake)) == 1
        fake.assert_clean()


async def test_share_answers_before_fetching_the_image_back_from_discord(
    fake: FakeDiscord, bot: SdBot, tmp_path: Path
) -> None:
    single = await first_result(fake, {"prompt": "fox", "steps": 1})
    await set_art_channel(fake)
    job = job_id_of(single)
    shutil.rmtree(tmp_path / "data" / "jobs" / job)
    press = await fake.press(single, f"sdbot:share:{job}:1")
    shared = await private_followup(fake, press)
    assert shared.content.startswith("Shared: ")
    paths = [r.path for r in fake.requests]
    answered = next(i for i, path in enumerate(paths) if path.startswith(f"/interactions/{press.id}/"))
    fetched = paths.index(f"/channels/{CHANNEL_ID}/messages/{single.id}")
    assert answered < fetched, "the deferral came before the download"


async def test_a_share_that_breaks_midway_leaves_no_claim_behind(
    fake: FakeDiscord, bot: SdBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    single = await first_result(fake, {"prompt": "fox", "steps": 1})
    await set_art_channel(fake)
    job = job_id_of(single)
    # A kept image gone bad, too big to upload as it is: re-encoding it fails (not a Discord error).
    kept = tmp_path / "data" / "jobs" / job / "1.png"
    kept.write_bytes(b"\0" * (fake.guild().filesize_limit + 1))
    broken = await fake.press(single, f"sdbot:share:{job}:1")
    assert (await broken.wait_response()).type == 5
    await fake.wait_for(lambda: any(r.exc_info for r in caplog.records) or None, what="the share to fail")
    assert await bot.community.store.share(job, 1) is None, "the claim was released"
    kept.unlink()
    shared = await private_followup(fake, await fake.press(single, f"sdbot:share:{job}:1"))
    assert shared.content.startswith("Shared: ")


async def test_a_digest_posted_but_not_recorded_is_not_posted_again(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path
) -> None:
    now = [1_800_000_000.0]
    bot = make_bot(tmp_path, engine, clock=lambda: now[0])
    async with fake.connected(bot):
        await turn_digest_on(fake)
        single = await first_result(fake, {"prompt": "fox", "steps": 1})
        await private_followup(fake, await fake.press(single, f"sdbot:share:{job_id_of(single)}:1"))
        (post,) = art_posts(fake)
        fake.react(post, "⭐", 3)
        turned_on = now[0]
        now[0] += 8 * 86400
        (digest,) = await bot.community.digest.run_due()
        # As if the bot died after posting, before recording it.
        with sqlite3.connect(tmp_path / "sdbot.sqlite3") as db:
            db.execute("UPDATE guild_settings SET digest_at = ?", (turned_on,))
        (again,) = await bot.community.digest.run_due()
    assert again.id == digest.id
    assert [m.id for m in art_posts(fake) if m.content.startswith("🏆")] == [digest.id]
