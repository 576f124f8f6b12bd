"""A1111 prompt syntax as plain text (no torch): attention weights, BREAK, and `<lora:name:te:unet>` tags.

The bot imports this to check prompts before a job is queued; the engine to encode them and to apply LoRAs.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.params import MAX_LORA_WEIGHT, InvalidParams

# A1111's modules/prompt_parser.py grammar, token by token (escapes, brackets, `:weight)`, plain text).
_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
# How much of a prompt a sentence quotes: enough to find the part, never enough to crowd Discord's 2,000 characters.
QUOTE_CHARS = 60

# A1111's extra-network tag, `<kind:arguments>` (modules/extra_networks.py): every one is taken out of the text the
# encoder sees, also of a kind nobody registered. LoRAs are the kind this bot applies; A1111 registers `lyco` as
# another name for `lora`.
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = frozenset({"lora", "lyco"})
# The arguments A1111's extra_networks_lora.py reads by name; `dyn` (DyLoRA's rank) is not applied here.
_LORA_ARGUMENTS = ("te", "unet")


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text and the weight its tokens' embeddings are multiplied by."""

    text: str
    weight: float

    @property
    def is_break(self) -> bool:
        """Whether this marks a BREAK (A1111 marks it as the text BREAK with weight -1)."""
        return self.text == "BREAK" and self.weight == -1


BREAK = Fragment("BREAK", -1.0)


def quoted(written: str) -> str:
    """A part of a prompt as a sentence quotes it: shortened in the middle when long, keeping both ends."""
    if len(written) <= QUOTE_CHARS:
        return written
    half = (QUOTE_CHARS - 1) // 2
    return f"{written[:half]}…{written[-half:]}"


def _attention_weight(number: str, written: str) -> float:
    """The number of a `(text:weight)`, or InvalidParams naming the bracket.

    A1111's pattern takes any run of digits and dots as the weight, so `(cat:1.2.3)` and `(a:.)` reach its
    `float()`, which raises and fails the whole generation there; here the member is told before anything queues.
    """
    try:
        weight = float(number)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise InvalidParams(f"The weight in `{quoted(written)}` must be a number such as 1.2.")
    return weight


def parse_prompt_attention(text: str) -> tuple[Fragment, ...]:
    """Split a prompt into weighted fragments exactly as A1111's `parse_prompt_attention` does, or raise
    InvalidParams naming a weight that is not a number."""
    parts: list[list[str | float]] = []
    # Where each open bracket's fragments start, and (round ones) where it stands in the text, to quote it.
    round_brackets: list[tuple[int, int]] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for part in parts[start:]:
            part[1] = float(part[1]) * multiplier

    for match in _ATTENTION.finditer(text):
        piece, weight = match.group(0), match.group(1)
        if piece.startswith("\\"):
            parts.append([piece[1:], 1.0])
        elif piece == "(":
            round_brackets.append((len(parts), match.start()))
        elif piece == "[":
            square_brackets.append(len(parts))
        elif weight is not None and round_brackets:
            start, opened_at = round_brackets.pop()
            multiply_range(start, _attention_weight(weight, text[opened_at : match.end()]))
        elif piece == ")" and round_brackets:
            multiply_range(round_brackets.pop()[0], ROUND_MULTIPLIER)
        elif piece == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_MULTIPLIER)
        else:
            for i, chunk in enumerate(_BREAK.split(piece)):
                if i > 0:
                    parts.append([BREAK.text, BREAK.weight])
                parts.append([chunk, 1.0])
    # Brackets left open weigh everything after them, as if closed at the end.
    for start, _opened_at in round_brackets:
        multiply_range(start, ROUND_MULTIPLIER)
    for start in square_brackets:
        multiply_range(start, SQUARE_MULTIPLIER)
    if not parts:
        parts = [["", 1.0]]
    merged: list[list[str | float]] = []
    for part in parts:
        if merged and merged[-1][1] == part[1]:
            merged[-1][0] = str(merged[-1][0]) + str(part[0])
        else:
            merged.append(list(part))
    fragments = tuple(Fragment(str(t), float(w)) for t, w in merged)
    if not all(math.isfinite(f.weight) for f in fragments):
        raise InvalidParams("Weights in nested brackets multiply past what a number holds: use weights such as 1.2.")
    return fragments


@dataclass(frozen=True)
class LoraTag:
    """One LoRA a prompt applies: the file's name (without .safetensors) and its multipliers for the text
    encoder(s) and the UNet (`<lora:name:te:unet>`; the UNet's defaults to the text encoder's)."""

    name: str
    te: float
    unet: float


def _weight(value: str, default: float, written: str, name: str) -> float:
    try:
        weight = float(value) if value.strip() else default
    except ValueError:
        weight = math.nan
    if not (math.isfinite(weight) and abs(weight) <= MAX_LORA_WEIGHT):
        raise InvalidParams(
            f"The weight in {quoted(written)} must be a number from {-MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}:"
            f" write it as <lora:{quoted(name)}:0.8>."
        )
    return weight


def _lora_tag(kind: str, arguments: str) -> LoraTag:
    """A1111's reading: items split at `:`; one with a single `=` is named (`te=0.8`), the others positional,
    name first, then the text encoder's weight, then the UNet's."""
    written = f"<{kind}:{arguments}>"
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in arguments.split(":"):
        key, equals, value = item.partition("=")
        if equals and "=" not in value:
            named[key.strip()] = value
        else:
            positional.append(item)
    name = positional[0].strip() if positional else ""
    if not name:
        raise InvalidParams(f"{quoted(written)} names no LoRA: write it as <lora:name:0.8>.")
    if len(positional) > 3 or set(named) - set(_LORA_ARGUMENTS):
        raise InvalidParams(
            f"This bot applies a LoRA's weight, or its text encoder and UNet weights apart: write {quoted(written)}"
            f" as <lora:{quoted(name)}:0.8> or <lora:{quoted(name)}:0.8:0.5>."
        )
    te = _weight(named.get("te", positional[1] if len(positional) > 1 else ""), 1.0, written, name)
    unet = _weight(named.get("unet", positional[2] if len(positional) > 2 else ""), te, written, name)
    return LoraTag(name, te, unet)


def _merged(tags: Iterable[LoraTag]) -> tuple[LoraTag, ...]:
    """One tag per LoRA, at the sum of its tags' weights, in the order of first mention.

    A1111's networks.py `load_networks` appends a network once per tag and each adds its weight change to the
    layers, so a repeated LoRA's weights add up (from its second generation on, the copies share one object and
    all take the last tag's weight: a quirk not copied here). The change is linear in the weight, so one adapter
    at the sum draws the same as one per tag, and loads once.
    """
    merged: dict[str, LoraTag] = {}
    for tag in tags:
        seen = merged.get(tag.name)
        merged[tag.name] = tag if seen is None else LoraTag(tag.name, seen.te + tag.te, seen.unet + tag.unet)
    for tag in merged.values():
        if max(abs(tag.te), abs(tag.unet)) > MAX_LORA_WEIGHT:
            total = tag.te if abs(tag.te) > MAX_LORA_WEIGHT else tag.unet
            raise InvalidParams(
                f"The weights of <lora:{quoted(tag.name)}> in the prompt add up to {total:g}: keep their sum within"
                f" {-MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}, or name it once."
            )
    return tuple(merged.values())


def split_loras(prompt: str) -> tuple[str, tuple[LoraTag, ...]]:
    """The prompt without its extra-network tags (the text the encoder sees) and the LoRAs it applies, each once,
    in the order of first mention."""
    tags: list[LoraTag] = []

    def take(match: re.Match[str]) -> str:
        if match.group(1) in LORA_KINDS:
            tags.append(_lora_tag(match.group(1), match.group(2)))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), _merged(tags)


def check_lora_count(tags: Sequence[LoraTag], limit: int) -> None:
    """InvalidParams when a prompt applies more LoRAs than the owner allows at once (SDBOT_MAX_LORAS)."""
    if len(tags) > limit:
        raise InvalidParams(
            f"The prompt applies {len(tags)} LoRAs and this bot applies at most {limit} at once: remove"
            f" {len(tags) - limit} of them."
        )


def check_network_kinds(prompt: str) -> None:
    """InvalidParams naming the first extra-network tag of a kind this bot does not apply (`<hypernet:…>`, …):
    A1111 would apply it, or skip it as unknown; here it would be left out without a word."""
    for match in _EXTRA_NETWORK.finditer(prompt):
        if match.group(1) not in LORA_KINDS:
            raise InvalidParams(
                f"This bot applies LoRAs (<lora:name:0.8>) and no other networks: remove {quoted(match.group(0))}"
                " from the prompt."
            )


# File names may be long: a sentence lists as many as fit in this many characters, and says how many more there are.
_LISTED_CHARS = 600


def listed_names(names: list[str]) -> str:
    """The first names, within _LISTED_CHARS, and how many are left out."""
    shown: list[str] = []
    for name in names[:10]:
        if sum(len(n) + 2 for n in shown) + len(name) > _LISTED_CHARS:
            break
        shown.append(name)
    rest = len(names) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest else "")


def check_lora_names(tags: Iterable[LoraTag], available: Iterable[str]) -> None:
    """InvalidParams naming the first unknown LoRA and the installed names closest to it."""
    known = sorted(available)
    for tag in tags:
        if tag.name in known:
            continue
        if not known:
            raise InvalidParams(f"This bot has no LoRAs installed: remove <lora:{quoted(tag.name)}:…> from the prompt.")
        close = difflib.get_close_matches(tag.name, known, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else f"the installed ones are {listed_names(known)}."
        raise InvalidParams(f"There is no LoRA named {quoted(tag.name)!r}: {hint}")
