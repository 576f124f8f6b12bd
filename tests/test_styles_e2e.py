"""Styles end to end: admins keep them, members apply them with /imagine style:, infotext and Remix show the prompt
as drawn."""

from __future__ import annotations

import io

from PIL import Image

from bot.app import SdBot
from tests.support.bots import answer, autocomplete, results
from tests.support.fake_discord import GUILD_ID, OWNER_ID, USER_ID, FakeDiscord
from tests.support.fake_discord.config import FakeFile
from tests.support.fake_engine import FakeEngine
from tests.test_styles import a1111_csv

ADMIN = OWNER_ID  # has Manage Server in the test guild


async def styles(fake: FakeDiscord, subcommand: str, **options: object) -> str:
    inter = await fake.slash("sdadmin", options, subcommand=f"styles {subcommand}", user_id=ADMIN)
    text = await answer(inter)
    assert inter.ephemeral
    return text


async def choices(fake: FakeDiscord, typed: str) -> list[str]:
    return [choice["value"] for choice in await autocomplete(fake, "imagine", {"prompt": "x", "style": typed}, "style")]


async def test_styles_with_and_without_the_placeholder_are_applied_and_kept_in_the_infotext(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    assert await styles(fake, "add", name="Frame", prompt="{prompt}, in a gilded frame", negative_prompt="lowres")
    assert (await styles(fake, "add", name="Warm", prompt="golden hour")).startswith("Added the style `Warm`")
    assert await choices(fake, "") == ["Frame", "Warm"]
    assert await choices(fake, "frame, w") == ["Frame, Warm"]
    inter = await fake.slash(
        "imagine", {"prompt": "a cat", "negative_prompt": "blurry", "style": "frame, Warm", "seed": 4}, user_id=USER_ID
    )
    await inter.wait_response()
    (posted,) = await fake.wait_for(lambda: results(fake) or None)
    _, params = engine.calls[0]
    assert (params.prompt, params.negative_prompt) == ("a cat, in a gilded frame, golden hour", "blurry, lowres")
    infotext = Image.open(io.BytesIO(posted.attachments[0].data)).text["parameters"]
    assert infotext.startswith("a cat, in a gilded frame, golden hour\nNegative prompt: blurry, lowres\n")


async def test_an_unknown_style_gets_a_sentence_and_nothing_is_queued(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    await styles(fake, "add", name="Warm", prompt="golden hour")
    inter = await fake.slash("imagine", {"prompt": "a cat", "style": "warm, noir"}, user_id=USER_ID)
    assert (await answer(inter)).startswith("This server has no style called `noir`")
    assert inter.ephemeral and len(bot.queue) == 0 and engine.calls == []


async def test_an_a1111_styles_csv_imports_and_a_malformed_one_names_its_line(fake: FakeDiscord, bot: SdBot) -> None:
    good = a1111_csv([("Cinematic", '{prompt}, film still, "anamorphic"', "cartoon, 3d"), ("Sketch", "a\nb", "")])
    inter = await fake.slash(
        "sdadmin",
        {"file": FakeFile("styles.csv", good.encode(), "text/csv")},
        subcommand="styles import",
        user_id=ADMIN,
    )
    (done,) = await fake.wait_for(lambda: inter.followups)
    assert done.content == "Imported 2 styles from styles.csv: Cinematic, Sketch"
    listed = await styles(fake, "list")
    assert listed.startswith('**Styles** (2)\n`Cinematic` — {prompt}, film still, "anamorphic" (and a negative')
    bad = b'name,prompt\nok,fine\n"a, b",sepia\n'
    inter = await fake.slash(
        "sdadmin", {"file": FakeFile("styles.csv", bad, "text/csv")}, subcommand="styles import", user_id=ADMIN
    )
    (refused,) = await fake.wait_for(lambda: inter.followups)
    assert refused.content.startswith("Line 3 of styles.csv, column name:")
    assert refused.content.endswith("Nothing was imported.")
    assert (await styles(fake, "list")).startswith("**Styles** (2)")
    assert await styles(fake, "remove", name="sketch") == "Removed the style `Sketch`."
    assert [s.name for s in bot.shared.styles.in_guild(GUILD_ID)] == ["Cinematic"]
