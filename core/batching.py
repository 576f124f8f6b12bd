"""Which jobs may share one denoising loop (plain data, no torch: the bot forms batches, the engine checks them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.params import GenerationParams, InvalidParams, JobMode
from core.prompt_syntax import LoraTag, split_loras

# Beyond this many images a batch gains little on any GPU measured, and a long batch delays the next round.
MAX_BATCH_IMAGES = 8

# The modes one img2img or txt2img call draws: jobs of one of them share a loop where their sizes agree, each over
# its own source image. Outpainting pastes each image back into its own canvas, and the face fix redraws faces one
# by one: those jobs run alone.
SHARED_LOOP_MODES = frozenset({JobMode.TXT2IMG, JobMode.IMG2IMG, JobMode.VARY, JobMode.UPSCALE})


@dataclass(frozen=True)
class BatchKey:
    """What must be equal for images to be denoised together; prompts, negatives, seeds and cfg may differ."""

    model: str
    mode: JobMode
    strength: float  # one img2img strength for the batch (0 for txt2img)
    upscaler: str  # the U button's upscaler enlarges each source before the batch's redraw ("" for other modes)
    width: int
    height: int
    steps: int
    sampler: str
    clip_skip: int
    loras: tuple[LoraTag, ...]  # LoRAs change the weights, for the whole batch
    # A hires fix's second pass runs for the whole batch: 0 (none), or its scale, strength, steps and upscaler.
    hires: tuple[float, float, int, str]
    vae: str  # the VAE decodes the whole batch
    face_fix: bool  # the batch's faces are redrawn after it, one image at a time


def batch_key(params: GenerationParams) -> BatchKey | None:
    """The key of a job that can share a batch, or None for one that runs alone (outpainting and the face fix, and a
    prompt whose tags do not parse: the engine answers that job alone with the sentence saying what to change).

    The size is the job's, so sources of one size batch together: an upscale's is half its size, and a variation's
    or image prompt's is resized to it."""
    if params.mode not in SHARED_LOOP_MODES:
        return None
    try:
        loras = split_loras(params.prompt)[1]
    except InvalidParams:
        return None
    return BatchKey(
        model=params.model,
        mode=params.mode,
        strength=params.strength if params.needs_source else 0.0,
        upscaler=params.upscaler if params.mode is JobMode.UPSCALE else "",
        width=params.width,
        height=params.height,
        steps=params.steps,
        sampler=params.sampler,
        clip_skip=params.clip_skip,
        loras=loras,
        hires=(params.hires, params.hires_strength, params.second_pass_steps, params.hires_upscaler)
        if params.hires
        else (0.0, 0.0, 0, ""),
        vae=params.vae,
        face_fix=params.face_fix,
    )


def compatible(first: GenerationParams, other: GenerationParams) -> bool:
    """Whether `other` may join a batch that `first` opened."""
    key = batch_key(first)
    return key is not None and key == batch_key(other)


def fits(batch: Sequence[GenerationParams], max_images: int, max_pixels: int) -> bool:
    """Whether a batch stays within the engine's image and pixel limits (a lone job is always let through)."""
    if len(batch) <= 1:
        return True
    return sum(p.count for p in batch) <= max_images and sum(p.pixels for p in batch) <= max_pixels
