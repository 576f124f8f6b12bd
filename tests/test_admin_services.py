"""/sdadmin's actions as services, through the fake interaction port: who may use them, and the answers the
end-to-end tests do not reach (real SQLite, no Discord)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest

from bot.community.admin import CommunityAdmin
from bot.interactions.port import ChannelOption, MemberOption
from bot.limits.admin_group import may_administer
from bot.limits.commands import AdminCommands, MemberCommands, QueueView
from bot.limits.owners import OWNERS, Owners, owner_allowed
from bot.policy.commands import PolicyCommands
from core.jobs import Flagged
from tests.support.fake_port import CHANNEL_ID, GUILD_ID, USER_ID, FakeResponder, discord_error, member
from tests.support.service_kit import NO_LIMITS, Kit, job_for, service_kit

ROLE_ID = USER_ID + 100
OWNER_ID = USER_ID + 1


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    async with service_kit(tmp_path) as kit:
        yield kit


async def unreachable() -> discord.AppInfo:
    """Discord's application endpoint, down."""
    raise discord_error(503, "Service Unavailable", "down")


def owners(kit: Kit) -> Owners:
    return Owners(configured=frozenset({OWNER_ID}), fetch=unreachable, clock=kit.clock)


def admin_commands(kit: Kit) -> tuple[AdminCommands, MemberCommands]:
    """/sdadmin's and the members' commands over the kit (whose dispatcher never starts)."""
    shared = kit.shared
    queue_view = QueueView(
        queue=shared.queue, dispatcher=shared.dispatcher, estimator=shared.estimator, clock=shared.clock
    )
    admin = AdminCommands(
        admin=shared.admin,
        store=shared.jobs,
        quota=shared.quota,
        queue=shared.queue,
        dispatcher=shared.dispatcher,
        queue_view=queue_view,
        pauses=shared.pauses,
        owners=owners(kit),
        clock=shared.clock,
    )
    return admin, MemberCommands(quota=shared.quota, queue_view=queue_view, clock=shared.clock)


def test_only_members_with_manage_server_in_a_server_pass_the_admin_check() -> None:
    assert may_administer(member(manage_guild=True))
    assert not may_administer(member())
    # In a DM no server's permissions apply, whatever the payload says.
    assert not may_administer(member(guild_id=None, manage_guild=True))


async def test_only_the_bots_owners_act_on_every_server(kit: Kit) -> None:
    admitted = FakeResponder()
    assert await owner_allowed(member(user_id=OWNER_ID), admitted, owners(kit), "pause every server")
    assert admitted.answers == []
    # Anyone else is told who the owners are, also while Discord cannot say who owns the application.
    refused = FakeResponder()
    assert not await owner_allowed(member(manage_guild=True), refused, owners(kit), "pause every server")
    assert refused.only_text == f"Only {OWNERS} can pause every server."


async def test_limits_are_set_in_whole_numbers_and_shown_for_a_member_with_their_roles(kit: Kit) -> None:
    commands, _ = admin_commands(kit)
    admin = member(user_id=OWNER_ID, manage_guild=True)
    assert await commands.set_limit(admin, "images_per_hour", 2.5, None, None) == (
        "Images per hour must be a whole number, not 2.5."
    )
    assert await commands.set_limit(admin, "cooldown_s", 2.5, None, USER_ID) == (
        f"Set seconds between commands for <@{USER_ID}> to 2.5."
    )
    assert await commands.set_limit(admin, "images_per_hour", 7, ROLE_ID, None) == (
        f"Set images per hour for <@&{ROLE_ID}> to 7."
    )
    # A share of the queue is never lifted: 0 turns would starve the role, so it is refused like 6.
    for refused in (0, 6):
        assert await commands.set_limit(admin, "turns", refused, ROLE_ID, None) == (
            f"Turns per round of the queue must be a whole number from 1 to 5, not {refused}."
        )
    assert await commands.set_limit(admin, "turns", 2, ROLE_ID, None) == (
        f"Set turns per round of the queue for <@&{ROLE_ID}> to 2."
    )
    shown = await commands.show_limits(admin, None, MemberOption(USER_ID, (ROLE_ID,)))
    assert shown.endswith(
        f"**What applies to <@{USER_ID}>:**\n• images per hour: 7\n• images per day: no limit\n"
        "• jobs waiting or running at once: no limit\n• seconds between commands: 2.5\n"
        "• pixels a side at most: no limit\n• steps at most: no limit\n• turns per round of the queue: 2"
    )
    without_the_role = await commands.show_limits(admin, None, MemberOption(USER_ID))
    assert "• images per hour: no limit" in without_the_role and kit.quota.defaults == NO_LIMITS


async def test_setting_flagged_images_for_an_age_restricted_channel_says_what_applies_there(kit: Kit) -> None:
    commands = PolicyCommands(policy=kit.policy, engine_ready=kit.engine_ready, clock=kit.clock)
    admin = member(manage_guild=True)
    text = await commands.flagged(admin, Flagged.WITHHOLD, ChannelOption(CHANNEL_ID, age_restricted=True))
    assert text == (
        f"Flagged images in <#{CHANNEL_ID}> are now withheld (but that channel is age-restricted:"
        " `/sdadmin policy agerestricted` sets what applies there); no safety checker is configured yet"
        " (`SDBOT_SAFETY_MODEL`)."
    )
    policy = await kit.policy.policy(GUILD_ID)
    assert policy.rules(CHANNEL_ID, age_restricted=False).on_flagged is Flagged.WITHHOLD
    assert policy.rules(CHANNEL_ID, age_restricted=True).on_flagged is Flagged.POST


async def test_the_digest_says_whether_it_has_an_art_channel_to_go_to(kit: Kit) -> None:
    community = CommunityAdmin(community=kit.community, admin=kit.admin, clock=kit.clock)
    admin = member(manage_guild=True)
    assert await community.digest(admin, True) == (
        "The weekly digest is on, but there is no art channel yet: set one with `/sdadmin artchannel`."
    )
    assert (await community.art_channel(admin, CHANNEL_ID)).startswith(f"Shared images now go to <#{CHANNEL_ID}>")
    assert await community.digest(admin, True) == "The weekly digest is on: the first comes in a week."
    assert await community.digest(admin, False) == "The weekly digest is off."
    assert not (await kit.community.settings(GUILD_ID)).digest


async def test_a_member_sees_their_own_jobs_and_that_the_server_is_paused(kit: Kit) -> None:
    commands, members = admin_commands(kit)
    assert members.queue_text(member()) == "You have no jobs waiting or running."
    mine, theirs = job_for(member(), "my fox"), job_for(member(user_id=OWNER_ID), "their owl")
    for job in (mine, theirs):
        await kit.queue.put(job.user_id, job, job.guild_id)
    await commands.pause(member(user_id=OWNER_ID, manage_guild=True), True)
    text = members.queue_text(member())
    assert text.startswith("⏸ This server's queue is paused") and "my fox" in text and "their owl" not in text
    # A member's queue in a DM names no server's pause.
    assert not members.queue_text(member(guild_id=None)).startswith("⏸")
