"""A1111 "infotext": the `parameters` text that A1111's PNG Info and civitai read back (no torch)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from core.a1111_samplers import from_a1111, sampler_pairs
from core.params import SAMPLERS, UPSCALE_FACTOR, GenerationParams, InvalidParams, JobMode


@dataclass(frozen=True)
class ModelInfo:
    """How the loaded model is named in infotext: A1111's checkpoint name and its short sha256 ("" if unhashed)."""

    name: str
    hash: str


def quote(value: str) -> str:
    """Quote a value the way A1111 does: JSON when it holds a comma, colon or newline.

    Also when it starts with a double quote or has whitespace at either end, which a reader would take for a
    quoted value or strip: so every value reads back exactly.
    """
    if any(c in value for c in ",:\n") or value.startswith('"') or value != value.strip():
        return json.dumps(value, ensure_ascii=False)
    return value


def hires_pairs(params: GenerationParams) -> list[tuple[str, str]]:
    """A1111's keys for a hires fix (none without one): its second pass's strength, scale, steps and upscaler."""
    if not params.hires:
        return []
    pairs = [("Denoising strength", f"{params.hires_strength:g}"), ("Hires upscale", f"{params.hires:g}")]
    if params.hires_steps:
        # A1111 writes hires steps only when they are not the job's own.
        pairs.append(("Hires steps", str(params.hires_steps)))
    pairs.append(("Hires upscaler", params.hires_upscaler))
    return pairs


def format_infotext(
    params: GenerationParams,
    seed: int,
    model: ModelInfo,
    extras: Sequence[tuple[str, str]] = (),
    vae: ModelInfo | None = None,
) -> str:
    """The infotext of one image of `params`, drawn from `seed`; `extras` (such as `Lora hashes`) go last, an external
    `vae` after the model, as A1111 writes them."""
    pairs: list[tuple[str, str]] = [("Steps", str(params.steps)), *sampler_pairs(params.sampler)]
    pairs += [
        ("CFG scale", f"{params.cfg:g}"),
        ("Seed", str(seed)),
        ("Size", f"{params.width}x{params.height}"),
    ]
    if model.hash:
        # A1111 leaves out the keys it has no value for rather than writing them empty.
        pairs.append(("Model hash", model.hash))
    pairs.append(("Model", model.name))
    if vae is not None:
        pairs += [("VAE hash", vae.hash), ("VAE", vae.name)]
    if params.needs_source:
        # As A1111 writes img2img results: how much of the source image was redrawn.
        pairs.append(("Denoising strength", f"{params.strength:g}"))
    if params.mode is JobMode.UPSCALE:
        # As A1111's extras tab writes an upscale, which the U button's detail pass follows.
        pairs += [("Postprocess upscale by", str(UPSCALE_FACTOR)), ("Postprocess upscaler", params.upscaler)]
    hires = hires_pairs(params)
    # A1111 writes the hires fix's strength where img2img's goes, and its other keys after clip skip.
    pairs += hires[:1]
    if params.clip_skip > 1:
        # A1111 writes clip skip only when it is not the default of 1.
        pairs.append(("Clip skip", str(params.clip_skip)))
    pairs += hires[1:]
    pairs += extras
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {params.negative_prompt}")
    lines.append(", ".join(f"{key}: {quote(value)}" for key, value in pairs))
    return "\n".join(lines)


_NEGATIVE = "Negative prompt:"
# A last line with fewer pairs than this is part of the prompt, as A1111 reads it.
_MIN_PAIRS = 3
# Longer than any number this bot runs, written out (a seed has ten digits). int() of thousands of digits is slow,
# and past 4,300 Python refuses it: an infotext's value can be 16 KiB long.
_NUMBER_MAX_CHARS = 20
_SIZE = re.compile(rf"^(\d{{1,{_NUMBER_MAX_CHARS}}})x(\d{{1,{_NUMBER_MAX_CHARS}}})$")
# How much of a value a sentence quotes.
_SHOWN_MAX_CHARS = 40
# The keys this bot runs; anything else is shown but not used.
USED_KEYS = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size")
HIRES_KEYS = ("Hires upscale", "Hires steps", "Hires upscaler")


def unquote(value: str) -> str:
    """Inverse of quote: a JSON-quoted value decoded, anything else as it is."""
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def parse_pairs(line: str) -> tuple[tuple[str, str], ...]:
    """The `Key: value` pairs of an infotext parameters line, values unquoted, in order."""
    return tuple((key.strip(), unquote(value.strip())) for key, value in scan_pairs(line))


# A1111 reads pairs with re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', line)
# (modules/infotext_utils.py re_param_code): a key, then a JSON-quoted value or one without commas. That pattern
# retries the key from every character of a run without a colon, quadratic in the line (hours for a megabyte);
# scan_pairs finds the same pairs reading each character a fixed number of times.
def scan_pairs(line: str) -> list[tuple[str, str]]:
    """The raw (key, value) groups that A1111's pattern finds in `line` with re.findall, in linear time."""
    stops = _quote_stops(line)
    pairs: list[tuple[str, str]] = []
    start = 0
    while start < len(line):
        key_start = _run_end(line, start, str.isspace)
        if key_start == len(line) or not _is_word(line[key_start]):
            # Every start up to here skips the same spaces to the same character, which cannot begin a key.
            start = key_start + 1
            continue
        key_end = _run_end(line, key_start + 1, _is_key)
        if key_end == key_start + 1 or line[key_end : key_end + 1] != ":":
            # A key is a whole run of key characters: any start inside this run ends it here too, without a colon.
            start = key_end
            continue
        value_start = _run_end(line, key_end + 1, str.isspace)
        value, start = _value(line, value_start, stops)
        pairs.append((line[key_start:key_end], value))
    return pairs


def _run_end(line: str, start: int, keeps: Callable[[str], bool]) -> int:
    """The index of the first character from `start` on that `keeps` rejects (the length if none does)."""
    end = start
    while end < len(line) and keeps(line[end]):
        end += 1
    return end


def _is_word(char: str) -> bool:
    # What \w matches in a str pattern.
    return char.isalnum() or char == "_"


def _is_key(char: str) -> bool:
    # [\w \-/]: what may follow a key's first character.
    return _is_word(char) or char in " -/"


def _value(line: str, start: int, stops: list[int]) -> tuple[str, int]:
    """The value at `start` and where the next pair may begin: a quoted value if one ends the pair, else to a comma."""
    if line[start : start + 1] == '"':
        close = stops[start + 1]
        after = close + 1
        if close > start + 1 and line[close:after] == '"':
            if line[after : after + 1] == ",":
                return line[start:after], after + 1
            if after == len(line) or line[after:] == "\n":  # where $ matches
                return line[start:after], after
    comma = line.find(",", start)
    return (line[start:], len(line)) if comma < 0 else (line[start:comma], comma + 1)


def _quote_stops(line: str) -> list[int]:
    """Where a quoted value's body, (?:\\.|[^\\"])*, begun at each index stops: a quote, a lone backslash or the end."""
    stops = [len(line)] * (len(line) + 2)
    for index in range(len(line) - 1, -1, -1):
        char = line[index]
        if char == '"':
            stops[index] = index
        elif char == "\\":
            escapes = index + 1 < len(line) and line[index + 1] != "\n"
            stops[index] = stops[index + 2] if escapes else index
        else:
            stops[index] = stops[index + 1]
    return stops


@dataclass(frozen=True)
class Infotext:
    """An A1111 infotext read back: the prompts and every parameter pair, known or not."""

    prompt: str
    negative_prompt: str
    pairs: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        """The value of `key`, if the infotext has it."""
        return next((value for name, value in self.pairs if name == key), None)

    @property
    def unknown_keys(self) -> tuple[str, ...]:
        """Keys this bot shows but does not run (Model, VAE, …)."""
        hires = self.get("Hires upscale") is not None
        used = (*USED_KEYS, *HIRES_KEYS, "Denoising strength") if hires else USED_KEYS
        return tuple(key for key, _ in self.pairs if key not in used)

    def to_params(self, base: GenerationParams) -> GenerationParams:
        """`base` with what this infotext sets; InvalidParams with a sentence for what this bot cannot run."""
        # Without A1111's hires keys the image had no hires fix, whatever `base` has.
        changes: dict[str, object] = {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "hires": 0.0}
        changes.update(settings_changes(self.pairs))
        return replace(base, **changes).validate()  # type: ignore[arg-type]


def settings_changes(pairs: tuple[tuple[str, str], ...]) -> dict[str, object]:
    """The GenerationParams fields that infotext pairs set (unknown keys ignored), or InvalidParams."""
    values = dict(pairs)
    changes: dict[str, object] = {}
    for key, field, kind in (("Steps", "steps", int), ("CFG scale", "cfg", float), ("Seed", "seed", int)):
        if key in values:
            changes[field] = _number(key, values[key], kind)
    if "Size" in values:
        match = _SIZE.match(values["Size"].strip())
        if match is None:
            raise InvalidParams(f"Size must be written as WIDTHxHEIGHT, e.g. 512x768, not {_shown(values['Size'])}.")
        changes["width"], changes["height"] = int(match[1]), int(match[2])
    if "Sampler" in values:
        changes["sampler"] = sampler_name(values["Sampler"], values.get("Schedule type", ""))
    if "Hires upscale" in values:
        # A hires fix: its strength is A1111's Denoising strength, its steps the job's unless written.
        changes["hires"] = _number("Hires upscale", values["Hires upscale"], float)
        changes["hires_steps"] = _number("Hires steps", values.get("Hires steps", "0"), int)
        if "Denoising strength" in values:
            changes["hires_strength"] = _number("Denoising strength", values["Denoising strength"], float)
        if "Hires upscaler" in values:
            changes["hires_upscaler"] = values["Hires upscaler"]
    return changes


def _number(key: str, text: str, kind: type[int] | type[float]) -> int | float:
    value = text.strip()
    if len(value) > _NUMBER_MAX_CHARS:
        raise InvalidParams(f"{key} must be a number of at most {_NUMBER_MAX_CHARS} characters, not {_shown(value)}.")
    try:
        return kind(value)
    except ValueError:
        raise InvalidParams(f"{key} must be a number, not {_shown(value)}.") from None


def _shown(value: str) -> str:
    """`value` quoted as a sentence may show it: cut short with "…", as a value can be 16 KiB long."""
    return repr(_clipped(value))


def _clipped(text: str) -> str:
    return text if len(text) <= _SHOWN_MAX_CHARS else text[: _SHOWN_MAX_CHARS - 1] + "…"


def sampler_name(sampler: str, schedule: str) -> str:
    """This bot's name for an A1111 sampler and schedule type, or InvalidParams naming what it offers."""
    ours = from_a1111(sampler, schedule)
    if ours is None:
        shown = f"{sampler} ({schedule})" if schedule else sampler
        raise InvalidParams(f"I can't run the sampler {_clipped(shown)}: choose one of {', '.join(SAMPLERS)}.")
    return ours


def parse_infotext(text: str) -> Infotext | None:
    """Read A1111 infotext as A1111's PNG Info does; None when `text` has no parameters line."""
    # As modules/infotext_utils.py parse_generation_parameters: the whole text stripped (a trailing newline,
    # blank line or space is no part of the last value), split on "\n", each prompt line stripped (so "\r\n"
    # line ends read like "\n"), and every line that starts with "Negative prompt:" loses that prefix.
    *lines, last = text.strip().split("\n")
    pairs = parse_pairs(last)
    if len(pairs) < _MIN_PAIRS:
        return None
    prompt: list[str] = []
    negative: list[str] | None = None
    for line in (line.strip() for line in lines):
        if line.startswith(_NEGATIVE):
            line = line[len(_NEGATIVE) :].strip()
            negative = [] if negative is None else negative
        (prompt if negative is None else negative).append(line)
    return Infotext(prompt=_joined(prompt), negative_prompt=_joined(negative or []), pairs=pairs)


def _joined(lines: list[str]) -> str:
    # A1111 adds a line after a newline only once it has text, so blank lines before the first are dropped.
    return "\n".join(lines).lstrip("\n")
