"""Fast paths on CUDA: channels_last, optional torch.compile with warm-up, and the batch size the GPU holds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from core.batching import MAX_BATCH_IMAGES
from core.params import DEFAULT_SAMPLER, MIN_SIZE, SIZE_MULTIPLE, GenerationParams
from engine.generate import BatchJob, Painter
from engine.loading import LoadedModel

log = logging.getLogger(__name__)

# Generous room for compiled graphs (each LoRA set adds some) before dynamo runs a model eagerly.
_COMPILED_GRAPHS = 64
# The CPU gains little from big batches and pays for them in latency.
_CPU_MAX_BATCH = 4


def default_max_batch(model: LoadedModel, max_pixels: int) -> int:
    """How many native-size images one loop holds: as many as memory allows on CUDA, up to MAX_BATCH_IMAGES."""
    cap = MAX_BATCH_IMAGES if model.device.type == "cuda" else _CPU_MAX_BATCH
    return max(1, min(cap, max_pixels // (model.native_size * model.native_size)))


def use_fast_paths(model: LoadedModel) -> None:
    """channels_last convolutions on CUDA (fp16 and SDPA are set at load)."""
    if model.device.type == "cuda":
        model.pipe.unet.to(memory_format=torch.channels_last)
        model.pipe.vae.to(memory_format=torch.channels_last)


def compile_model(model: LoadedModel, backend: str | Callable[..., Any] = "inductor") -> None:
    """torch.compile the UNet and the VAE decoder in place; `warm_up` then compiles the shapes members send.

    Shapes are left to dynamo's automatic dynamic shapes: the first call compiles for its exact shapes, and a
    dimension seen to change (batch, prompt length, width, height) is compiled once more as symbolic. So
    every batch size, prompt length and image size runs compiled without padding a batch with wasted images.
    """
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, _COMPILED_GRAPHS)
    # In place, so the UNet stays a diffusers model: LoRAs are loaded into it and unloaded again. Not
    # fullgraph (both trace whole; a test checks): with it, a model past the recompile limit fails its jobs
    # instead of running them uncompiled.
    model.pipe.unet.compile(backend=backend)
    model.pipe.vae.decoder.compile(backend=backend)


# Euler's timesteps are floats, the other samplers' integers: dynamo compiles the UNet apart for each.
WARM_UP_SAMPLERS = (DEFAULT_SAMPLER, "Euler a")


def warm_up_jobs(native: int) -> list[list[BatchJob]]:
    """Batches that vary each input dynamo may specialise on, so the graphs compiled take any of them.

    First the batch size, the prompt's chunks and the size; the sizes are a larger one (width and height
    unequal and unlike the native side, so none is tied to another), a smaller one whose height is not a
    multiple of 64 and one whose width alone is not (the UNet takes other paths there; convolution backends
    may change with size). Then each sampler's timestep type at each size, and last, once all that is
    dynamic, CFG 1 (no guidance: a UNet batch of one, which dynamo always compiles apart).
    """

    def job(
        prompt: str = "warm-up",
        width: int = native,
        height: int = native,
        cfg: float = 7.0,
        sampler: str = DEFAULT_SAMPLER,
    ) -> BatchJob:
        return BatchJob(GenerationParams(prompt=prompt, width=width, height=height, steps=2, cfg=cfg, sampler=sampler))

    long = ", ".join(["warm-up"] * 20)  # past 75 tokens: more than one chunk
    small = max(MIN_SIZE, native // 2) + SIZE_MULTIPLE
    sizes = [(native, native), (native + 64, native + 128), (small, small + 2 * SIZE_MULTIPLE), (small, native)]
    batches = [[job()], [job(), job()], [job(long)]]
    for sampler in WARM_UP_SAMPLERS:
        batches += [[job(width=width, height=height, sampler=sampler)] * 2 for width, height in sizes]
    for sampler in WARM_UP_SAMPLERS:
        batches += [[job(width=width, height=height, cfg=1.0, sampler=sampler)] for width, height in sizes]
    return batches


def warm_up(
    painter: Painter,
    on_batch: Callable[[int, int], None] | None = None,
    *,
    max_images: int = MAX_BATCH_IMAGES,
    max_pixels: int | None = None,
) -> float:
    """Compile now, in the engine's start, what members' first jobs would otherwise wait for; return the seconds.

    `on_batch(number, of)` is called before each warm-up batch: each may compile for minutes. Batches over
    what members may ask for (`max_images`, `max_pixels`) are left out, and one that runs out of memory is
    skipped: members' jobs of that shape then compile when they first come.
    """
    started = time.perf_counter()
    batches = [
        batch
        for batch in warm_up_jobs(painter.model.native_size)
        if len(batch) <= max_images and (max_pixels is None or sum(job.params.pixels for job in batch) <= max_pixels)
    ]
    for number, batch in enumerate(batches, start=1):
        if on_batch is not None:
            on_batch(number, len(batches))
        try:
            painter.draw(batch)
        except torch.cuda.OutOfMemoryError:
            log.warning("out of memory warming up %d×%d; skipped", batch[0].params.width, batch[0].params.height)
    seconds = time.perf_counter() - started
    log.info("compiled the model for any batch size, prompt length, image size and sampler in %.0f s", seconds)
    return seconds
