"""The safe-content policy end to end: the real client against the fake Discord, real SQLite, a fake engine
whose safety checker flags chosen seeds."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import SdBot
from bot.limits.admin_group import NOT_ADMIN
from bot.pipeline.database import Database
from bot.pipeline.store import JobStore
from bot.results.buttons import Press
from bot.results.presses import WITHHELD
from core.jobs import Flagged, Job, JobState
from tests.support.bots import make_bot
from tests.support.fake_discord import (
    CHANNEL_ID,
    OWNER_ID,
    USER_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeInteraction,
    FakeMessage,
)
from tests.support.fake_engine import FakeEngine

AGE_RESTRICTED = CHANNEL_ID + 7
THREAD, AGE_RESTRICTED_THREAD = CHANNEL_ID + 8, CHANNEL_ID + 9
STRANGER = USER_ID + 5  # not OWNER_ID (USER_ID + 1), who owns the guild
BLOCKED = "“{}” is on this server's block list: take it out of your prompt and try again."


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    guild = FakeGuild(
        channels=(
            FakeChannel(),
            FakeChannel(id=AGE_RESTRICTED, name="after-dark", nsfw=True),
            FakeChannel(id=THREAD, name="foxes", type=11, parent_id=CHANNEL_ID),
            FakeChannel(id=AGE_RESTRICTED_THREAD, name="late", type=11, parent_id=AGE_RESTRICTED),
        )
    )
    async with FakeDiscord(guilds=[guild]) as fake:
        yield fake
        fake.assert_clean()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(safety_checker=True)


async def answer(inter: FakeInteraction) -> str:
    callback = await inter.wait_response()
    assert callback.data is not None and inter.ephemeral == (not callback.data["content"].startswith("⏳"))
    return str(callback.data["content"])


async def admin(fake: FakeDiscord, subcommand: str, options: dict[str, Any], user_id: int = OWNER_ID) -> str:
    return await answer(await fake.slash("sdadmin", options, subcommand=f"policy {subcommand}", user_id=user_id))


async def imagine(fake: FakeDiscord, prompt: str, channel_id: int = CHANNEL_ID, **options: Any) -> str:
    inter = await fake.slash("imagine", {"prompt": prompt, "steps": 1, **options}, channel_id=channel_id)
    return await answer(inter)


async def stored_job(folder: Path, job_id: str) -> Job | None:
    """A job as the database holds it while no bot runs."""
    database = Database(folder / "sdbot.sqlite3")
    store = JobStore(database)
    await database.open()
    try:
        return await store.get(job_id)
    finally:
        await database.close()


def posted(fake: FakeDiscord, channel_id: int = CHANNEL_ID) -> list[FakeMessage]:
    """Result posts (they ping the member and carry buttons), oldest first."""
    return [m for m in fake.messages(channel_id) if m.content.startswith("<@") and m.components]


async def test_a_blocked_prompt_is_refused_in_a_normal_channel_and_drawn_in_an_age_restricted_one(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    added = await admin(fake, "blocklist", {"action": "add", "words": "Nude, blood bath"})
    assert added == "Added to the block list of this server: `nude`, `blood bath`."

    assert await imagine(fake, "a N.U.D.E statue, (masterpiece:1.2)") == BLOCKED.format("N.U.D.E")
    assert await imagine(fake, "a blood-bath") == BLOCKED.format("blood-bath")
    assert await bot.store.in_states(*JobState) == [] and engine.calls == []

    # The negative prompt names what to keep out, so it is not checked.
    assert (await imagine(fake, "a marble statue", negative_prompt="nude")).startswith("⏳ Queued")
    assert (await imagine(fake, "a nude statue", AGE_RESTRICTED)).startswith("⏳ Queued")
    await fake.wait_for(lambda: len(posted(fake)) == 1 and len(posted(fake, AGE_RESTRICTED)) == 1)
    assert sorted(p.prompt for _, p in engine.calls) == ["a marble statue", "a nude statue"]

    text = await admin(fake, "agerestricted", {"blocklist": True})
    assert text == "In age-restricted channels, the block list applies."
    assert await imagine(fake, "a nude statue", AGE_RESTRICTED) == BLOCKED.format("nude")


async def test_a_thread_follows_its_channel(fake: FakeDiscord, bot: SdBot) -> None:
    await admin(fake, "blocklist", {"action": "add", "words": "gore", "channel": CHANNEL_ID})
    assert await imagine(fake, "gore", THREAD) == BLOCKED.format("gore")
    assert (await imagine(fake, "gore", AGE_RESTRICTED_THREAD)).startswith("⏳ Queued")


async def test_buttons_are_checked_too(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    await imagine(fake, "a red fox")
    (result,) = await fake.wait_for(lambda: posted(fake) or None)
    await admin(fake, "blocklist", {"action": "add", "words": "fox", "channel": CHANNEL_ID})
    reroll = next(c for c in result.custom_ids() if c.startswith("sdbot:reroll"))
    assert await answer(await fake.press(result, reroll)) == BLOCKED.format("fox")
    assert len(engine.calls) == 1
    # Only that channel blocks it.
    assert (await imagine(fake, "a red fox", AGE_RESTRICTED)).startswith("⏳ Queued")
    await admin(fake, "blocklist", {"action": "remove", "words": "fox", "channel": CHANNEL_ID})
    assert (await answer(await fake.press(result, reroll))).startswith("⏳ Queued")


async def test_policy_commands_are_for_admins_and_show_what_applies(fake: FakeDiscord, bot: SdBot) -> None:
    assert await admin(fake, "blocklist", {"action": "add", "words": "gore"}, user_id=STRANGER) == NOT_ADMIN
    assert (
        await admin(fake, "blocklist", {"action": "add", "words": "..."}) == "“...” has no letters or digits to match."
    )
    await admin(fake, "blocklist", {"action": "add", "words": "gore"})
    assert await admin(fake, "blocklist", {"action": "add", "words": "GORE"}) == (
        "Those are already on the block list of this server."
    )
    text = await admin(fake, "flagged", {"action": "withhold", "channel": CHANNEL_ID})
    assert text == f"Flagged images in <#{CHANNEL_ID}> are now withheld."
    text = await admin(fake, "flagged", {"action": "withhold", "channel": AGE_RESTRICTED})
    assert "that channel is age-restricted" in text
    shown = await admin(fake, "show", {"channel": AGE_RESTRICTED})
    assert shown.splitlines() == [
        "**Safe content**",
        "• Safety checker: loaded",
        "• Block list: `gore`",
        "• Flagged images: posted as spoilers",
        "• Age-restricted channels: block list does not apply, flagged images posted as drawn (not checked)",
        f"• <#{CHANNEL_ID}>: flagged withhold",
        f"• <#{AGE_RESTRICTED}>: flagged withhold",
        f"**In <#{AGE_RESTRICTED}>** (age-restricted):",
        "• Prompts are checked against: empty",
        "• Flagged images are posted as drawn (not checked)",
    ]
    assert await admin(fake, "reset", {"channel": CHANNEL_ID}) == f"<#{CHANNEL_ID}> follows the server's policy again."
    assert f"<#{CHANNEL_ID}>" not in await admin(fake, "show", {})
    command = fake.command("sdadmin", fake.guilds[0].id)
    assert command is not None and int(command["default_member_permissions"]) == 1 << 5
    policy = next(o for o in command["options"] if o["name"] == "policy")
    assert [o["name"] for o in policy["options"]] == ["show", "blocklist", "flagged", "agerestricted", "reset"]


async def test_flagged_images_are_spoilered_by_default(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    engine.flag_seeds = {42}
    await imagine(fake, "a fox", seed=42, count=2)
    (result,) = await fake.wait_for(lambda: posted(fake) or None)
    job_id = engine.calls[0][0]
    assert engine.checked[job_id]
    assert [a.filename for a in result.attachments] == [f"SPOILER_sdbot-{job_id}-42.png", f"sdbot-{job_id}-43.png"]
    assert result.content == f"<@{USER_ID}>"
    job = await bot.store.get(job_id)
    assert job is not None and (job.on_flagged, job.flagged) == (Flagged.SPOILER, (1,))


async def test_withheld_images_are_not_posted_and_lose_their_buttons(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    engine.flag_seeds = {42, 50}
    await admin(fake, "flagged", {"action": "withhold"})
    await imagine(fake, "a fox", seed=42, count=2)
    (grid,) = await fake.wait_for(lambda: posted(fake) or None)
    job_id = engine.calls[0][0]
    assert [a.filename for a in grid.attachments] == [f"sdbot-{job_id}-43.png"]
    assert grid.content == (
        f"<@{USER_ID}> 🚫 The safety checker flagged 1 of these 2 images, so I'm not posting it here:"
        " try another prompt or seed."
    )
    assert grid.custom_ids() == [
        f"sdbot:upscale:{job_id}:2",
        f"sdbot:vary-subtle:{job_id}:2",
        f"sdbot:vary-strong:{job_id}:2",
        f"sdbot:reroll:{job_id}",
        f"sdbot:remix:{job_id}",
        f"sdbot:delete:{job_id}",
        f"sdbot:share:{job_id}:2",
    ]

    await imagine(fake, "a fox", seed=50)
    await fake.wait_for(lambda: len(posted(fake)) == 2)
    single = posted(fake)[1]
    assert single.attachments == [] and "flagged this image, so I'm not posting it here" in single.content
    assert [Press.parse(c).action for c in single.custom_ids()] == ["reroll", "remix", "delete"]


async def test_age_restricted_channels_skip_the_checker_unless_set(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    engine.flag_seeds = {42}
    await imagine(fake, "a fox", AGE_RESTRICTED, seed=42)
    (result,) = await fake.wait_for(lambda: posted(fake, AGE_RESTRICTED) or None)
    assert not engine.checked[engine.calls[0][0]]
    assert not result.attachments[0].filename.startswith("SPOILER_")

    assert await admin(fake, "agerestricted", {"flagged": "withhold", "channel": AGE_RESTRICTED}) == (
        f"In <#{AGE_RESTRICTED}> while it is age-restricted, flagged images are withheld."
    )
    await imagine(fake, "a fox", AGE_RESTRICTED, seed=42)
    await fake.wait_for(lambda: len(posted(fake, AGE_RESTRICTED)) == 2)
    assert engine.checked[engine.calls[1][0]] and posted(fake, AGE_RESTRICTED)[1].attachments == []


async def test_withheld_stays_withheld_when_posted_after_a_restart_and_buttons_find_the_right_image(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    engine = FakeEngine(safety_checker=True)
    engine.flag_seeds = {42}
    first = make_bot(tmp_path, engine)
    async with fake.connected(first):
        await admin(fake, "flagged", {"action": "withhold"})
        # The result cannot be posted: the job stays drawn-but-not-delivered for the next start.
        failure = fake.fail_next("POST", rf"^/channels/{CHANNEL_ID}/messages$", 403, 50013)
        await imagine(fake, "a fox", seed=42, count=2)
        await fake.wait_for(lambda: failure.hits == 1, what="the refused post")
        job_id = engine.calls[0][0]
    job = await stored_job(tmp_path, job_id)
    assert job is not None and job.state is JobState.DONE and job.flagged == (1,)

    second_engine = FakeEngine(safety_checker=True)
    second = make_bot(tmp_path, second_engine)
    async with fake.connected(second):
        (grid,) = await fake.wait_for(lambda: posted(fake) or None, what="the result posted after the restart")
        assert [a.filename for a in grid.attachments] == [f"sdbot-{job_id}-43.png"]
        assert "flagged 1 of these 2 images" in grid.content
        # Past the keep period the image comes back from Discord: image 2 is the message's first attachment.
        shutil.rmtree(tmp_path / "data" / "jobs" / job_id)
        press = await fake.press(grid, f"sdbot:vary-subtle:{job_id}:2")
        await press.wait_response()  # deferred while the image is fetched back
        await second_engine.wait_calls(1)
        child = await second.store.get(second_engine.calls[0][0])
        assert press.original is not None and child is not None and child.message_id == press.original.id
        assert second_engine.sources[second_engine.calls[0][0]] == grid.attachments[0].data


async def test_nothing_is_made_from_a_withheld_image_not_even_from_history_or_an_old_button(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    engine.flag_seeds = {42}
    await admin(fake, "flagged", {"action": "withhold"})
    await imagine(fake, "a fox", seed=42, count=2)
    (grid,) = await fake.wait_for(lambda: posted(fake) or None)
    job_id = engine.calls[0][0]
    await bot.dispatcher.handover.drain()
    inter = await fake.slash("history")
    await inter.wait_response()
    assert inter.original is not None
    assert inter.original.custom_ids() == [f"sdbot:reroll:{job_id}", f"sdbot:upscale:{job_id}:2"]

    # A message still showing a button for it (such as a /history page drawn by an older version).
    for action in ("upscale", "vary-subtle", "zoom-1.5"):
        custom_id = f"sdbot:{action}:{job_id}:1"
        button = {"type": 2, "style": 2, "label": "U1", "custom_id": custom_id}
        old_page = {**grid.payload(), "components": [{"type": 1, "components": [button]}]}
        payload = fake.interaction_payload(3, channel_id=CHANNEL_ID)
        payload.update(data={"custom_id": custom_id, "component_type": 2}, message=old_page)
        assert await answer(await fake.dispatch_interaction(payload)) == WITHHELD
    assert len(engine.calls) == 1
