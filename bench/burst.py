"""What the benchmarks share: the burst's prompts, how long a burst may take, and a stand-in for Discord that
times each result (no torch)."""

from __future__ import annotations

import asyncio
import time

from core.jobs import Job
from core.wire import JobResult

# A job lost on the way (see the log) should end the run, not hang it.
BURST_TIMEOUT_S = 600
PROMPTS = (
    "a lighthouse on a cliff at dusk, oil painting",
    "portrait of an old sailor, detailed, 35mm",
    "a cat wearing a tiny crown, studio photo",
    "isometric cozy bedroom, soft light",
    "a dragon made of autumn leaves",
    "cyberpunk street market in the rain",
    "watercolor fox in a snowy forest",
    "a bowl of ramen, food photography",
)


class Timing:
    """Stands in for Discord: notes when each result would be posted (PNGs already made and on disk)."""

    def __init__(self, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else start
        self.done: dict[str, float] = {}
        self.all_done = asyncio.Event()
        self.expected = 0

    async def edit_status(self, job: Job, text: str, **options: object) -> None:
        """Progress edits cost nothing here."""

    async def post_result(self, job: Job, result: JobResult) -> object:
        self.done[job.id] = time.perf_counter() - self.start
        if len(self.done) >= self.expected:
            self.all_done.set()
        return type("Posted", (), {"id": 1})()

    async def post_failure(self, job: Job, sentence: str) -> None:
        raise RuntimeError(f"job {job.id} failed: {sentence}")
