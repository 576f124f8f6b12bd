"""A1111 "infotext": the `parameters` text that A1111's PNG Info and civitai read back (no torch)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from engine.params import GenerationParams

# The sampler choices that A1111 (1.6 and later) writes as a sampler plus a schedule type.
_KARRAS_SUFFIX = " Karras"


@dataclass(frozen=True)
class ModelInfo:
    """How the loaded model is named in infotext: A1111's checkpoint name and its short sha256."""

    name: str
    hash: str


def quote(value: str) -> str:
    """Quote a value the way A1111 does: JSON when it holds a comma, colon or newline."""
    if any(c in value for c in ",:\n"):
        return json.dumps(value, ensure_ascii=False)
    return value


def _sampler_pairs(sampler: str) -> list[tuple[str, str]]:
    if sampler.endswith(_KARRAS_SUFFIX):
        return [("Sampler", sampler.removesuffix(_KARRAS_SUFFIX)), ("Schedule type", "Karras")]
    return [("Sampler", sampler)]


def format_infotext(
    params: GenerationParams, seed: int, model: ModelInfo, extras: Sequence[tuple[str, str]] = ()
) -> str:
    """The infotext of one image of `params`, drawn from `seed`; `extras` (such as `Lora hashes`) go last."""
    pairs: list[tuple[str, str]] = [("Steps", str(params.steps)), *_sampler_pairs(params.sampler)]
    pairs += [
        ("CFG scale", f"{params.cfg:g}"),
        ("Seed", str(seed)),
        ("Size", f"{params.width}x{params.height}"),
        ("Model hash", model.hash),
        ("Model", model.name),
    ]
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
