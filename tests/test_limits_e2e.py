"""Limits, the queue commands and /sdadmin end to end: the real client against the fake Discord."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import SdBot
from bot.limits.rules import Limits
from bot.results.render import cancelled_text
from core.jobs import JobState
from tests.support.bots import answer, make_bot, results
from tests.support.fake_discord import (
    CHANNEL_ID,
    GUILD_ID,
    OWNER_ID,
    USER_ID,
    FakeDiscord,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeRole,
    FakeUser,
)
from tests.support.fake_engine import FakeEngine

OTHER = USER_ID + 5  # not OWNER_ID (USER_ID + 1), who owns the guild
PATRON_ROLE = GUILD_ID + 50
PATRON = USER_ID + 2
LIMITS = Limits(images_per_hour=2, images_per_day=None, max_queued=None, cooldown_s=0.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    guild = FakeGuild(
        roles=(FakeRole(id=PATRON_ROLE, name="patron"),),
        members=(FakeMember(FakeUser(id=PATRON, username="pat"), roles=(PATRON_ROLE,)),),
    )
    async with FakeDiscord(guilds=[guild], users=[FakeUser(id=PATRON, username="pat")]) as fake:
        yield fake
        fake.assert_clean()


@pytest.fixture
async def bot(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path) -> AsyncIterator[SdBot]:
    client = make_bot(tmp_path, engine, limits=LIMITS)
    async with fake.connected(client):
        yield client


async def imagine(
    fake: FakeDiscord, user_id: int = USER_ID, *, bot: SdBot | None = None, **options: Any
) -> FakeInteraction:
    """/imagine; with `bot`, return only once its handler has finished (the job is in the queue)."""
    completion = asyncio.ensure_future(bot.wait_for("app_command_completion", timeout=10)) if bot else None
    inter = await fake.slash("imagine", {"prompt": "a red fox", "steps": 1, **options}, user_id=user_id)
    if completion is not None:
        await completion
    return inter


async def admin(fake: FakeDiscord, subcommand: str, options: dict[str, Any] | None = None, **how: Any) -> str:
    inter = await fake.slash("sdadmin", options or {}, subcommand=subcommand, user_id=how.pop("user_id", OWNER_ID))
    text = await answer(inter)
    assert inter.ephemeral
    return text


async def test_a_member_over_the_limit_is_refused_while_another_is_served(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    await answer(await imagine(fake, count=2))
    refused = await imagine(fake)
    text = await answer(refused)
    assert refused.ephemeral
    assert text.startswith("You have used 2 of your 2 images this hour; this job needs 1. You can go again <t:")
    assert text.endswith(":R>.")
    assert (await answer(await imagine(fake, OTHER))).startswith("⏳ Queued")
    await fake.wait_for(lambda: len(results(fake)) == 2, what="two results")
    assert sorted(len(p.seeds()) for _, p in engine.calls) == [1, 2]
    assert len(await bot.store.in_states(*JobState)) == 2, "the refused job was never stored"


async def test_buttons_count_like_commands(fake: FakeDiscord, bot: SdBot) -> None:
    await answer(await imagine(fake, count=2))
    (grid,) = await fake.wait_for(lambda: results(fake) or None)
    upscale, vary = grid.custom_ids()[0], grid.custom_ids()[2]
    assert (await answer(await fake.press(grid, upscale))) == "That job counts 4 images, more than your 2 per hour."
    assert (await answer(await fake.press(grid, vary))).startswith(
        "You have used 2 of your 2 images this hour; this job needs 1. You can go again <t:"
    )


async def test_a_banned_member_is_refused_and_non_admins_cannot_ban(fake: FakeDiscord, bot: SdBot) -> None:
    assert (
        await admin(fake, "ban", {"member": USER_ID}, user_id=OTHER)
        == "Only members with Manage Server can use /sdadmin."
    )
    assert (
        await admin(fake, "ban", {"member": USER_ID, "reason": "spam"})
        == f"Banned <@{USER_ID}> from using the bot here (spam)."
    )
    refused = await imagine(fake)
    assert await answer(refused) == "You can't use me in this server: an admin has banned you (spam)."
    assert await admin(fake, "unban", {"member": USER_ID}) == f"<@{USER_ID}> can use the bot again."
    assert (await answer(await imagine(fake))).startswith("⏳ Queued")


async def test_the_sdadmin_command_is_hidden_from_members_by_default(fake: FakeDiscord, bot: SdBot) -> None:
    command = fake.command("sdadmin", GUILD_ID)
    assert command is not None and int(command["default_member_permissions"]) == 1 << 5  # Manage Server
    assert {o["name"] for o in command["options"]} >= {"limits", "ban", "unban", "queue", "cancel", "pause", "resume"}


async def test_role_and_member_overrides_apply_and_survive_a_restart(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path
) -> None:
    async with fake.connected(make_bot(tmp_path, engine, limits=LIMITS)):
        text = await admin(fake, "limits set", {"setting": "images_per_hour", "value": 0, "role": PATRON_ROLE})
        assert text == f"Set images per hour for <@&{PATRON_ROLE}> to no limit."
        await admin(fake, "limits set", {"setting": "images_per_hour", "value": 1, "member": OTHER})
        shown = await admin(fake, "limits show", {"member": PATRON})
        assert f"<@&{PATRON_ROLE}>:** images per hour no limit" in shown
        assert "• images per hour: no limit" in shown.split(f"What applies to <@{PATRON}>")[1]
    async with fake.connected(make_bot(tmp_path, engine, limits=LIMITS)):
        for _ in range(3):
            assert (await answer(await imagine(fake, PATRON, count=2))).startswith("⏳ Queued")
        assert (await answer(await imagine(fake, OTHER))).startswith("⏳ Queued")
        assert (await answer(await imagine(fake, OTHER))).startswith("You have used 1 of your 1 images this hour")


async def test_queue_and_quota_show_a_member_where_they_stand(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    engine.gate.clear()
    await answer(await imagine(fake, OTHER))
    await engine.wait_calls(1)
    await answer(await imagine(fake, bot=bot))
    queue = await answer(await fake.slash("queue", {}))
    (line,) = queue.splitlines()
    assert line.startswith("• `") and "#1 in line, starting <t:" in line and f"for <@{USER_ID}>" in line
    quota = await answer(await fake.slash("quota", {}))
    assert "• This hour: 1 of 2 images used, 1 left, the oldest frees up <t:" in quota
    assert "• Waiting or running: 1 (at most no limit)" in quota
    everything = await admin(fake, "queue")
    assert "running since" in everything and "#1 in line" in everything
    engine.gate.set()


async def test_cancel_a_waiting_job_by_its_button_and_get_the_images_back(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    engine.gate.clear()
    await answer(await imagine(fake, OTHER))
    await engine.wait_calls(1)
    waiting = await imagine(fake, count=2, bot=bot)
    await answer(waiting)
    ack = waiting.original
    assert ack is not None and ack.custom_ids() == [f"sdbot:cancel:{ack.custom_ids()[0].split(':')[2]}"]
    stranger = await fake.press(ack, ack.custom_ids()[0], user_id=OTHER)
    assert (await answer(stranger)).startswith(f"Only <@{USER_ID}> or an admin can cancel this.")
    assert await answer(await fake.press(ack, ack.custom_ids()[0])) == "Cancelled."
    assert ack.content == f"❌ Cancelled by <@{USER_ID}>." and ack.components == []
    assert (await answer(await imagine(fake, count=2))).startswith("⏳ Queued"), "the cancelled job was refunded"
    engine.gate.set()
    await fake.wait_for(lambda: len(results(fake)) == 2)
    assert len(engine.calls) == 2


async def test_a_job_cancelled_while_drawing_counts_against_the_limits(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    engine.hold_after_step = 1
    drawing = await imagine(fake, count=2, steps=3)
    await answer(drawing)
    await asyncio.wait_for(engine.holding.wait(), 10)
    ack = drawing.original
    assert ack is not None
    assert await answer(await fake.press(ack, ack.custom_ids()[0])) == "Stopping it after the current step."
    engine.go_on.set()
    await fake.wait_for(lambda: ack.content.startswith("❌ Cancelled"), what="the status saying cancelled")
    assert ack.content == cancelled_text(USER_ID, charged=True)
    assert (await answer(await imagine(fake))).startswith("You have used 2 of your 2 images this hour")
    assert results(fake) == []


async def test_an_admin_cancels_a_running_job_between_steps(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    engine.gate.clear()
    running = await imagine(fake)
    await answer(running)
    await engine.wait_calls(1)
    job_id = engine.calls[0][0]
    assert await admin(fake, "cancel", {"job_id": job_id}) == "Stopping it after the current step."
    engine.gate.set()
    ack = running.original
    assert ack is not None
    await fake.wait_for(lambda: ack.content.startswith("❌ Cancelled"), what="the status saying cancelled")
    assert ack.content == f"❌ Cancelled by <@{OWNER_ID}>."
    job = await bot.store.get(job_id)
    assert job is not None and job.state is JobState.CANCELLED
    assert results(fake) == [] and not any("<@" in m.content and m.reference for m in fake.messages(CHANNEL_ID))
    assert (await answer(await imagine(fake, count=2))).startswith("⏳ Queued"), "not drawn yet: refunded"


async def test_a_roles_turns_outlast_a_restart(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path) -> None:
    first = make_bot(tmp_path, engine, limits=LIMITS)
    async with fake.connected(first):
        await admin(fake, "limits set", {"setting": "turns", "value": 2, "role": PATRON_ROLE})
        await admin(fake, "limits set", {"setting": "images_per_hour", "value": 0, "role": PATRON_ROLE})
        await admin(fake, "pause")  # kept in SQLite: the restarted bot holds the queue too
        for member in (PATRON, PATRON, PATRON, OTHER):
            await imagine(fake, member, bot=first)
        before = [job.id for job in first.queue.order()]
    second = make_bot(tmp_path, engine, limits=LIMITS)
    async with fake.connected(second):
        # Re-queued with the turns they were taken with: the patron's two before the other member's one.
        assert [job.id for job in second.queue.order()] == before
        assert [job.user_id for job in second.queue.order()] == [PATRON, PATRON, OTHER, PATRON]
    assert engine.calls == []


async def test_pause_holds_the_queue_and_resume_lets_it_run(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    assert (await admin(fake, "pause")).startswith("The queue is paused")
    await answer(await imagine(fake, bot=bot))
    assert engine.calls == [] and len(bot.queue) == 1
    assert await admin(fake, "resume") == "The queue runs again."
    await fake.wait_for(lambda: len(results(fake)) == 1)


async def test_a_role_with_two_turns_gets_two_jobs_each_round_of_the_queue(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    text = await admin(fake, "limits set", {"setting": "turns", "value": 2, "role": PATRON_ROLE})
    assert text == f"Set turns per round of the queue for <@&{PATRON_ROLE}> to 2."
    await admin(fake, "limits set", {"setting": "images_per_hour", "value": 0, "role": PATRON_ROLE})
    await bot.queue.pause()
    for member in (PATRON, PATRON, PATRON, OTHER, OTHER):
        await imagine(fake, member, bot=bot, count=1)
    # The patron's first two jobs fill their turns of the first round; the other member's first job closes it.
    assert [job.user_id for job in bot.queue.order()] == [PATRON, PATRON, OTHER, PATRON, OTHER]
    await bot.queue.resume()
    await fake.wait_for(lambda: len(results(fake)) == 5 or None)
