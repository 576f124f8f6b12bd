"""Malformed interactions (hypothesis): the bot answers or ignores them, never crashes, and serves the next member."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.results.buttons import ImageAction, JobAction
from tests.support.bots import make_bot, results
from tests.support.fake_discord import CHANNEL_ID, GUILD_ID, USER_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine

OPTION_NAMES = ["prompt", "negative_prompt", "width", "height", "steps", "cfg", "seed", "count", "sampler", "bogus"]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3000),
    st.lists(st.integers(), max_size=3),
)
options = st.dictionaries(st.sampled_from(OPTION_NAMES), values, max_size=6)
custom_ids = st.one_of(
    st.text(min_size=1, max_size=100),
    st.builds(
        lambda action, job, index: f"sdbot:{action}:{job}{index}",
        st.sampled_from([*ImageAction, *JobAction, "zoom-3", "launch"]),
        st.text(alphabet="0123456789abcdef", min_size=0, max_size=14),
        st.sampled_from(["", ":0", ":1", ":2", ":9", ":x", "::"]),
    ),
)


async def exercise(folder: Path, commands: list[dict[str, Any]], presses: list[str]) -> None:
    async with FakeDiscord() as fake:
        async with fake.connected(make_bot(folder, FakeEngine())) as bot:
            await (await fake.slash("imagine", {"prompt": "fox", "steps": 1})).wait_response()
            (result,) = await fake.wait_for(lambda: results(fake) or None)
            command = fake.command("imagine", GUILD_ID)
            assert command is not None
            types = {o["name"]: o["type"] for o in command["options"]}
            for given_options in commands:
                payload = fake.interaction_payload(2, channel_id=CHANNEL_ID)
                payload["data"] = {
                    "id": command["id"],
                    "name": "imagine",
                    "type": 1,
                    "guild_id": str(GUILD_ID),
                    "options": [{"name": k, "type": types.get(k, 3), "value": v} for k, v in given_options.items()],
                }
                inter = await fake.dispatch_interaction(payload)
                try:
                    await inter.wait_response(timeout=2)
                except AssertionError:
                    # Ignoring is allowed for what Discord itself never sends (a string for a number option):
                    # discord.py drops those before any command code runs.
                    assert inter.callbacks == []
            for custom_id in presses:
                result.components[:] = [{"type": 1, "components": [{"type": 2, "style": 2, "custom_id": custom_id}]}]
                inter = await fake.press(result, custom_id)
                await inter.wait_response()
            # Still alive, still serving: the next member's job is drawn and posted.
            before = len(results(fake))
            await (
                await fake.slash("imagine", {"prompt": "still here", "steps": 1}, user_id=USER_ID + 9)
            ).wait_response()
            await fake.wait_for(lambda: len(results(fake)) > before)
            assert not bot.is_closed() and fake.internal_errors == []


@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(options, min_size=8, max_size=8), presses=st.lists(custom_ids, min_size=8, max_size=8))
# Found by this test before: a float where the prompt goes, and a custom_id with a newline in it.
@example(commands=[{"prompt": 1.5}, {}], presses=["\n\x12ü", "sdbot:vary-strong:fbe"])
def test_malformed_commands_and_buttons_never_break_the_bot(
    tmp_path_factory: pytest.TempPathFactory, commands: list[dict[str, Any]], presses: list[str]
) -> None:
    asyncio.run(exercise(tmp_path_factory.mktemp("fuzz"), commands, presses))
