"""Style presets as A1111 applies them, and its styles.csv as it writes it."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import pytest

from bot.limits.admin_store import AdminStore
from bot.pipeline.database import Database
from bot.styles.commands import StyleAdmin
from bot.styles.store import Styles
from core.styles import MAX_STYLES, Style, StyleError, apply_styles, merge, parse_styles_csv


def test_a_style_with_the_placeholder_puts_the_prompt_there_and_one_without_follows_it() -> None:
    # A1111's merge_prompts: "{prompt}" replaced, else ", ".join of the non-empty prompt and style.
    assert merge("oil painting of {prompt}, masterpiece", "a cat") == "oil painting of a cat, masterpiece"
    assert merge("golden hour", "a cat") == "a cat, golden hour"
    assert merge("golden hour", "") == "golden hour"
    assert merge("", "a cat") == "a cat"


def test_styles_apply_in_turn_to_the_prompt_and_the_negative_prompt() -> None:
    styles = [Style("frame", "{prompt}, in a gilded frame", "lowres"), Style("warm", "golden hour", "")]
    assert apply_styles("a cat", "blurry", styles) == ("a cat, in a gilded frame, golden hour", "blurry, lowres")


def a1111_csv(rows: list[tuple[str, str, str]]) -> str:
    """A styles.csv as A1111 saves it (csv.DictWriter, every field quoted as needed)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["name", "prompt", "negative_prompt"])
    writer.writeheader()
    for name, prompt, negative in rows:
        writer.writerow({"name": name, "prompt": prompt, "negative_prompt": negative})
    return out.getvalue()


def test_a1111_styles_csv_with_quotes_commas_and_newlines() -> None:
    rows = [
        ("Cinematic", '{prompt}, film still, "anamorphic", bokeh', "cartoon, 3d"),
        ("Two lines", "first line\nsecond line", ""),
        ("Plain", "watercolor", "photo"),
    ]
    styles = parse_styles_csv(a1111_csv(rows))
    assert styles == [Style(*row) for row in rows]


def test_the_old_text_column_is_read_as_the_prompt() -> None:
    assert parse_styles_csv("name,text\nOld,sepia tone\n") == [Style("Old", "sepia tone", "")]


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("prompt,negative_prompt\nsepia,blurry\n", "Line 1 of styles.csv must be its header"),
        ("name,prompt\n,sepia\n", "Line 2 of styles.csv, column name: A style's name is 1 to 50 characters"),
        ('name,prompt\nok,fine\n"a, b",sepia\n', "Line 3 of styles.csv, column name:"),
        ("name,prompt\nok,fine,extra\n", "Line 2 of styles.csv has more fields than its header names."),
        ("name,prompt\nlong," + "x" * 1501 + "\n", "Line 2 of styles.csv, column prompt: longer than 1500 characters."),
        ('name,prompt\nok,"never closed\n', "Line 2 of styles.csv cannot be read"),
    ],
)
def test_a_malformed_styles_csv_names_the_line_and_column(text: str, sentence: str) -> None:
    with pytest.raises(StyleError) as caught:
        parse_styles_csv(text)
    assert str(caught.value).startswith(sentence)


def test_too_many_styles_are_refused() -> None:
    with pytest.raises(StyleError, match=f"at most {MAX_STYLES}"):
        parse_styles_csv(a1111_csv([(f"s{n}", "x", "") for n in range(MAX_STYLES + 1)]))


async def test_styles_added_at_once_are_all_kept_in_memory_as_in_sqlite(tmp_path: Path) -> None:
    # Fifty admins' presses at once: each adds its own style, and none may be lost from what /imagine reads.
    database = Database(tmp_path / "sdbot.sqlite3")
    await database.open()
    try:
        styles = Styles(database)
        await asyncio.gather(*(styles.put(1, [Style(f"s{n}", f"style {n}")]) for n in range(50)))
        kept = {style.name for style in styles.in_guild(1)}
        again = Styles(database)
        await again.load()
        assert kept == {style.name for style in again.in_guild(1)} == {f"s{n}" for n in range(50)}
        # The server's limit holds under the same race.
        await asyncio.gather(*(styles.put(1, [Style(f"t{n}", "x")]) for n in range(MAX_STYLES)), return_exceptions=True)
        assert len(styles.in_guild(1)) == MAX_STYLES
    finally:
        await database.close()


async def test_a_long_list_of_styles_fits_in_one_message(tmp_path: Path) -> None:
    database = Database(tmp_path / "sdbot.sqlite3")
    await database.open()
    try:
        styles = Styles(database)
        await styles.put(1, [Style(f"style {n:03}", "a long prompt, " * 20) for n in range(MAX_STYLES)])
        text = StyleAdmin(styles=styles, admin=AdminStore(database), clock=lambda: 0.0).describe(1)
        assert len(text) <= 2000 and text.startswith("**Styles** (200)\n`style 000` — a long prompt")
        shown = text.count("\n`style ")
        assert text.endswith(f"\n… and {MAX_STYLES - shown} more")
    finally:
        await database.close()
