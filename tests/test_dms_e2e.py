"""Direct messages: off by default (Discord offers no command there, and the bot refuses what still comes from a
DM), and with SDBOT_ALLOW_DMS=1 on under the rules that hold where no server's do. The real client against the
fake Discord, its commands synced globally as DMs need."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import SdBot
from bot.limits.rules import Limits
from bot.pipeline.intake import DMS_OFF
from tests.support.bots import answer, make_bot
from tests.support.fake_discord import (
    GUILD_ID,
    OWNER_ID,
    USER_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMessage,
    NotOffered,
)
from tests.support.fake_engine import FakeEngine

OTHER_GUILD = GUILD_ID + 1000
OTHER_ADMIN = USER_ID + 20
ONE_AN_HOUR = Limits(images_per_hour=1, images_per_day=None, max_queued=None, cooldown_s=0.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    other = FakeGuild(id=OTHER_GUILD, channels=(FakeChannel(id=OTHER_GUILD + 1),), owner_id=OTHER_ADMIN)
    async with FakeDiscord(guilds=[FakeGuild(), other]) as fake:
        yield fake
        fake.assert_clean()


def dm_bot(tmp_path: Path, engine: FakeEngine, **options: Any) -> SdBot:
    return make_bot(tmp_path, engine, guild_ids=(), **options)


def dm_results(fake: FakeDiscord) -> list[FakeMessage]:
    """The results the bot posted in the member's DM (they ping the member; the status messages do not)."""
    dm = fake.dm_channel_id(USER_ID)
    return [m for m in fake.messages(dm) if m.content.startswith(f"<@{USER_ID}>") and not m.deleted]


async def test_member_commands_are_offered_in_servers_only_by_default(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path
) -> None:
    async with fake.connected(dm_bot(tmp_path, engine)):
        for name in ("imagine", "queue", "quota", "history", "Read parameters", "sdadmin"):
            command = fake.command(name)
            assert command is not None and command["contexts"] == [0], name
            assert command["integration_types"] == [0], f"{name} is installed to servers, never to a user"
        for name, options in (("imagine", {"prompt": "a fox"}), ("queue", {}), ("quota", {}), ("history", {})):
            with pytest.raises(NotOffered):
                await fake.slash(name, options, guild_id=None)
        with pytest.raises(NotOffered):
            await fake.autocomplete("imagine", {"prompt": "a fox", "model": "dream"}, "model", guild_id=None)
        with pytest.raises(NotOffered):
            await fake.slash("sdadmin", {}, subcommand="queue", guild_id=None)
        dm = await fake.post_as_user(fake.dm_channel_id(USER_ID), "look at this")
        with pytest.raises(NotOffered):
            await fake.context_menu("Read parameters", dm)
        assert (await answer(await fake.slash("imagine", {"prompt": "a fox", "steps": 1}))).startswith("⏳ Queued")
        await engine.wait_calls(1)


async def test_buttons_and_forms_from_a_dm_are_refused_once_dms_are_off(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path
) -> None:
    async with fake.connected(dm_bot(tmp_path, engine, allow_dms=True)):
        assert (await answer(await fake.slash("imagine", {"prompt": "a fox", "steps": 1}, guild_id=None))).startswith(
            "⏳ Queued"
        )
        (result,) = await fake.wait_for(lambda: dm_results(fake) or None, what="the result in the DM")
        job_id = result.custom_ids()[0].split(":")[2]
        remix = await fake.press(result, f"sdbot:remix:{job_id}")
        assert (await remix.wait_response()).type == 9, "the remix form opens while DMs are allowed"
    async with fake.connected(dm_bot(tmp_path, engine)):
        for custom_id in (f"sdbot:reroll:{job_id}", f"sdbot:remix:{job_id}", f"sdbot:share:{job_id}:1"):
            press = await fake.press(result, custom_id)
            assert await answer(press) == DMS_OFF and press.ephemeral, custom_id
        submitted = await fake.submit_modal(remix, {"prompt": "a fox, remixed"})
        assert await answer(submitted) == DMS_OFF
        deleted = await fake.press(result, f"sdbot:delete:{job_id}")
        assert await answer(deleted) == "Deleted.", "taking a result away still works"
    assert len(engine.calls) == 1


async def test_with_dms_allowed_bans_anywhere_count_limits_are_the_defaults_and_images_are_checked(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    engine = FakeEngine(safety_checker=True)
    engine.flag_seeds = {42}
    async with fake.connected(dm_bot(tmp_path, engine, allow_dms=True, limits=ONE_AN_HOUR)) as bot:
        imagine = fake.command("imagine")
        assert imagine is not None and imagine["contexts"] == [0, 1]
        sdadmin = fake.command("sdadmin")
        assert sdadmin is not None and sdadmin["contexts"] == [0], "admin commands stay in servers"

        await fake.slash("imagine", {"prompt": "a fox", "steps": 1, "seed": 42}, guild_id=None)
        (result,) = await fake.wait_for(lambda: dm_results(fake) or None, what="the withheld result in the DM")
        job_id = engine.calls[0][0]
        assert engine.checked[job_id], "DM jobs are always checked"
        assert result.attachments == [] and "flagged this image, so I'm not posting it here" in result.content

        # A server's overrides apply in that server only; the DM has the defaults (usage counts everywhere).
        override = {"setting": "images_per_hour", "value": 0, "member": USER_ID}
        await answer(await fake.slash("sdadmin", override, subcommand="limits set", user_id=OWNER_ID))
        assert (await answer(await fake.slash("imagine", {"prompt": "a fox", "steps": 1}))).startswith("⏳ Queued")
        refused = await answer(await fake.slash("imagine", {"prompt": "a fox", "steps": 1}, guild_id=None))
        assert refused.startswith("You have used 2 of your 1 images this hour")
        assert "of 1 images used" in await answer(await fake.slash("quota", {}, guild_id=None))

        ban = {"member": USER_ID, "reason": "spam"}
        await answer(await fake.slash("sdadmin", ban, subcommand="ban", user_id=OTHER_ADMIN, guild_id=OTHER_GUILD))
        refused = await answer(await fake.slash("imagine", {"prompt": "a fox", "steps": 1}, guild_id=None))
        assert refused == "You can't use me: an admin of a server I'm in has banned you (spam)."
        await fake.dispatch_event("GUILD_DELETE", {"id": str(OTHER_GUILD)})
        await fake.roundtrip()
        assert bot.get_guild(OTHER_GUILD) is None
        refused = await answer(await fake.slash("imagine", {"prompt": "a fox", "steps": 1}, guild_id=None))
        assert refused.startswith("You have used 2 of your 1 images"), "a ban where the bot no longer is does not count"
    assert len(engine.calls) == 2
