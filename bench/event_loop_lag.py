"""Event-loop lag benchmark (not a test): how late the bot's event loop wakes while a burst of jobs runs on the CPU.

The real bot (discord.py client, fair queue, dispatcher, SQLite, delivery) against the local fake Discord, which runs
in a process of its own so that its work is not counted, with the real engine process on the tiny test model. A
task on the bot's event loop notes how late each `asyncio.sleep(interval)` wakes: Discord's heartbeats and the
3-second answers to members wait as long. Each configuration runs with a fresh bot and engine:

- the engine at nice 0 (as before issue 13) or nice 10 (below the bot, the default now);
- re-encoding to fit the upload limit on the event loop (as before) or beside it (now).

    python bench/event_loop_lag.py                       # all four, Discord's 10 MiB upload limit
    python bench/event_loop_lag.py --upload-limit 65536  # every result re-encoded to fit, as a big upscale is
    python bench/event_loop_lag.py --debug               # asyncio debug mode: the callbacks that took over 10 ms

Prints a markdown table: lag p50 / p99 / max, the slowest answer to an /imagine, and how long the burst took.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import discord
import yarl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.burst import BURST_TIMEOUT_S, PROMPTS  # noqa: E402
from bot.app import SdBot  # noqa: E402
from bot.pipeline.database import Database  # noqa: E402
from bot.pipeline.delivery import Delivery  # noqa: E402
from bot.pipeline.engine_client import EngineCommand, ProcessEngine  # noqa: E402
from bot.pipeline.engines import Engines  # noqa: E402
from bot.pipeline.images import ImageStore  # noqa: E402
from core.pngmeta import EncodedImage, fit_under  # noqa: E402
from tests.support.bots import results  # noqa: E402
from tests.support.fake_discord import GUILD_ID, USER_ID, FakeDiscord  # noqa: E402

SLOW_CALLBACK = re.compile(r"^Executing (.*) took (\d+\.\d+) seconds$")
TASK_STEP = re.compile(r"coro=<(\S+?)\(\) (?:running at|done, defined at) ([^>\s]+)>")


@dataclass(frozen=True)
class Burst:
    """What the fake Discord sends: `jobs` /imagine commands from `members` members at once."""

    jobs: int
    members: int
    size: int
    steps: int
    upload_limit: int


@dataclass(frozen=True)
class Run:
    """What one configuration did with the burst."""

    niceness: int
    on_loop: bool
    lags: tuple[float, ...]
    slowest_answer: float
    seconds: float

    def percentile(self, q: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class OnLoopDelivery(Delivery):
    """Delivery as it was before issue 13: the re-encoding to fit the upload limit ran on the event loop."""

    @staticmethod
    async def fit(png: bytes, limit: int) -> EncodedImage:
        return fit_under(png, limit)


def serve_fake_discord(conn: Connection) -> None:
    """In a process of its own: the fake Discord, sending each burst it is handed over the pipe."""
    asyncio.run(_serve(conn))


async def _serve(conn: Connection) -> None:
    async with FakeDiscord() as fake:
        conn.send((fake.base_url, fake.gateway_url, fake.token))
        loop = asyncio.get_running_loop()
        while (burst := await loop.run_in_executor(None, conn.recv)) is not None:
            conn.send(await _send_burst(fake, burst))


async def _send_burst(fake: FakeDiscord, burst: Burst) -> float:
    """Send the burst's commands; once every result is posted, return the slowest answer to one, in seconds."""
    before = len(results(fake))
    sent = []
    for i in range(burst.jobs):
        options = {
            "prompt": PROMPTS[i % len(PROMPTS)],
            "width": burst.size,
            "height": burst.size,
            "steps": burst.steps,
            "seed": 1000 + i,
        }
        member = USER_ID + i % burst.members
        sent.append(await fake.slash("imagine", options, user_id=member, attachment_size_limit=burst.upload_limit))
    await fake.wait_for(lambda: len(results(fake)) >= before + burst.jobs, BURST_TIMEOUT_S, what="the results")
    return max(inter.response_time or float("inf") for inter in sent)


async def _measure_lag(lags: list[float], interval: float) -> None:
    """Until cancelled: how late each sleep of `interval` wakes."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        lags.append(loop.time() - start - interval)


async def _ask(conn: Connection, burst: Burst) -> float:
    conn.send(burst)
    return float(await asyncio.get_running_loop().run_in_executor(None, conn.recv))


async def run_once(
    model: Path, conn: Connection, burst: Burst, niceness: int, on_loop: bool, args: argparse.Namespace
) -> Run:
    """One configuration: a fresh engine and bot, a one-job warm-up, then the burst with the lag measured."""
    with tempfile.TemporaryDirectory(prefix="sdbot-lag-") as tmp:
        work = Path(tmp)
        engine = ProcessEngine(EngineCommand(str(model), "cpu", max_batch=args.max_batch or None, niceness=niceness))
        bot = SdBot(
            database=Database(work / "sdbot.sqlite3"),
            engines=Engines([engine]),
            images=ImageStore(work / "data", keep_days=1),
            guild_ids=(GUILD_ID,),
            guild_ready_timeout=0.05,
        )
        if on_loop:
            bot.dispatcher.handover.delivery = OnLoopDelivery(bot)
        client = asyncio.create_task(bot.start(args.token))
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait([client, ready], return_when=asyncio.FIRST_COMPLETED)
        if client.done():
            ready.cancel()
            client.result()
        try:
            await _ask(conn, Burst(1, 1, burst.size, burst.steps, burst.upload_limit))
            lags: list[float] = []
            measuring = asyncio.create_task(_measure_lag(lags, args.interval))
            started = time.perf_counter()
            slowest_answer = await _ask(conn, burst)
            seconds = time.perf_counter() - started
            measuring.cancel()
        finally:
            await bot.close()
            await client
    return Run(niceness, on_loop, tuple(lags), slowest_answer, seconds)


def table(runs: list[Run], burst: Burst, args: argparse.Namespace) -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [
        f"Device: CPU ({os.cpu_count()} cores), load average before the run {args.load}, after {load}; tiny model, "
        f"{burst.size}², {burst.steps} steps, {burst.jobs} jobs from {burst.members} members, upload limit "
        f"{burst.upload_limit} bytes; lag sampled every {args.interval * 1000:.0f} ms"
        + ("; asyncio debug mode on" if args.debug else ""),
        "",
        "| engine | re-encoding | loop lag p50 / p99 / max (ms) | slowest answer (s) | burst (s) |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| nice {run.niceness} | {'on the loop' if run.on_loop else 'beside it'} | "
            f"{run.percentile(0.5) * 1000:.1f} / {run.percentile(0.99) * 1000:.1f} / {max(run.lags) * 1000:.1f} | "
            f"{run.slowest_answer:.2f} | {run.seconds:.1f} |"
        )
    return "\n".join(lines)


class SlowCallbacks(logging.Handler):
    """Collects asyncio debug mode's "Executing … took … seconds" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seconds: dict[str, float] = {}
        self.count: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        match = SLOW_CALLBACK.match(record.getMessage())
        if match is not None:
            # A task's step by its coroutine and line, whichever task ran it; other callbacks as asyncio names them.
            step = TASK_STEP.search(match[1])
            what = f"{step[1]}() at {step[2]}" if step is not None else match[1][:160]
            self.seconds[what] = max(self.seconds.get(what, 0.0), float(match[2]))
            self.count[what] += 1

    def report(self) -> str:
        lines = ["", "Callbacks over the slow-callback threshold (slowest first): count, slowest, what"]
        for what, slowest in sorted(self.seconds.items(), key=lambda item: -item[1])[:15]:
            lines.append(f"- {self.count[what]}×, {slowest * 1000:.0f} ms: {what}")
        return "\n".join(lines)


async def bench(model: Path, conn: Connection, args: argparse.Namespace) -> list[Run]:
    base, gateway, args.token = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    discord.http.Route.BASE = base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    if args.debug:
        asyncio.get_running_loop().slow_callback_duration = args.slow_callback
    burst = Burst(args.jobs, args.members, args.size, args.steps, args.upload_limit)
    runs = []
    for niceness in args.niceness:
        for encoding in args.encoding:
            runs.append(await run_once(model, conn, burst, niceness, encoding == "on-loop", args))
            logging.warning("done: engine nice %d, re-encoding %s", niceness, encoding)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (the tiny model: 64 to 256)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--upload-limit", type=int, default=10 * 1024 * 1024, help="bytes per file, as Discord says")
    parser.add_argument("--max-batch", type=int, default=0, help="0: the engine's choice")
    parser.add_argument("--niceness", type=int, nargs="+", default=[0, 10], help="the engine's, below the bot's")
    parser.add_argument("--encoding", nargs="+", choices=("on-loop", "off-loop"), default=["on-loop", "off-loop"])
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between two lag samples")
    parser.add_argument("--debug", action="store_true", help="asyncio debug mode, listing the slow callbacks")
    parser.add_argument("--slow-callback", type=float, default=0.01, help="seconds, with --debug")
    args = parser.parse_args()
    args.load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("SDBOT_LOG_LEVEL", "WARNING")  # the engine's log
    slow = SlowCallbacks()
    logging.getLogger("asyncio").addHandler(slow)
    # Imported here: the fake Discord's process (which imports this module too) needs no torch.
    from tests.support.tiny_model import save_tiny_model

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    fake = context.Process(target=serve_fake_discord, args=(theirs,), name="fake-discord")
    fake.start()
    try:
        with tempfile.TemporaryDirectory(prefix="sdbot-lag-model-") as tmp:
            model = save_tiny_model(Path(tmp) / "tiny-sd")
            runs = asyncio.run(bench(model, ours, args), debug=args.debug)
    finally:
        ours.send(None)
        fake.join(30)
        if fake.is_alive():
            fake.kill()
    burst = Burst(args.jobs, args.members, args.size, args.steps, args.upload_limit)
    print(table(runs, burst, args) + (slow.report() if args.debug else ""))


if __name__ == "__main__":
    main()
