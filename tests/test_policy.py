"""What applies in a channel, and the policy kept in real SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.limits.admin_store import AdminStore
from bot.pipeline.database import Database
from bot.pipeline.store import Done, JobStore
from bot.policy.commands import describe_policy
from bot.policy.rules import AGE_BLOCKLIST, AGE_FLAGGED, FLAGGED, GuildPolicy, ScopePolicy
from bot.policy.store import PolicyStore, TooManyEntries
from core.infotext import ModelInfo
from core.jobs import Flagged
from tests.test_store import make_job

GUILD, CHANNEL, OTHER_CHANNEL, ADMIN = 10, 20, 30, 99


def test_defaults_spoiler_in_normal_channels_and_leave_age_restricted_ones_alone() -> None:
    policy = GuildPolicy(server=ScopePolicy(words=("nude",)))
    normal = policy.rules(CHANNEL, age_restricted=False)
    assert normal.block_list.entries == ("nude",) and normal.on_flagged is Flagged.SPOILER
    restricted = policy.rules(CHANNEL, age_restricted=True)
    assert restricted.block_list.entries == () and restricted.on_flagged is Flagged.POST
    assert GuildPolicy().rules(None, age_restricted=False).block_list.entries == ()


def test_a_channel_adds_words_and_overrides_the_servers_settings() -> None:
    policy = GuildPolicy(
        server=ScopePolicy(words=("nude",), settings={FLAGGED: Flagged.SPOILER, AGE_BLOCKLIST: True}),
        channels={CHANNEL: ScopePolicy(words=("gore", "nude"), settings={FLAGGED: Flagged.WITHHOLD})},
    )
    here = policy.rules(CHANNEL, age_restricted=False)
    assert here.block_list.entries == ("nude", "gore") and here.on_flagged is Flagged.WITHHOLD
    elsewhere = policy.rules(OTHER_CHANNEL, age_restricted=False)
    assert elsewhere.block_list.entries == ("nude",) and elsewhere.on_flagged is Flagged.SPOILER
    assert policy.rules(OTHER_CHANNEL, age_restricted=True).block_list.entries == ("nude",)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[PolicyStore]:
    jobs_db = Database(tmp_path / "sdbot.sqlite3")
    await jobs_db.open()
    yield PolicyStore(AdminStore(jobs_db))
    await jobs_db.close()


async def test_entries_and_settings_round_trip_and_every_change_is_logged(store: PolicyStore) -> None:
    assert await store.add_words(GUILD, None, ["nude", "gore"], ADMIN, 1.0) == ["nude", "gore"]
    assert await store.add_words(GUILD, None, ["nude"], ADMIN, 2.0) == []
    assert await store.add_words(GUILD, CHANNEL, ["red fox"], ADMIN, 3.0) == ["red fox"]
    await store.set_setting(GUILD, None, FLAGGED, Flagged.WITHHOLD, ADMIN, 4.0)
    await store.set_setting(GUILD, CHANNEL, AGE_BLOCKLIST, True, ADMIN, 5.0)
    await store.set_setting(GUILD, CHANNEL, AGE_FLAGGED, Flagged.SPOILER, ADMIN, 6.0)
    policy = await store.policy(GUILD)
    assert policy.server == ScopePolicy(words=("nude", "gore"), settings={FLAGGED: Flagged.WITHHOLD})
    assert policy.channels == {
        CHANNEL: ScopePolicy(words=("red fox",), settings={AGE_BLOCKLIST: True, AGE_FLAGGED: Flagged.SPOILER})
    }
    assert await store.policy(GUILD + 1) == GuildPolicy()

    assert await store.remove_words(GUILD, None, ["gore", "never added"], ADMIN, 7.0) == ["gore"]
    assert await store.reset_channel(GUILD, CHANNEL, ADMIN, 8.0)
    assert not await store.reset_channel(GUILD, CHANNEL, ADMIN, 9.0)
    assert await store.policy(GUILD) == GuildPolicy(
        server=ScopePolicy(words=("nude",), settings={FLAGGED: Flagged.WITHHOLD})
    )
    cursor = await store.admin.db.execute("SELECT at, guild_id, by_id, action FROM admin_log ORDER BY at")
    assert [tuple(row) for row in await cursor.fetchall()] == [
        (1.0, GUILD, ADMIN, "policy server: block nude, gore"),
        (3.0, GUILD, ADMIN, f"policy channel {CHANNEL}: block red fox"),
        (4.0, GUILD, ADMIN, "policy server: flagged withhold"),
        (5.0, GUILD, ADMIN, f"policy channel {CHANNEL}: age_blocklist on"),
        (6.0, GUILD, ADMIN, f"policy channel {CHANNEL}: age_flagged spoiler"),
        (7.0, GUILD, ADMIN, "policy server: unblock gore"),
        (8.0, GUILD, ADMIN, f"policy channel {CHANNEL}: reset"),
        (9.0, GUILD, ADMIN, f"policy channel {CHANNEL}: reset"),
    ]


async def test_a_block_list_has_a_ceiling(store: PolicyStore) -> None:
    await store.add_words(GUILD, None, [f"word{i}" for i in range(500)], ADMIN, 1.0)
    with pytest.raises(TooManyEntries):
        await store.add_words(GUILD, None, ["one more"], ADMIN, 2.0)
    assert await store.add_words(GUILD, CHANNEL, ["one more"], ADMIN, 3.0) == ["one more"]


async def test_jobs_keep_what_to_do_with_flagged_images_and_which_were_flagged(tmp_path: Path) -> None:
    jobs_db = Database(tmp_path / "sdbot.sqlite3")
    jobs = JobStore(jobs_db)
    await jobs_db.open()
    await jobs.add(make_job("a", 1.0))
    job = await jobs.get("a")
    assert job is not None and (job.on_flagged, job.flagged, job.withheld) == (Flagged.POST, (), ())
    await jobs.add(replace(make_job("b", 2.0), on_flagged=Flagged.WITHHOLD))
    await jobs.mark_done([Done("b", 1.0, ModelInfo(name="m", hash=""), flagged=(2,))], 3.0)
    await jobs_db.close()
    reopened_db = Database(tmp_path / "sdbot.sqlite3")
    reopened = JobStore(reopened_db)
    await reopened_db.open()
    done = await reopened.get("b")
    assert done is not None and (done.on_flagged, done.flagged, done.withheld) == (Flagged.WITHHOLD, (2,), (2,))
    await reopened_db.close()
    columns = {row[1] for row in sqlite3.connect(tmp_path / "sdbot.sqlite3").execute("PRAGMA table_info(jobs)")}
    assert {"on_flagged", "flagged"} <= columns


def test_a_long_policy_still_fits_one_discord_message() -> None:
    words = tuple(f"word{i}" for i in range(500))
    policy = GuildPolicy(
        server=ScopePolicy(words=words), channels={CHANNEL + i: ScopePolicy(words=words) for i in range(10)}
    )
    text = describe_policy(policy, checker=False, channel_id=CHANNEL, age_restricted=False)
    assert len(text) <= 2000
    assert "(500 in all)" in text and text.splitlines()[-1].endswith("more lines")
