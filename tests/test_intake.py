"""The intake as a service, through the fake interaction port: its refusals in order, the acknowledgement, and what
a job takes from where it was asked (real SQLite, no Discord)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.interactions.port import Caller
from bot.limits.rules import Limits
from bot.pipeline.intake import DMS_OFF, RESTARTING, check_channel
from bot.policy.rules import AGE_FLAGGED, FLAGGED, blocked_sentence
from core.jobs import Flagged, Job, JobState
from core.params import InvalidParams
from tests.support.fake_port import CHANNEL_ID, GUILD_ID, UPLOAD_LIMIT, USER_ID, FakeResponder, Kind, custom_ids, member
from tests.support.service_kit import NOW, Kit, job_for, service_kit

ADMIN_ID = USER_ID + 1
THREAD_ID = CHANNEL_ID + 1
ONE_AN_HOUR = Limits(images_per_hour=1, images_per_day=None, max_queued=None, cooldown_s=0.0)


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    async with service_kit(tmp_path, limits=ONE_AN_HOUR) as kit:
        yield kit


async def refusal(kit: Kit, caller: Caller, job: Job) -> str:
    """The one private sentence `accept` answers with; nothing stored, acknowledged or queued."""
    responder, queued = FakeResponder(), len(kit.queue)
    assert await kit.intake.accept(caller, responder, job) is None
    assert await kit.store.get(job.id) is None and len(kit.queue) == queued
    return responder.only_text


async def test_refusals_come_in_order_restarting_dms_installed_block_list_ban_limits(kit: Kit) -> None:
    """A job that fails every check hears of the first only; fixing each one in turn shows the next."""
    await kit.policy.add_words(GUILD_ID, None, ["fox"], ADMIN_ID, NOW)
    await kit.admin.ban(GUILD_ID, USER_ID, "spam", ADMIN_ID, NOW)
    in_dm = member(guild_id=None)
    kit.closing = True
    assert await refusal(kit, in_dm, job_for(in_dm, model="nowhere")) == RESTARTING
    kit.closing = False
    assert await refusal(kit, in_dm, job_for(in_dm, model="nowhere")) == DMS_OFF
    caller = member()
    assert "nowhere" in await refusal(kit, caller, job_for(caller, model="nowhere"))
    assert await refusal(kit, caller, job_for(caller, count=2)) == blocked_sentence("fox")
    banned = await refusal(kit, caller, job_for(caller, "a red cat", count=2))
    assert banned == "You can't use me in this server: an admin has banned you (spam)."
    await kit.admin.unban(GUILD_ID, USER_ID, ADMIN_ID, NOW)
    assert await refusal(kit, caller, job_for(caller, "a red cat", count=2)) == (
        "That job counts 2 images, more than your 1 per hour."
    )


async def test_a_precheck_refuses_as_accept_would_and_reserves_nothing(kit: Kit) -> None:
    caller = member()
    await kit.admin.ban(GUILD_ID, USER_ID, "spam", ADMIN_ID, NOW)
    banned = FakeResponder()
    assert not await kit.intake.precheck(caller, banned, job_for(caller))
    assert banned.only_text == "You can't use me in this server: an admin has banned you (spam)."
    await kit.admin.unban(GUILD_ID, USER_ID, ADMIN_ID, NOW)
    allowed, job = FakeResponder(), job_for(caller)
    assert await kit.intake.precheck(caller, allowed, job)
    assert allowed.answers == [] and await kit.store.get(job.id) is None and len(kit.queue) == 0


async def test_an_accepted_job_is_stored_acknowledged_publicly_and_queued(kit: Kit) -> None:
    caller = member()
    responder = FakeResponder()
    job = await kit.intake.accept(caller, responder, job_for(caller))
    assert job is not None and responder.kinds == [Kind.ACKNOWLEDGED]
    ack = responder.acknowledgement
    assert ack.text == "⏳ Queued — you're next." and not ack.private
    assert custom_ids(ack.view) == [f"sdbot:cancel:{job.id}"]
    stored = await kit.store.get(job.id)
    assert stored is not None and stored.state is JobState.QUEUED and stored.message_id == ack.message_id
    assert kit.queue.order() == [job] and job.message_id == ack.message_id
    # A second member's job waits behind it, and says so.
    other = member(user_id=USER_ID + 2)
    second = FakeResponder()
    assert await kit.intake.accept(other, second, job_for(other)) is not None
    assert second.acknowledgement.text == "⏳ Queued — position 2 in line (1 ahead of you)."


async def test_after_a_public_thinking_the_acknowledgement_takes_its_place(kit: Kit) -> None:
    caller = member()
    responder = FakeResponder()
    await responder.think(private=False)
    assert await kit.intake.accept(caller, responder, job_for(caller)) is not None
    assert responder.kinds == [Kind.THINKING, Kind.ACKNOWLEDGED]


async def test_a_job_discord_would_not_acknowledge_is_dropped_not_run(kit: Kit) -> None:
    caller = member()
    responder = FakeResponder(refuse=frozenset({Kind.ACKNOWLEDGED}))
    job = job_for(caller)
    assert await kit.intake.accept(caller, responder, job) is None
    stored = await kit.store.get(job.id)
    assert stored is not None and stored.state is JobState.FAILED and len(kit.queue) == 0


async def test_a_job_takes_the_upload_limit_and_the_policy_of_where_it_was_asked(kit: Kit) -> None:
    await kit.policy.set_setting(GUILD_ID, CHANNEL_ID, FLAGGED, Flagged.WITHHOLD, ADMIN_ID, NOW)
    await kit.policy.set_setting(GUILD_ID, CHANNEL_ID, AGE_FLAGGED, Flagged.SPOILER, ADMIN_ID, NOW)
    await kit.policy.add_words(GUILD_ID, CHANNEL_ID, ["owl"], ADMIN_ID, NOW)
    # A thread follows its parent channel's policy.
    in_thread = member(channel_id=THREAD_ID, parent_id=CHANNEL_ID, upload_limit=50 * 2**20, user_id=USER_ID + 3)
    job = await kit.intake.accept(in_thread, FakeResponder(), job_for(in_thread))
    assert job is not None and job.on_flagged is Flagged.WITHHOLD and job.size_limit == 50 * 2**20
    assert job.channel_id == THREAD_ID
    assert await refusal(kit, in_thread, job_for(in_thread, "an owl")) == blocked_sentence("owl")
    # An age-restricted channel has settings of its own, and by default no block list.
    restricted = member(age_restricted=True, user_id=USER_ID + 4)
    job = await kit.intake.accept(restricted, FakeResponder(), job_for(restricted, "an owl"))
    assert job is not None and job.on_flagged is Flagged.SPOILER and job.size_limit == UPLOAD_LIMIT
    # Elsewhere the server's defaults apply: flagged images are spoilered, the channel's words are not blocked.
    elsewhere = member(channel_id=CHANNEL_ID + 2, user_id=USER_ID + 5)
    job = await kit.intake.accept(elsewhere, FakeResponder(), job_for(elsewhere, "an owl"))
    assert job is not None and job.on_flagged is Flagged.SPOILER


def test_the_channel_check_names_what_the_bot_lacks() -> None:
    assert check_channel(member()) == CHANNEL_ID
    with pytest.raises(InvalidParams, match="I can only draw in a channel"):
        check_channel(member(channel_id=None))
    with pytest.raises(InvalidParams) as refused:
        check_channel(member(bot_missing=("Attach Files", "Embed Links")))
    assert "give me Attach Files, Embed Links here" in str(refused.value)
