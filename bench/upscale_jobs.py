"""U-button benchmark (not a test): upscale jobs of one size drawn in one loop, against the same jobs one at a time,
through the engine's own Painter in the same run on the same device.

    python bench/upscale_jobs.py                  # CUDA: SD 1.5-shaped random weights, 512² sources to 1024²
    python bench/upscale_jobs.py --device cpu     # the tiny test model, 64² sources to 128²

Each job enlarges its own source (Lanczos, so the figure is the diffusion pass's) and redraws it at the U button's
strength. Prints a markdown table: images per second (median of the repeats) and the ratio to one at a time.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sd15_shapes import save_sd15_shaped  # noqa: E402
from core.batching import compatible  # noqa: E402
from core.params import GenerationParams  # noqa: E402
from core.source import parse_source  # noqa: E402
from engine.generate import BatchJob, Painter  # noqa: E402
from engine.loading import load_model  # noqa: E402
from tests.support.tiny_model import save_tiny_model  # noqa: E402


def sources(count: int, side: int) -> list[bytes]:
    """Noise images: each job works from one of its own."""
    pngs = []
    for seed in range(count):
        out = io.BytesIO()
        pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), np.uint8)
        Image.fromarray(pixels).save(out, format="PNG")
        pngs.append(out.getvalue())
    return pngs


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    parser.add_argument("--jobs", type=int, default=4, help="upscale jobs of one size")
    parser.add_argument("--size", type=int, default=None, help="the sources' side: default 512 on CUDA, 64 on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="the jobs' steps: default 30 on CUDA, 10 on the CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="a diffusers folder instead of random weights")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    size, steps = args.size or (512 if cuda else 64), args.steps or (30 if cuda else 10)
    with tempfile.TemporaryDirectory(prefix="sdbot-bench-") as tmp:
        folder = args.model
        if folder is None:
            folder = save_sd15_shaped(Path(tmp) / "sd15", device) if cuda else save_tiny_model(Path(tmp) / "tiny")
        painter = Painter(load_model(parse_source(str(folder)), device))
    base = GenerationParams(prompt="a lighthouse at dusk", steps=steps)
    jobs = [
        BatchJob(base.upscaled((size, size), seed=seed), source) for seed, source in enumerate(sources(args.jobs, size))
    ]
    assert all(compatible(jobs[0].params, job.params) for job in jobs)
    sync = torch.cuda.synchronize if cuda else lambda: None

    def timed(draw: Callable[[], object]) -> float:
        sync()
        start = time.perf_counter()
        draw()
        sync()
        return time.perf_counter() - start

    ways: dict[str, Callable[[], object]] = {
        "one at a time": lambda: [painter.draw([job]) for job in jobs],
        f"{args.jobs} in one loop": lambda: painter.draw(jobs),
    }
    for draw in ways.values():
        draw()  # warm-up
    # The ways take turns in every round, so a neighbour's load on a shared machine slows them alike.
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, draw in ways.items():
            times[name].append(timed(draw))
    rates = {name: args.jobs / statistics.median(taken) for name, taken in times.items()}
    single = rates["one at a time"]
    lines = [
        f"Device: {device_name(device)}; torch {torch.__version__}; {args.jobs} upscale jobs, {size}² to"
        f" {2 * size}², {steps} steps at strength {jobs[0].params.strength} ({'fp16' if cuda else 'fp32'})",
        "",
        "| | images/s | × one at a time |",
        "|---|---|---|",
        *(f"| {name} | {rate:.3f} | {rate / single:.2f} |" for name, rate in rates.items()),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
