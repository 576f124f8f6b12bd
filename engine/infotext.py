"""A1111 "infotext": the `parameters` text that A1111's PNG Info and civitai read back (no torch)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from engine.a1111_samplers import from_a1111, sampler_pairs
from engine.params import SAMPLERS, GenerationParams, InvalidParams


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


def format_infotext(
    params: GenerationParams, seed: int, model: ModelInfo, extras: Sequence[tuple[str, str]] = ()
) -> str:
    """The infotext of one image of `params`, drawn from `seed`; `extras` (such as `Lora hashes`) go last."""
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
    if params.needs_source:
        # As A1111 writes img2img results: how much of the source image was redrawn.
        pairs.append(("Denoising strength", f"{params.strength:g}"))
    if params.clip_skip > 1:
        # A1111 writes clip skip only when it is not the default of 1.
        pairs.append(("Clip skip", str(params.clip_skip)))
    pairs += extras
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {params.negative_prompt}")
    lines.append(", ".join(f"{key}: {quote(value)}" for key, value in pairs))
    return "\n".join(lines)


# A1111's own pattern (modules/infotext_utils.py): a key, then a JSON-quoted value or one without commas.
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_NEGATIVE = "Negative prompt:"
# A last line with fewer pairs than this is part of the prompt, as A1111 reads it.
_MIN_PAIRS = 3
_SIZE = re.compile(r"^(\d+)x(\d+)$")
# The keys this bot runs; anything else is shown but not used.
USED_KEYS = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size")


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
    return tuple((key.strip(), unquote(value.strip())) for key, value in _PAIR.findall(line))


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
        """Keys this bot shows but does not run (Model, Hires upscale, VAE, …)."""
        return tuple(key for key, _ in self.pairs if key not in USED_KEYS)

    def to_params(self, base: GenerationParams) -> GenerationParams:
        """`base` with what this infotext sets; InvalidParams with a sentence for what this bot cannot run."""
        changes: dict[str, object] = {"prompt": self.prompt, "negative_prompt": self.negative_prompt}
        changes.update(settings_changes(self.pairs))
        return replace(base, **changes).validate()  # type: ignore[arg-type]


def settings_changes(pairs: tuple[tuple[str, str], ...]) -> dict[str, object]:
    """The GenerationParams fields that infotext pairs set (unknown keys ignored), or InvalidParams."""
    values = dict(pairs)
    changes: dict[str, object] = {}
    for key, field, kind in (("Steps", "steps", int), ("CFG scale", "cfg", float), ("Seed", "seed", int)):
        if key in values:
            try:
                changes[field] = kind(values[key])
            except ValueError:
                raise InvalidParams(f"{key} must be a number, not {values[key]!r}.") from None
    if "Size" in values:
        match = _SIZE.match(values["Size"].strip())
        if match is None:
            raise InvalidParams(f"Size must be written as WIDTHxHEIGHT, e.g. 512x768, not {values['Size']!r}.")
        changes["width"], changes["height"] = int(match[1]), int(match[2])
    if "Sampler" in values:
        changes["sampler"] = sampler_name(values["Sampler"], values.get("Schedule type", ""))
    return changes


def sampler_name(sampler: str, schedule: str) -> str:
    """This bot's name for an A1111 sampler and schedule type, or InvalidParams naming what it offers."""
    ours = from_a1111(sampler, schedule)
    if ours is None:
        shown = f"{sampler} ({schedule})" if schedule else sampler
        raise InvalidParams(f"I can't run the sampler {shown}: choose one of {', '.join(SAMPLERS)}.")
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
