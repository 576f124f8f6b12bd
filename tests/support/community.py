"""Helpers for the community end-to-end tests: a guild with an art channel, results and their job ids."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bot.results.buttons import Press
from tests.support.bots import results
from tests.support.fake_discord import (
    CHANNEL_ID,
    OWNER_ID,
    FakeCallback,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeInteraction,
    FakeMessage,
)

ART_CHANNEL_ID = CHANNEL_ID + 50


def guild_with_art_channel() -> FakeGuild:
    return FakeGuild(channels=(FakeChannel(), FakeChannel(id=ART_CHANNEL_ID, name="art")))


async def first_result(fake: FakeDiscord, options: dict[str, object], **how: Any) -> FakeMessage:
    """Run /imagine and return its result post (the newest one in the channel)."""
    before = {m.id for m in results(fake)}
    await (await fake.slash("imagine", options, **how)).wait_response()
    return await fake.wait_for(
        lambda: next((m for m in results(fake) if m.id not in before), None), what="the result of /imagine"
    )


def job_id_of(message: FakeMessage) -> str:
    return Press.parse(message.custom_ids()[0]).job_id


async def set_art_channel(fake: FakeDiscord) -> None:
    inter = await fake.slash("sdadmin", {"channel": ART_CHANNEL_ID}, subcommand="artchannel", user_id=OWNER_ID)
    answer = await inter.wait_response()
    assert inter.ephemeral and answer.data is not None
    assert answer.data["content"].startswith(f"Shared images now go to <#{ART_CHANNEL_ID}>")


async def turn_digest_on(fake: FakeDiscord) -> str:
    """Set the art channel and turn the weekly digest on; return the admin's answer."""
    await set_art_channel(fake)
    on = await fake.slash("sdadmin", {"state": "on"}, subcommand="digest", user_id=OWNER_ID)
    return content(await on.wait_response())


def art_posts(fake: FakeDiscord) -> list[FakeMessage]:
    return [m for m in fake.messages(ART_CHANNEL_ID) if not m.deleted]


def content(answer: FakeCallback) -> str:
    assert answer.data is not None
    return str(answer.data["content"])


async def private_followup(fake: FakeDiscord, inter: FakeInteraction) -> FakeMessage:
    """The ephemeral followup a deferred interaction ends with."""
    await inter.wait_response()
    message = await fake.wait_for(lambda: next(iter(inter.followups), None), what="a followup")
    assert message.ephemeral
    return message


def text_inputs(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The text inputs of a modal, whatever rows or labels wrap them."""
    for component in components:
        if component.get("type") == 4:
            yield component
        yield from text_inputs(component.get("components") or [])
        if isinstance(component.get("component"), dict):
            yield from text_inputs([component["component"]])
