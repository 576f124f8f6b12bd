"""A member's own defaults: what may be kept, how SQLite keeps them (per member, models and styles per server), and
how /imagine's options take them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.imagine.command import ImagineOptions
from bot.member_settings.store import MemberSettingsStore
from bot.pipeline.database import Database
from core.member_settings import MemberSettings, Setting
from core.params import InvalidParams

GUILD, OTHER_GUILD, MEMBER = 11, 12, 21


@pytest.mark.parametrize(
    ("values", "sentence"),
    [
        ({"width": 512}, "Set the width and the height together."),
        ({"ar": "16:9", "width": 512, "height": 512}, "Keep an aspect ratio or a width and height"),
        ({"ar": "5:1"}, "An aspect ratio must lie between 1:4 and 4:1"),
        ({"width": 500, "height": 512}, "Width and height must be multiples of 8"),
        ({"steps": 0}, "Steps must be from 1 to 100."),
        ({"cfg": 31.0}, "CFG must be from 1 to 30."),
        ({"sampler": "Heun"}, "Choose a sampler from:"),
    ],
)
def test_a_setting_a_job_could_not_take_is_refused(values: dict[str, object], sentence: str) -> None:
    with pytest.raises(InvalidParams, match=sentence.replace("(", r"\(")):
        MemberSettings(**values)  # type: ignore[arg-type]


def test_rows_read_back_and_a_row_that_no_longer_reads_is_left_out() -> None:
    kept = MemberSettings(model="deliberate_v2", ar="16:9", steps=3, cfg=5.5, quiet=True)
    assert MemberSettings.from_rows({s.value: v for s, v in kept.rows().items()}) == kept
    # A sampler since dropped, a garbled number, a width without its height: each left out, the rest kept.
    stale = {"sampler": "PLMS", "steps": "many", "width": "512", "cfg": "4", "name_from_the_future": "x"}
    assert MemberSettings.from_rows(stale) == MemberSettings(cfg=4.0)
    # A ratio and a width and height together (never written so): neither wins.
    both = {"ar": "1:1", "width": "512", "height": "512", "steps": "9"}
    assert MemberSettings.from_rows(both) == MemberSettings(steps=9)


def test_clearing_part_of_a_size_clears_all_of_it() -> None:
    assert MemberSettings(width=512, height=768, steps=4).without(Setting.HEIGHT) == MemberSettings(steps=4)
    assert MemberSettings(ar="2:3", steps=4).without(Setting.WIDTH) == MemberSettings(steps=4)


async def test_sqlite_keeps_settings_per_member_with_models_and_styles_per_server(tmp_path: Path) -> None:
    database = Database(tmp_path / "sdbot.sqlite3")
    await database.open()
    try:
        store = MemberSettingsStore(database)
        await store.save(MEMBER, GUILD, MemberSettings(model="anything-v3", style="Warm", steps=3, quiet=True))
        await store.save(MEMBER, OTHER_GUILD, MemberSettings(model="deliberate_v2", steps=5, quiet=True))
        # Steps follow the member everywhere (the last saved); the model and style stay with their server.
        assert store.get(MEMBER, GUILD) == MemberSettings(model="anything-v3", style="Warm", steps=5, quiet=True)
        assert store.get(MEMBER, OTHER_GUILD) == MemberSettings(model="deliberate_v2", steps=5, quiet=True)
        assert store.get(MEMBER + 1, GUILD) == MemberSettings()
        # Saving without a value removes it, there only.
        await store.save(MEMBER, OTHER_GUILD, MemberSettings(steps=5))
        reopened = MemberSettingsStore(database)
        await reopened.load()
        assert reopened.get(MEMBER, OTHER_GUILD) == MemberSettings(steps=5)
        assert reopened.get(MEMBER, GUILD) == MemberSettings(model="anything-v3", style="Warm", steps=5)
    finally:
        await database.close()


def test_the_options_given_beat_the_members_settings_and_a_size_goes_as_a_whole() -> None:
    member = MemberSettings(model="anything-v3", ar="16:9", steps=3, negative_prompt="lowres", style="Warm")
    options = ImagineOptions(prompt="a cat", steps=20)
    assert options.left_to(member, image=False) == MemberSettings(
        model="anything-v3", ar="16:9", negative_prompt="lowres", style="Warm"
    )
    filled = options.with_member(options.left_to(member, image=False))
    assert (filled.model, filled.ar, filled.steps, filled.negative_prompt, filled.style) == (
        "anything-v3",
        "16:9",
        20,
        "lowres",
        "Warm",
    )
    # A width given leaves the member's ratio out (it would be refused beside a width); so does an image prompt.
    assert ImagineOptions(prompt="a cat", width=640).left_to(member, image=False).ar is None
    assert ImagineOptions(prompt="a cat").left_to(member, image=True).ar is None
    sized = MemberSettings(width=640, height=384)
    assert ImagineOptions(prompt="a cat", ar="1:1").with_member(sized).width is None
