"""Upscaling benchmark (not a test): an ESRGAN through the real loading and tiling code, whole and in tiles.

    python bench/upscale.py                          # a small random-weight ESRGAN (32 filters, 2 blocks, 2×)
    python bench/upscale.py --tiles 128 256 512      # other tile sides
    python bench/upscale.py --model 4x-UltraSharp.safetensors --device cuda --dtype float16
    python bench/upscale.py --device cuda --dtype float16 --filters 64 --blocks 23 --scale 4  # RealESRGAN_x4plus

Every tile is run with OVERLAP input pixels of context on each side, so tiles do more arithmetic than the whole image;
but a tile's activations are small (they stay in the CPU's caches). The table shows what wins. Prints a markdown table
of output megapixels per second (median of the repeats); on CUDA also each run's peak memory above the weights, beside
what the engine's tile_for budgets for that tile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.upscalers import OVERLAP, Upscaler, load_upscaler, tile_bytes  # noqa: E402
from tests.support.tiny_esrgan import write_tiny_esrgan  # noqa: E402


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def peak_bytes(upscaler: Upscaler, image: Image.Image, factor: float, tile: int | None) -> int:
    """On CUDA, what one upscale allocates at its peak beyond what was allocated before it (the weights)."""
    device = upscaler.descriptor.device
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    upscaler.upscale(image, factor, tile)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def seconds_per_run(
    upscaler: Upscaler, image: Image.Image, factor: float, tiles: list[int | None], repeats: int
) -> list[float]:
    """The median wall time of each tile side's upscale, after one run of each to warm up. The sides take turns in
    every round, so a neighbour's load on a shared machine slows them alike."""
    sync = torch.cuda.synchronize if upscaler.descriptor.device.type == "cuda" else lambda: None
    for tile in tiles:
        upscaler.upscale(image, factor, tile)
    times: list[list[float]] = [[] for _ in tiles]
    for _ in range(repeats):
        for tile, taken in zip(tiles, times, strict=True):
            sync()
            start = time.perf_counter()
            upscaler.upscale(image, factor, tile)
            sync()
            taken.append(time.perf_counter() - start)
    return [statistics.median(taken) for taken in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--size", type=int, default=512, help="the input image's side")
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--tiles", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--filters", type=int, default=32, help="the random ESRGAN's width")
    parser.add_argument("--blocks", type=int, default=2, help="the random ESRGAN's RRDB blocks")
    parser.add_argument("--scale", type=int, default=2, choices=(1, 2, 4), help="the random ESRGAN's scale")
    parser.add_argument("--model", type=Path, default=None, help="an upscaler file instead of random weights")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="sdbot-upscale-") as tmp:
        random = Path(tmp) / f"{args.scale}x-Random.safetensors"
        path = args.model or write_tiny_esrgan(random, args.scale, num_filters=args.filters, num_blocks=args.blocks)
        upscaler = load_upscaler(path, allow_pickle=False, device=device, dtype=getattr(torch, args.dtype))
    pixels = np.random.default_rng(0).integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    output_megapixels = round(args.size * args.factor) ** 2 / 1e6
    descriptor = upscaler.descriptor
    cuda = device.type == "cuda"
    lines = [
        f"Device: {device_name(device)}; torch {torch.__version__}; {descriptor.architecture.name}"
        f" {' '.join(descriptor.tags)} {upscaler.scale}× in {descriptor.dtype}; {args.size}² at ×{args.factor:g}"
        f" ({output_megapixels:.2f} output MP); overlap {OVERLAP} px; median of {args.repeats}",
        "",
        "| tiles | s per image | output MP/s | speed vs whole |" + (" peak MiB | budgeted MiB |" if cuda else ""),
        "|---|---|---|---|" + ("---|---|" if cuda else ""),
    ]
    tiles: list[int | None] = [None, *args.tiles]
    seconds = seconds_per_run(upscaler, image, args.factor, tiles, args.repeats)
    for tile, taken in zip(tiles, seconds, strict=True):
        label = "whole image" if tile is None else f"{tile}²"
        line = f"| {label} | {taken:.2f} | {output_megapixels / taken:.3f} | {seconds[0] / taken:.2f}× |"
        if cuda:
            budget = tile_bytes(tile or args.size - 2 * OVERLAP, upscaler.scale)
            line += f" {peak_bytes(upscaler, image, args.factor, tile) / 2**20:.0f} | {budget / 2**20:.0f} |"
        lines.append(line)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
