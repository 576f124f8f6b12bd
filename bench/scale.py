"""Scale-out benchmark (not a test): several engines fed by the real fair queue and dispatcher.

    python bench/scale.py              # simulated GPUs (a fixed time per batch), then two tiny CPU engines vs one
    python bench/scale.py --no-tiny    # the simulated part only

1. Throughput with N = 1, 2, 4 and 8 simulated GPUs, each drawing a batch of up to 4 images in a fixed time, against
   N × one engine's rate (target: at least 0.9 × N). Everything but the GPU is real: SQLite job log, attempts,
   kept images, handover. Then the same with each GPU on a worker of its own, through a real redis-server (the
   Debian package) on this machine: batches, results and progress through Redis Streams.
2. The dispatcher's time per batch with 1,000 jobs from 200 members queued, on engines that take no time: the gap
   between one batch reaching an engine and the next (target: p99 under 20 ms).
3. Two engine processes on the CPU with the tiny test model against one, in the same run.

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis.asyncio import Redis  # noqa: E402

from bench.burst import BURST_TIMEOUT_S, PROMPTS, Timing  # noqa: E402
from bot.fleet.hub import Hub  # noqa: E402
from bot.fleet.worker import Heartbeat, Worker  # noqa: E402
from bot.pipeline.database import Database  # noqa: E402
from bot.pipeline.dispatch import Dispatcher  # noqa: E402
from bot.pipeline.engine_client import Engine, EngineCommand, Outcome, ProcessEngine, ProgressCallback  # noqa: E402
from bot.pipeline.engines import Engines, cpu_threads  # noqa: E402
from bot.pipeline.estimates import Estimator  # noqa: E402
from bot.pipeline.fair_queue import FairQueue  # noqa: E402
from bot.pipeline.images import ImageStore  # noqa: E402
from bot.pipeline.networks import Networks  # noqa: E402
from bot.pipeline.source_images import SourceImages  # noqa: E402
from bot.pipeline.store import JobStore  # noqa: E402
from core.infotext import ModelInfo  # noqa: E402
from core.jobs import Job, new_job_id  # noqa: E402
from core.params import GenerationParams  # noqa: E402
from core.wire import EngineReady, GeneratedImage, GenerateRequest, JobResult, Progress  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

MODEL = ModelInfo(name="simulated", hash="0000000000")
BATCH_IMAGES = 4


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("v=")[1].split()[0]


def tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 200)).save(out, format="PNG")
    return out.getvalue()


class SimulatedGpu:
    """An engine that denoises any batch of up to four images in `batch_seconds`, and encodes nothing."""

    def __init__(self, batch_seconds: float, png: bytes) -> None:
        self.batch_seconds = batch_seconds
        self.png = png
        self.batch_started: list[float] = []
        self._ready: EngineReady | None = None
        self.restarts = 0
        self.host = "local"
        self.last_heartbeat: float | None = None
        # One GPU denoises one batch at a time; a second one sent waits for it, as in the engine process.
        self._gpu = asyncio.Lock()

    @property
    def ready(self) -> EngineReady | None:
        return self._ready

    @property
    def available(self) -> bool:
        return True

    def draws(self, params: GenerationParams) -> bool:
        return True

    async def start(self, on_starting: Callable[[str], object] | None = None) -> EngineReady:
        self._ready = EngineReady(MODEL, "simulated", 512, 512, max_pixels=BATCH_IMAGES * 512 * 512, max_batch=4)
        return self._ready

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        self.batch_started.append(time.perf_counter())
        async with self._gpu:
            await asyncio.sleep(self.batch_seconds)
        for request in requests:
            on_progress(Progress(request.job_id, request.params.steps, request.params.steps))
        return [
            JobResult(
                request.job_id,
                tuple(GeneratedImage(seed, "", self.png) for seed in request.params.seeds()),
                self.batch_seconds,
                MODEL,
            )
            for request in requests
        ]

    async def cancel(self, job_id: str) -> None: ...

    async def reload_models(self) -> None: ...

    def begin_shutdown(self) -> None: ...

    async def close(self) -> None: ...


def jobs_of(count: int, members: int, size: int, steps: int) -> list[tuple[int, GenerationParams]]:
    """`count` one-image jobs from `members` members, which may all share a batch."""
    return [
        (i % members, GenerationParams(prompt=PROMPTS[i % len(PROMPTS)], width=size, height=size, steps=steps, seed=i))
        for i in range(count)
    ]


class TimedQueue(FairQueue[Job]):
    """The fair queue, timing the dispatcher's choice of each batch: the next job, then its companions."""

    def __init__(self) -> None:
        super().__init__()
        self.choices: list[float] = []
        self._began = 0.0

    def take(self, prefer: Hashable = None, accept: Callable[[Job], bool] | None = None) -> tuple[Job] | None:
        self._began = time.perf_counter()
        return super().take(prefer, accept)

    def take_more(self, can_join: Callable[[Job], bool], limit: int | None = None) -> list[Job]:
        more = super().take_more(can_join, limit)
        self.choices.append(time.perf_counter() - self._began)
        return more


async def serve(
    engines: Sequence[Engine],
    jobs: list[tuple[int, GenerationParams]],
    work: Path,
    queue: FairQueue[Job] | None = None,
    redis_url: str | None = None,
    workers: int = 0,
) -> float:
    """Queue every job at once, run the dispatcher over the engines (and, with `redis_url`, the `workers`' engines)
    until all are posted; the seconds it took."""
    database = Database(work / f"bench-{new_job_id()}.sqlite3")
    await database.open()
    store = JobStore(database)
    queue = queue if queue is not None else FairQueue()
    timing = Timing()
    pool = Engines(engines)
    await pool.start()
    dispatcher = Dispatcher(
        queue=queue,
        engines=pool,
        store=store,
        delivery=timing,  # type: ignore[arg-type]
        sources=SourceImages(ImageStore(work / "data", keep_days=1), client=None),  # type: ignore[arg-type]
        estimator=Estimator(database, parallel=len(engines)),
        progress_interval=60.0,
    )
    hub = Hub(redis_url, dispatcher, store, Networks(), poll=0.05) if redis_url else None
    if hub is not None:
        await hub.start()
        while len(pool.members) < workers:
            await hub.check_workers()
    for member, params in jobs:
        job = Job(new_job_id(), params, member, f"member{member}", 1, 1, time.time())
        await store.add(job)
        await queue.put(member, job, group=1)
    timing.expected = len(jobs)
    timing.start = time.perf_counter()
    serving = asyncio.create_task(dispatcher.run())
    await asyncio.wait_for(timing.all_done.wait(), BURST_TIMEOUT_S)
    seconds = time.perf_counter() - timing.start
    serving.cancel()
    await dispatcher.handover.drain()
    if hub is not None:
        await hub.close()
    await pool.close()
    await database.close()
    return seconds


async def serve_remote(
    gpus: Sequence[SimulatedGpu], jobs: list[tuple[int, GenerationParams]], work: Path, url: str
) -> float:
    """As `serve`, with each GPU on a worker of its own, reached through Redis."""
    client = Redis.from_url(url)
    await client.flushall()
    workers: list[Worker] = []
    serving: list[asyncio.Task[None]] = []
    for number, gpu in enumerate(gpus):
        engines = Engines([gpu])
        await engines.start()
        worker = Worker(Redis.from_url(url), f"bench-{number}", engines, heartbeat=Heartbeat(10.0), block=0.05)
        await worker.register()
        workers.append(worker)
        serving.append(asyncio.create_task(worker.serve()))
    try:
        return await serve([], jobs, work, redis_url=url, workers=len(gpus))
    finally:
        for worker in workers:
            await worker.stop(grace=1.0)
            await worker.redis.aclose()
        await asyncio.gather(*serving, return_exceptions=True)
        await client.aclose()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def simulated(args: argparse.Namespace, work: Path) -> list[str]:
    png = tiny_png()
    lines = [
        f"Simulated GPUs: {args.batch_seconds:g} s per batch of up to {BATCH_IMAGES} images; "
        f"{args.batches} batches' worth of jobs per GPU, from {args.members} members",
        "",
        f"| GPUs | images/s | × one GPU | target | ideal images/s ({BATCH_IMAGES / args.batch_seconds:g} per GPU) |",
        "|---|---|---|---|---|",
    ]
    single_rate = 0.0
    for count in (1, 2, 4, 8):
        jobs = jobs_of(args.batches * BATCH_IMAGES * count, args.members, 512, 30)
        seconds = await serve([SimulatedGpu(args.batch_seconds, png) for _ in range(count)], jobs, work)
        rate = len(jobs) / seconds
        single_rate = single_rate or rate
        ideal = count * BATCH_IMAGES / args.batch_seconds
        lines.append(f"| {count} | {rate:.1f} | {rate / single_rate:.2f} | ≥ {0.9 * count:.1f} | {ideal:g} |")
    server = RedisServer(work / "redis").start()
    lines += [
        "",
        f"The same GPUs, each on a worker of its own, through redis-server {redis_version()} on this machine"
        " (appendfsync always):",
        "",
        "| workers | images/s | × one worker | × one local GPU | target |",
        "|---|---|---|---|---|",
    ]
    single_remote = 0.0
    try:
        for count in (1, 2, 4, 8):
            jobs = jobs_of(args.batches * BATCH_IMAGES * count, args.members, 512, 30)
            gpus = [SimulatedGpu(args.batch_seconds, png) for _ in range(count)]
            rate = len(jobs) / await serve_remote(gpus, jobs, work, server.url)
            single_remote = single_remote or rate
            ratios = f"{rate / single_remote:.2f} | {rate / single_rate:.2f}"
            lines.append(f"| {count} | {rate:.1f} | {ratios} | ≥ {0.9 * count:.1f} |")
    finally:
        server.stop()
    # One GPU three times slower than the other two: its share of the batches should be a third of theirs.
    mixed = [SimulatedGpu(args.batch_seconds, png), SimulatedGpu(args.batch_seconds, png)]
    mixed.append(SimulatedGpu(3 * args.batch_seconds, png))
    await serve(mixed, jobs_of(args.batches * BATCH_IMAGES * 3, args.members, 512, 30), work)
    shares = [len(engine.batch_started) for engine in mixed]
    lines += [
        "",
        f"Two GPUs and one three times slower: batches {shares[0]}, {shares[1]} and {shares[2]}"
        f" (the slow one's share {shares[2] / sum(shares):.2f}; in proportion to speed, 1/7 = 0.14)",
    ]
    # The dispatcher alone: engines that take no time, 1,000 jobs from 200 members waiting.
    engines = [SimulatedGpu(0.0, png) for _ in range(4)]
    jobs = jobs_of(1000, 200, 512, 30)
    timed = TimedQueue()
    await serve(engines, jobs, work, timed)
    choices = [seconds * 1000 for seconds in timed.choices]
    starts = sorted(start for engine in engines for start in engine.batch_started)
    gaps = [(later - earlier) * 1000 for earlier, later in zip(starts, starts[1:], strict=False)]
    lines += [
        "",
        f"Dispatcher time per batch, 1,000 jobs from 200 members on 4 engines that take no time"
        f" ({len(starts)} batches): p50 {percentile(gaps, 0.5):.2f} ms, p99 {percentile(gaps, 0.99):.2f} ms,"
        f" max {max(gaps):.2f} ms (target: p99 under 20 ms); of which choosing each batch from the queue:"
        f" p50 {percentile(choices, 0.5):.2f} ms, p99 {percentile(choices, 0.99):.2f} ms",
    ]
    return lines


async def tiny_cpu(args: argparse.Namespace, work: Path) -> list[str]:
    from tests.support.tiny_model import save_tiny_model

    folder = save_tiny_model(work / "tiny-sd")
    jobs = jobs_of(args.tiny_jobs, 4, 64, 4)
    lines = ["", f"Tiny model on the CPU ({os.cpu_count()} cores): {len(jobs)} jobs of 64², 4 steps", ""]
    lines += ["| engines | images/s | × one engine |", "|---|---|---|"]
    single = 0.0
    for count in (1, 2):
        # As the bot starts them: engines on the CPU split its cores.
        command = EngineCommand(str(folder), "cpu", max_batch=4, threads=cpu_threads(count))
        engines = [ProcessEngine(command) for _ in range(count)]
        seconds = await serve(engines, jobs, work)
        rate = len(jobs) / seconds
        single = single or rate
        lines.append(f"| {count} | {rate:.2f} | {rate / single:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-seconds", type=float, default=0.5, help="a simulated GPU's time per batch")
    parser.add_argument("--batches", type=int, default=12, help="batches' worth of jobs per simulated GPU")
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--tiny-jobs", type=int, default=24)
    parser.add_argument("--no-tiny", action="store_true", help="skip the two tiny CPU engines")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    os.environ.setdefault("SDBOT_LOG_LEVEL", "WARNING")  # the engines' log

    async def run() -> list[str]:
        with tempfile.TemporaryDirectory(prefix="sdbot-scale-") as tmp:
            lines = await simulated(args, Path(tmp))
            if not args.no_tiny:
                lines += await tiny_cpu(args, Path(tmp))
            return lines

    print("\n".join(asyncio.run(run())))


if __name__ == "__main__":
    main()
