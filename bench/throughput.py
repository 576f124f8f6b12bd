"""Throughput benchmark (not a test): a burst of members' jobs through the real queue and engine process,
against the same jobs through a plain serial diffusers loop, in the same run on the same device.

    python bench/throughput.py                 # CUDA: SD 1.5-shaped random weights, 512², 30 steps
    python bench/throughput.py --compile       # the same with SDBOT_COMPILE=1
    python bench/throughput.py --device cpu    # the tiny test model, 64², 2 steps

Prints a markdown table: images/s, p50 and p95 latency from the burst's start, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.burst import BURST_TIMEOUT_S, PROMPTS, Timing  # noqa: E402
from bench.sd15_shapes import save_sd15_shaped  # noqa: E402
from bot.pipeline.database import Database  # noqa: E402
from bot.pipeline.dispatch import Dispatcher  # noqa: E402
from bot.pipeline.engine_client import EngineCommand, ProcessEngine  # noqa: E402
from bot.pipeline.engines import Engines  # noqa: E402
from bot.pipeline.estimates import Estimator  # noqa: E402
from bot.pipeline.fair_queue import FairQueue  # noqa: E402
from bot.pipeline.images import ImageStore  # noqa: E402
from bot.pipeline.source_images import SourceImages  # noqa: E402
from bot.pipeline.store import JobStore  # noqa: E402
from core.jobs import Job, new_job_id  # noqa: E402
from core.params import GenerationParams  # noqa: E402
from engine.samplers import make_scheduler  # noqa: E402
from tests.support.tiny_model import save_tiny_model  # noqa: E402


@dataclass(frozen=True)
class Run:
    """What one path did with the burst."""

    name: str
    images: int
    seconds: float
    latencies: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def burst(jobs: int, members: int, size: int, steps: int) -> list[tuple[int, GenerationParams]]:
    """`jobs` one-image jobs from `members` members, each with its own prompt, seed and cfg."""
    return [
        (
            i % members,
            GenerationParams(
                prompt=PROMPTS[i % len(PROMPTS)],
                negative_prompt="blurry" if i % 3 else "",
                width=size,
                height=size,
                steps=steps,
                seed=1000 + i,
                cfg=(5.0, 7.0, 9.0)[i % 3],
            ),
        )
        for i in range(jobs)
    ]


async def through_the_bot(
    folder: Path, device: str, jobs: list[tuple[int, GenerationParams]], args: argparse.Namespace, work: Path
) -> tuple[Run, Run]:
    """The burst, then one job alone, through the fair queue, dispatcher and engine process."""
    engine = ProcessEngine(EngineCommand(str(folder), device, max_batch=args.max_batch or None, compile=args.compile))
    ready = await engine.start()
    database = Database(work / "bench.sqlite3")
    await database.open()
    store = JobStore(database)
    queue: FairQueue[Job] = FairQueue()
    timing = Timing(time.perf_counter())
    dispatcher = Dispatcher(
        queue=queue,
        engines=Engines([engine]),
        store=store,
        delivery=timing,  # type: ignore[arg-type]
        sources=SourceImages(ImageStore(work / "data", keep_days=1), client=None),  # type: ignore[arg-type]
        estimator=Estimator(database),
    )
    serving = asyncio.create_task(dispatcher.run())

    async def send(batch: list[tuple[int, GenerationParams]]) -> Run:
        timing.done.clear()
        timing.all_done.clear()
        timing.expected = len(batch)
        timing.start = time.perf_counter()
        for member, params in batch:
            job = Job(new_job_id(), params, member, f"member{member}", 1, 1, time.time())
            await store.add(job)
            await queue.put(member, job, group=1)
        await asyncio.wait_for(timing.all_done.wait(), BURST_TIMEOUT_S)
        return Run("sdbot", len(batch), max(timing.done.values()), tuple(timing.done.values()))

    await send(jobs[:1])  # the first call of each shape pays for cuDNN autotuning or compiling
    whole = await send(jobs)
    single = await send(jobs[:1])
    serving.cancel()
    await dispatcher.handover.drain()
    await engine.close()
    await database.close()
    logging.info("engine: %s, batches of up to %d images", ready.device, ready.max_batch)
    return whole, single


def plain_diffusers(folder: Path, device: torch.device, jobs: list[tuple[int, GenerationParams]]) -> tuple[Run, Run]:
    """The same jobs one after another through a plain diffusers pipeline, PNGs included."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, safety_checker=None).to(device)
    pipe.set_progress_bar_config(disable=True)
    base = pipe.scheduler.config

    def draw(batch: list[tuple[int, GenerationParams]]) -> Run:
        start = time.perf_counter()
        latencies = []
        for _, params in batch:
            pipe.scheduler = make_scheduler(params.sampler, base)
            image = pipe(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt or None,
                width=params.width,
                height=params.height,
                num_inference_steps=params.steps,
                guidance_scale=params.cfg,
                generator=torch.Generator("cpu").manual_seed(params.seed),
            ).images[0]
            image.save(io.BytesIO(), format="PNG")
            latencies.append(time.perf_counter() - start)
        return Run("plain diffusers", len(batch), latencies[-1], tuple(latencies))

    draw(jobs[:1])  # the first call of each shape pays for cuDNN autotuning
    return draw(jobs), draw(jobs[:1])


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores)"


def table(device: torch.device, args: argparse.Namespace, runs: dict[str, tuple[Run, Run]]) -> str:
    base_whole, base_single = runs["baseline"]
    whole, single = runs["sdbot"]
    lines = [
        f"Device: {device_name(device)}; torch {torch.__version__}; {args.size}², {args.steps} steps, "
        f"{args.jobs} jobs from {args.members} members; compile {'on' if args.compile else 'off'}",
        "",
        "| path | images/s | p50 latency (s) | p95 latency (s) | vs baseline |",
        "|---|---|---|---|---|",
    ]
    for run, base in ((base_whole, base_whole), (whole, base_whole)):
        lines.append(
            f"| {run.name}, burst of {run.images} | {run.rate:.2f} | {run.percentile(0.5):.2f} | "
            f"{run.percentile(0.95):.2f} | {run.rate / base.rate:.2f}× images/s |"
        )
    for run in (base_single, single):
        lines.append(
            f"| {run.name}, one job alone | {run.rate:.2f} | {run.seconds:.2f} | {run.seconds:.2f} | "
            f"{run.seconds / base_single.seconds:.2f}× latency |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="default 512 on CUDA, 64 on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="default 30 on CUDA, 2 on the CPU")
    parser.add_argument("--max-batch", type=int, default=0, help="0: the engine's choice")
    parser.add_argument("--compile", action="store_true", help="SDBOT_COMPILE=1 for the engine")
    parser.add_argument("--model", type=Path, default=None, help="a diffusers folder instead of random weights")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.size = args.size or (512 if cuda else 64)
    args.steps = args.steps or (30 if cuda else 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="sdbot-bench-") as tmp:
        work = Path(tmp)
        folder = args.model
        if folder is None and cuda:
            folder = save_sd15_shaped(work / "sd15-shaped", device)
        elif folder is None:
            folder = save_tiny_model(work / "tiny-sd")
        jobs = burst(args.jobs, args.members, args.size, args.steps)
        # The baseline first, in this process; then its memory goes back before the engine process starts.
        runs = {"baseline": plain_diffusers(folder, device, jobs)}
        if cuda:
            torch.cuda.empty_cache()
        runs["sdbot"] = asyncio.run(through_the_bot(folder, args.device, jobs, args, work))
    print(table(device, args, runs))


if __name__ == "__main__":
    main()
