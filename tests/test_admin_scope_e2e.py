"""/sdadmin acts on the admin's own server; what acts on every server is for the bot's owners: the real client
against the fake Discord, with two servers that each have their own admins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.app import SdBot
from bot.limits.admin_group import NOT_ADMIN
from bot.limits.owners import OWNERS, REFRESH_S
from tests.support.bots import answer, make_bot
from tests.support.fake_discord import (
    CHANNEL_ID,
    GUILD_ID,
    OWNER_ID,
    USER_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeTeam,
    FakeTeamMember,
    FakeUser,
)
from tests.support.fake_engine import FakeEngine

# Server A is owned by ADMIN_A; the bot's owner (the application's, OWNER_ID) is one of its moderators.
ADMIN_A = USER_ID + 10
MODS = GUILD_ID + 60
# Server B is owned by ADMIN_B, and has nothing to do with the bot's owner.
GUILD_B = GUILD_ID + 1000
CHANNEL_B = CHANNEL_ID + 1000
ADMIN_B = USER_ID + 20
MEMBER_B = USER_ID + 21
OWNER = FakeUser(id=OWNER_ID, username="owner")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server_a = FakeGuild(
        owner_id=ADMIN_A,
        roles=(FakeRole(id=MODS, name="mods", permissions=discord.Permissions(manage_guild=True).value),),
        members=(FakeMember(OWNER, roles=(MODS,)),),
    )
    server_b = FakeGuild(id=GUILD_B, name="Other", channels=(FakeChannel(id=CHANNEL_B),), owner_id=ADMIN_B)
    users = [FakeUser(id=ADMIN_A, username="ann"), FakeUser(id=ADMIN_B, username="ben")]
    async with FakeDiscord(guilds=[server_a, server_b], users=users, owner=OWNER) as fake:
        yield fake
        fake.assert_clean()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(max_batch=4)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def bot(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path, clock: Clock) -> AsyncIterator[SdBot]:
    client = make_bot(tmp_path, engine, clock=clock, guild_ids=(GUILD_ID, GUILD_B))
    async with fake.connected(client):
        yield client


async def imagine(fake: FakeDiscord, bot: SdBot, guild_id: int, user_id: int, prompt: str = "a red fox") -> str:
    """/imagine in a server; returns the acknowledgement once the job is in the queue."""
    completion = asyncio.ensure_future(bot.wait_for("app_command_completion", timeout=10))
    inter = await fake.slash("imagine", {"prompt": prompt, "steps": 1}, user_id=user_id, guild_id=guild_id)
    await completion
    return await answer(inter)


async def admin(fake: FakeDiscord, user_id: int, guild_id: int, subcommand: str, **options: Any) -> str:
    inter = await fake.slash("sdadmin", options, subcommand=subcommand, user_id=user_id, guild_id=guild_id)
    text = await answer(inter)
    assert inter.ephemeral
    return text


def results(fake: FakeDiscord, channel_id: int) -> list[str]:
    """The prompts of the results posted in a channel."""
    return [m.embeds[0]["description"] for m in fake.messages(channel_id) if m.attachments and m.embeds]


async def test_pausing_a_server_holds_only_its_jobs_and_tells_its_members(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    assert (await admin(fake, ADMIN_B, GUILD_B, "pause")).startswith("The queue is paused on this server")
    ack = await imagine(fake, bot, GUILD_B, MEMBER_B, "held fox")
    assert ack == "⏸ Queued, but this server's queue is paused by its admins: your job starts once it is resumed."
    assert (await imagine(fake, bot, GUILD_ID, USER_ID, "free fox")).startswith("⏳ Queued")
    await fake.wait_for(lambda: results(fake, CHANNEL_ID) == ["free fox"], what="server A's result")
    assert [len(batch) for batch in engine.batches] == [1], "the batch took no job of the paused server"

    queue = await answer(await fake.slash("queue", {}, user_id=MEMBER_B, guild_id=GUILD_B))
    first, line = queue.splitlines()
    assert first.startswith("⏸ This server's queue is paused by its admins: jobs still join it")
    assert "#1 in line, waiting: its server's queue is paused by its admins" in line and "held fox" in line
    assert (await admin(fake, ADMIN_B, GUILD_B, "queue")).startswith("**Queue (paused)**")
    assert (await admin(fake, ADMIN_A, GUILD_ID, "queue")) == "**Queue**\nNothing waiting."

    assert await admin(fake, ADMIN_B, GUILD_B, "resume") == "The queue runs again."
    await fake.wait_for(lambda: results(fake, CHANNEL_B) == ["held fox"], what="server B's result after resume")


async def test_a_pause_survives_a_restart(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path, clock: Clock) -> None:
    before = make_bot(tmp_path, engine, clock=clock, guild_ids=(GUILD_ID, GUILD_B))
    async with fake.connected(before):
        await admin(fake, ADMIN_B, GUILD_B, "pause")
        await imagine(fake, before, GUILD_B, MEMBER_B, "held fox")
    bot = make_bot(tmp_path, engine, clock=clock, guild_ids=(GUILD_ID, GUILD_B))
    async with fake.connected(bot):
        assert (await imagine(fake, bot, GUILD_B, MEMBER_B, "second fox")).startswith("⏸ Queued, but this server's")
        await imagine(fake, bot, GUILD_ID, USER_ID, "free fox")
        await fake.wait_for(lambda: results(fake, CHANNEL_ID) == ["free fox"])
        assert results(fake, CHANNEL_B) == [] and len(bot.queue) == 2
        assert await admin(fake, ADMIN_B, GUILD_B, "resume") == "The queue runs again."
        await fake.wait_for(lambda: sorted(results(fake, CHANNEL_B)) == ["held fox", "second fox"])


async def test_the_queue_an_admin_sees_and_cancels_is_their_servers_own(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    engine.gate.clear()
    await imagine(fake, bot, GUILD_ID, USER_ID, "fox of A")
    await engine.wait_calls(1)
    await imagine(fake, bot, GUILD_ID, USER_ID, "second fox of A")
    await imagine(fake, bot, GUILD_B, MEMBER_B, "secret of B")
    b_job = next(job for job in bot.queue.order() if job.guild_id == GUILD_B)

    seen_by_a = await admin(fake, ADMIN_A, GUILD_ID, "queue")
    assert "running since" in seen_by_a and "fox of A" in seen_by_a and "second fox of A" in seen_by_a
    assert "secret of B" not in seen_by_a and str(MEMBER_B) not in seen_by_a and b_job.id not in seen_by_a
    seen_by_b = await admin(fake, ADMIN_B, GUILD_B, "queue")
    assert "secret of B" in seen_by_b and "fox of A" not in seen_by_b and str(USER_ID) not in seen_by_b
    assert await admin(fake, ADMIN_A, GUILD_ID, "cancel", job_id=b_job.id) == (
        f"Job `{b_job.id}` belongs to another server."
    )

    refused = await admin(fake, ADMIN_A, GUILD_ID, "queue", everywhere=True)
    assert refused == f"Only {OWNERS} can see every server's queue; `/sdadmin queue` shows this server's."
    everything = await admin(fake, OWNER_ID, GUILD_ID, "queue", everywhere=True)
    assert everything.startswith("**Queue of every server**") and "secret of B" in everything
    engine.gate.set()


async def test_only_the_bots_owners_pause_every_server(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    refused = await admin(fake, ADMIN_A, GUILD_ID, "pause", everywhere=True)
    assert refused.startswith(f"Only {OWNERS} can pause every server's queue")
    assert "SDBOT_OWNER_IDS" in refused and not bot.queue.paused

    paused = await admin(fake, OWNER_ID, GUILD_ID, "pause", everywhere=True)
    assert paused.startswith("Every server's queue is paused")
    ack = await imagine(fake, bot, GUILD_ID, USER_ID, "fox of A")
    assert ack == "⏸ Queued, but every server's queue is paused: your job starts once it is resumed."
    await imagine(fake, bot, GUILD_B, MEMBER_B, "fox of B")
    await admin(fake, ADMIN_B, GUILD_B, "pause")
    assert await admin(fake, ADMIN_A, GUILD_ID, "resume") == (
        "This server's queue is resumed, but every server's is paused until the bot's owners resume it."
    )
    assert engine.calls == []

    assert await admin(fake, OWNER_ID, GUILD_ID, "resume", everywhere=True) == (
        "Every server's queue runs again, except 1 paused by their own admins."
    )
    await fake.wait_for(lambda: results(fake, CHANNEL_ID) == ["fox of A"])
    assert results(fake, CHANNEL_B) == [] and len(bot.queue) == 1


async def test_only_the_bots_owners_rescan_the_models_folder(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path, clock: Clock
) -> None:
    client = make_bot(tmp_path, engine, clock=clock, guild_ids=(GUILD_ID, GUILD_B), owner_ids=(ADMIN_B,))
    async with fake.connected(client):
        refused = await admin(fake, ADMIN_A, GUILD_ID, "models reload")
        assert refused == f"Only {OWNERS} can rescan the models folder: every server draws from it."
        assert engine.reloads == 0
        assert (await admin(fake, OWNER_ID, GUILD_ID, "models reload")).startswith("Rescanned the models folder")
        assert (await admin(fake, ADMIN_B, GUILD_B, "models reload")).startswith("Rescanned"), "SDBOT_OWNER_IDS"
        assert engine.reloads == 2


async def test_a_teams_admins_and_developers_are_owners_learned_on_demand(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine, clock: Clock
) -> None:
    assert (await admin(fake, ADMIN_B, GUILD_B, "models reload")).startswith("Only the bot's owners")
    team = FakeTeam(
        id=USER_ID + 99,
        owner=FakeUser(id=USER_ID + 98, username="boss"),
        members=(FakeTeamMember(FakeUser(id=ADMIN_B, username="ben")), FakeTeamMember(OWNER, role="read_only")),
    )
    fake.team = team
    assert (await admin(fake, ADMIN_B, GUILD_B, "models reload")).startswith("Only"), "asked Discord a moment ago"
    clock.now += REFRESH_S
    assert (await admin(fake, ADMIN_B, GUILD_B, "models reload")).startswith("Rescanned"), "a developer of the team"
    assert (await admin(fake, OWNER_ID, GUILD_ID, "models reload")).startswith("Only"), "read-only in the team"
    fetches = [r for r in fake.requests if r.path == "/oauth2/applications/@me"]
    assert len(fetches) == 3, "at login, in setup_hook, and on demand once a minute had passed"


async def test_sdadmin_is_offered_in_servers_only(fake: FakeDiscord, bot: SdBot) -> None:
    command = fake.command("sdadmin", GUILD_ID)
    assert command is not None and command["contexts"] == [0] and command["dm_permission"] is False
    options = {o["name"]: o for o in command["options"]}
    for name in ("pause", "resume", "queue"):
        assert [o["name"] for o in options[name]["options"]] == ["everywhere"]


def synced_leaves(options: list[dict[str, Any]], prefix: str = "") -> list[str]:
    """The subcommands of a synced command definition, as "group sub" paths."""
    leaves = []
    for option in options:
        path = f"{prefix}{option['name']}"
        if option["type"] == discord.AppCommandOptionType.subcommand.value:
            leaves.append(path)
        elif option["type"] == discord.AppCommandOptionType.subcommand_group.value:
            leaves += synced_leaves(option["options"], f"{path} ")
    return leaves


async def test_every_sdadmin_command_turns_away_a_member_without_manage_server(fake: FakeDiscord, bot: SdBot) -> None:
    command = fake.command("sdadmin", GUILD_ID)
    assert command is not None
    leaves = synced_leaves(command["options"])
    # Every command the bot defines under /sdadmin, its subgroups' included, is one Discord was given.
    defined = [c.qualified_name.removeprefix("sdadmin ") for c in bot.tree.walk_commands() if c.root_parent]
    assert sorted(leaves) == sorted(c for c in defined if c not in ("limits", "policy", "models", "styles"))
    for path in leaves:
        # The check runs before options are read, so none are needed: Discord hides the command, a member tries.
        inter = await fake.slash("sdadmin", {}, subcommand=path, user_id=MEMBER_B, guild_id=GUILD_B, validate=False)
        assert await answer(inter) == NOT_ADMIN, path
        assert inter.ephemeral, path
    # Manage Server in another server is not enough either.
    inter = await fake.slash("sdadmin", {}, subcommand="pause", user_id=ADMIN_A, guild_id=GUILD_B, validate=False)
    assert await answer(inter) == NOT_ADMIN
    assert not bot.shared.pauses.servers_paused()


async def test_a_long_queue_fits_in_one_message(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    engine.gate.clear()
    for i in range(16):
        await imagine(fake, bot, GUILD_ID, USER_ID + i, f"a detailed painting of fox number {i:02}, golden hour, 8k")
    text = await admin(fake, ADMIN_A, GUILD_ID, "queue")
    assert len(text) <= 2000 and text.endswith(" more") and "fox number 00" in text
    engine.gate.set()
