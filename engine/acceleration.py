"""Fast paths on CUDA: channels_last, optional torch.compile with warm-up, and the batch size the GPU holds."""

from __future__ import annotations

import logging
import time

import torch

from engine.batching import MAX_BATCH_IMAGES
from engine.generate import BatchJob, Painter
from engine.loading import LoadedModel
from engine.params import GenerationParams

log = logging.getLogger(__name__)

# A compiled UNet recompiles for every new input shape; batches are padded up to these sizes instead.
BATCH_BUCKETS: tuple[int, ...] = (1, 2, 4, 8)
# Enough compiled shapes for the sizes members use (each size × each bucket) before dynamo gives up.
_COMPILED_SHAPES = 64
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


def compile_model(model: LoadedModel, backend: str = "inductor") -> None:
    """torch.compile the UNet and the VAE decoder in place; the first call of each shape compiles it."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, _COMPILED_SHAPES)
    # In place, so the UNet stays a diffusers model: LoRAs are loaded into it and unloaded again.
    model.pipe.unet.compile(fullgraph=True, backend=backend)
    model.pipe.vae.decoder.compile(fullgraph=True, backend=backend)


def buckets_up_to(max_batch: int) -> tuple[int, ...]:
    """The batch sizes a compiled model is drawn at: the buckets below `max_batch`, and `max_batch` itself."""
    return tuple(sorted({b for b in BATCH_BUCKETS if b < max_batch} | {max_batch}))


def warm_up(painter: Painter, buckets: tuple[int, ...]) -> float:
    """Compile every bucket at the native size now rather than in members' first jobs; return the seconds."""
    side = painter.model.native_size
    started = time.perf_counter()
    for bucket in buckets:
        painter.draw([BatchJob(GenerationParams(prompt="warm-up", width=side, height=side, steps=2))] * bucket)
    seconds = time.perf_counter() - started
    log.info("compiled the model for batches of %s in %.0f s", ", ".join(map(str, buckets)), seconds)
    return seconds
