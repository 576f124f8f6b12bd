"""Shares, art channels and drafts in a real SQLite file; two connections claim the same image."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.community.store import DRAFT_KEEP_S, STALE_CLAIM_S, CommunityStore
from bot.pipeline.database import Database
from bot.pipeline.store import JobStore
from core.jobs import Job
from core.params import GenerationParams


def make_job(job_id: str, created_at: float) -> Job:
    return Job(job_id, GenerationParams(prompt="fox", count=2), 1, "fox fan", 10, 20, created_at)


async def test_an_image_is_claimed_once_even_from_two_connections(tmp_path: Path) -> None:
    path = tmp_path / "sdbot.sqlite3"
    first_db, second_db = Database(path), Database(path)
    first = JobStore(first_db)
    await first_db.open()
    await second_db.open()
    await first.add(make_job("ab12", 1.0))
    stores = [CommunityStore(first_db), CommunityStore(second_db)]
    claims = await asyncio.gather(*(stores[i % 2].claim_share("ab12", 1, 10, 30, 100 + i, 50.0) for i in range(20)))
    assert sum(claim is None for claim in claims) == 1
    assert {claim.message_id for claim in claims if claim is not None} == {None}, "still being posted"

    await stores[0].share_posted("ab12", 1, 999)
    existing = await stores[1].claim_share("ab12", 1, 10, 30, 7, 50.0 + 10 * STALE_CLAIM_S)
    assert existing is not None and existing.message_id == 999, "a posted share is never taken over"
    assert await stores[1].claim_share("ab12", 2, 10, 30, 7, 60.0) is None, "another image of the job is its own"
    await first_db.close()
    await second_db.close()


async def test_a_claim_left_by_a_failed_or_interrupted_post_can_be_taken_again(tmp_path: Path) -> None:
    database = Database(tmp_path / "sdbot.sqlite3")
    store = JobStore(database)
    await database.open()
    await store.add(make_job("ab12", 1.0))
    community = CommunityStore(database)
    assert await community.claim_share("ab12", 1, 10, 30, 5, 100.0) is None
    await community.release_share("ab12", 1)  # the post failed: the member may try again at once
    assert await community.claim_share("ab12", 1, 10, 30, 5, 101.0) is None
    # The bot died mid-post: the claim blocks others until it is stale.
    assert await community.claim_share("ab12", 1, 10, 30, 6, 101.0 + STALE_CLAIM_S - 1) is not None
    assert await community.claim_share("ab12", 1, 10, 30, 6, 101.0 + STALE_CLAIM_S + 1) is None
    share = await community.share("ab12", 1)
    assert share is not None and share.shared_by == 6
    await database.close()


async def test_settings_digest_and_drafts_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sdbot.sqlite3"
    database = Database(path)
    await database.open()
    community = CommunityStore(database)
    assert (await community.settings(10)).art_channel_id is None
    await community.set_digest(10, True, 5.0)
    await community.set_art_channel(10, 30)
    draft = await community.add_draft(1, GenerationParams(prompt="fox", steps=12), 6.0)
    await database.close()
    await database.open()
    community = CommunityStore(database)
    settings = await community.settings(10)
    assert (settings.art_channel_id, settings.digest, settings.digest_at) == (30, True, 5.0)
    assert [s.guild_id for s in await community.digest_guilds()] == [10]
    assert await community.draft(draft) == GenerationParams(prompt="fox", steps=12)
    assert await community.draft("0000000000") is None
    await database.close()


async def test_drafts_are_forgotten_a_day_after_they_were_read(tmp_path: Path) -> None:
    database = Database(tmp_path / "sdbot.sqlite3")
    await database.open()
    community = CommunityStore(database)
    old = await community.add_draft(1, GenerationParams(prompt="old"), 100.0)
    fresh = await community.add_draft(1, GenerationParams(prompt="fresh"), 100.0 + DRAFT_KEEP_S)
    assert await community.prune_drafts(100.0 + DRAFT_KEEP_S) == 0, "a draft exactly a day old is kept"
    assert await community.prune_drafts(101.0 + DRAFT_KEEP_S) == 1
    assert await community.draft(old) is None
    assert await community.draft(fresh) == GenerationParams(prompt="fresh")
    await database.close()
