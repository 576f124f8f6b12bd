"""A1111's prompt editing and alternation in a diffusers loop: the conditioning of each step, swapped in by the
step-end callback, for each image of a batch on its own schedule.

`[cat:dog:0.5]` draws cat for the first half of the steps, then dog; `[cat|dog]` alternates every step. Each
distinct set of texts is encoded once, every one padded to the chunks of the longest, so a job's pixels do not
depend on its batch partners (core.batching groups jobs by that length).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from core.prompt_schedule import prompt_schedule, text_at
from engine.conditioning import ChunkCache, Conditioning, chunk_count, encode_prompts


def step_texts(text: str, steps: int, first_pass: int | None = None) -> list[str]:
    """The text the encoder sees at each of `steps` sampler steps (of a hires pass after `first_pass` steps)."""
    schedule = prompt_schedule(text, steps, first_pass)
    return [text_at(schedule, step) for step in range(steps)]


def scheduled_chunk_count(pipe: Any, text: str, steps: int, hires_steps: int = 0) -> int:
    """How many chunks the longest text of a prompt's schedule takes (in either pass, with a hires fix)."""
    texts = {entry.text for entry in prompt_schedule(text, steps)}
    if hires_steps:
        texts |= {entry.text for entry in prompt_schedule(text, hires_steps, steps)}
    return max(chunk_count(pipe, part) for part in texts)


@dataclass(frozen=True)
class StepConditioning:
    """The conditioning of every step of one loop: each distinct one once, and which one each step takes."""

    distinct: tuple[Conditioning, ...]
    by_step: tuple[int, ...]

    @property
    def first(self) -> Conditioning:
        return self.distinct[self.by_step[0]]

    @property
    def changes(self) -> bool:
        return len(self.distinct) > 1

    def at(self, step: int) -> Conditioning:
        """Step `step`'s conditioning (past the last step, the last one's)."""
        return self.distinct[self.by_step[min(step, len(self.by_step) - 1)]]


def encode_schedules(
    pipe: Any,
    prompts: Sequence[str],
    negatives: Sequence[str],
    steps: int,
    clip_skip: int = 0,
    cache: ChunkCache | None = None,
    min_chunks: int = 1,
    first_pass: int | None = None,
) -> StepConditioning:
    """Each row's prompt and negative prompt, as A1111 schedules them over `steps` (of a hires pass after
    `first_pass` steps), encoded per distinct step and padded to `min_chunks` at least."""
    texts = [step_texts(text, steps, first_pass) for text in [*prompts, *negatives]]
    # Every step padded to the longest text any row has at any step: the same length throughout the loop.
    longest = max(min_chunks, *(chunk_count(pipe, text) for text in {text for row in texts for text in row}))
    distinct: dict[tuple[str, ...], int] = {}
    encoded: list[Conditioning] = []
    by_step = []
    half = len(prompts)
    for step in range(steps):
        key = tuple(row[step] for row in texts)
        if key not in distinct:
            distinct[key] = len(encoded)
            encoded.append(encode_prompts(pipe, key[:half], key[half:], clip_skip, cache, min_chunks=longest))
        by_step.append(distinct[key])
    return StepConditioning(tuple(encoded), tuple(by_step))


def swap_in(pipeline: Any, tensors: dict[str, Any], conditioning: Conditioning) -> None:
    """Put a step's conditioning where the loop reads it: diffusers concatenates the negative rows before the
    positive ones (only with guidance on), and SDXL's pooled embedding likewise as `add_text_embeds`."""
    current = tensors["prompt_embeds"]
    guided = pipeline.do_classifier_free_guidance
    embeds = conditioning.prompt_embeds
    if guided:
        embeds = torch.cat([conditioning.negative_prompt_embeds, embeds])
    tensors["prompt_embeds"] = embeds.to(device=current.device, dtype=current.dtype)
    if "add_text_embeds" in tensors and conditioning.pooled_prompt_embeds is not None:
        pooled = conditioning.pooled_prompt_embeds
        if guided and conditioning.negative_pooled_prompt_embeds is not None:
            pooled = torch.cat([conditioning.negative_pooled_prompt_embeds, pooled])
        tensors["add_text_embeds"] = pooled.to(device=tensors["add_text_embeds"].device)


def swapped_tensors(pipe: Any) -> list[str]:
    """The tensors the step-end callback must be handed to swap conditioning in this pipeline."""
    names = ["latents", "prompt_embeds"]
    if "add_text_embeds" in getattr(pipe, "_callback_tensor_inputs", ()):
        names.append("add_text_embeds")
    return names
