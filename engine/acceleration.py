"""Fast paths on CUDA: channels_last, optional torch.compile with warm-up, and the batch size the GPU holds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from engine.batching import MAX_BATCH_IMAGES
from engine.generate import BatchJob, Painter
from engine.loading import LoadedModel
from engine.params import MIN_SIZE, SIZE_MULTIPLE, GenerationParams

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


def warm_up_jobs(native: int) -> list[list[BatchJob]]:
    """Batches that vary each dimension dynamo may specialise on: the batch size, the prompt's chunks, a larger
    width and height (unequal and unlike the native side, so none is tied to another), a smaller size that is
    not a multiple of 64 (the UNet takes another path there, and convolution backends may change with size);
    then, once all that is dynamic, CFG 1 at each size (no guidance: a UNet batch of one, which dynamo always
    compiles apart)."""

    def job(prompt: str = "warm-up", width: int = native, height: int = native, cfg: float = 7.0) -> BatchJob:
        return BatchJob(GenerationParams(prompt=prompt, width=width, height=height, steps=2, cfg=cfg))

    long = ", ".join(["warm-up"] * 20)  # past 75 tokens: more than one chunk
    small = max(MIN_SIZE, native // 2) + SIZE_MULTIPLE
    sizes = [(native, native), (native + 64, native + 128), (small, small + 2 * SIZE_MULTIPLE)]
    return [
        [job()],
        [job(), job()],
        [job(long)],
        *[[job(width=width, height=height)] for width, height in sizes[1:]],
        *[[job(width=width, height=height, cfg=1.0)] for width, height in sizes],
    ]


def warm_up(painter: Painter, on_batch: Callable[[int, int], None] | None = None) -> float:
    """Compile now, in the engine's start, what members' first jobs would otherwise wait for; return the seconds.

    `on_batch(number, of)` is called before each warm-up batch: each may compile for minutes."""
    started = time.perf_counter()
    batches = warm_up_jobs(painter.model.native_size)
    for number, batch in enumerate(batches, start=1):
        if on_batch is not None:
            on_batch(number, len(batches))
        painter.draw(batch)
    seconds = time.perf_counter() - started
    log.info("compiled the model for any batch size, prompt length and image size in %.0f s", seconds)
    return seconds
