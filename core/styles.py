"""Style presets as A1111 applies them (modules/styles.py): a style's prompt holds `{prompt}` where the member's
prompt goes, else it follows the member's after ", "; its negative prompt joins the member's the same way. And
A1111's styles.csv, as it writes it (columns name, prompt, negative_prompt; quoted fields, commas, newlines)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from core.params import MAX_PROMPT_CHARS

PLACEHOLDER = "{prompt}"
MAX_NAME_CHARS = 50
MAX_STYLES = 200  # a server's; /sdadmin styles list and autocomplete stay readable


class StyleError(ValueError):
    """A style (or a styles.csv) the bot cannot keep; the message is a sentence naming what to change."""


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def check_name(name: str) -> str:
    """A style's name as kept: trimmed, 1 to 50 characters, no comma (several styles are given comma-separated)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or "," in name or "\n" in name:
        raise StyleError(f"A style's name is 1 to {MAX_NAME_CHARS} characters without commas: `{name[:60]}` is not.")
    return name


def check_style(style: Style) -> Style:
    """The style with its name checked and its texts within a prompt's length; StyleError otherwise."""
    for label, text in (("prompt", style.prompt), ("negative prompt", style.negative_prompt)):
        if len(text) > MAX_PROMPT_CHARS:
            raise StyleError(f"The style {style.name}'s {label} is longer than {MAX_PROMPT_CHARS} characters.")
    return Style(check_name(style.name), style.prompt.strip(), style.negative_prompt.strip())


def merge(style_text: str, text: str) -> str:
    """One style's text applied to the member's, as A1111's merge_prompts does."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, text)
    return ", ".join(part for part in (text.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, styles: Sequence[Style]) -> tuple[str, str]:
    """The prompt and negative prompt with each style applied in turn."""
    for style in styles:
        prompt, negative_prompt = merge(style.prompt, prompt), merge(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt


def parse_styles_csv(text: str) -> list[Style]:
    """The styles of an A1111 styles.csv; StyleError naming the line (and column) at fault."""
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True, strict=True)
    if reader.fieldnames is None or "name" not in reader.fieldnames:
        raise StyleError("Line 1 of styles.csv must be its header, `name,prompt,negative_prompt`, as A1111 writes it.")
    styles: dict[str, Style] = {}
    read = 1  # the lines read before the row being read now
    try:
        for row in reader:
            line = reader.line_num
            if None in row:
                raise StyleError(f"Line {line} of styles.csv has more fields than its header names.")
            try:
                name = check_name(row.get("name") or "")
            except StyleError as exc:
                raise StyleError(f"Line {line} of styles.csv, column name: {exc}") from None
            # A1111 called the prompt column "text" before it was "prompt".
            texts = {
                "prompt": row.get("prompt", row.get("text")) or "",
                "negative_prompt": row.get("negative_prompt") or "",
            }
            for column, value in texts.items():
                if len(value) > MAX_PROMPT_CHARS:
                    raise StyleError(
                        f"Line {line} of styles.csv, column {column}: longer than {MAX_PROMPT_CHARS} characters."
                    )
            styles[name] = check_style(Style(name, texts["prompt"], texts["negative_prompt"]))
            read = reader.line_num
    except csv.Error as exc:
        raise StyleError(f"Line {read + 1} of styles.csv cannot be read: {exc}.") from None
    if len(styles) > MAX_STYLES:
        raise StyleError(f"styles.csv holds {len(styles)} styles: a server keeps at most {MAX_STYLES}.")
    return list(styles.values())
