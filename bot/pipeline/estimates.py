"""When a queued job will start: seconds per denoising step per megapixel, learned on this device as jobs run."""

from __future__ import annotations

from collections.abc import Sequence

from bot.pipeline.database import Database
from core.params import GenerationParams

RATE_KEY = "seconds_per_step_megapixel"
# Before anything was measured: SD 1.5 in fp16 on a recent GPU, about 30 steps of 512² a second.
DEFAULT_RATE = 0.12
# How much each finished job moves the learned rate (an exponential moving average).
LEARNING = 0.3


def work(params: GenerationParams) -> float:
    """Denoising steps × megapixels: img2img modes run only steps × strength of their steps, and a hires fix adds
    its second pass at the output size."""
    steps = max(1, int(params.steps * params.strength)) if params.needs_source else params.steps
    first = steps * params.width * params.height * params.count
    return (first + params.second_pass_steps * params.pixels) / 1e6


class Estimator:
    """Learns this device's speed from finished jobs and keeps it in SQLite across restarts."""

    def __init__(self, database: Database, parallel: int = 1) -> None:
        self.database = database
        self.rate = DEFAULT_RATE
        # Engines drawing at once: the queue ahead drains that much faster.
        self.parallel = parallel

    async def load(self) -> None:
        """The rate learned before the restart, if any."""
        cursor = await self.database.db.execute("SELECT value FROM stats WHERE key = ?", (RATE_KEY,))
        row = await cursor.fetchone()
        self.rate = float(row[0]) if row is not None else DEFAULT_RATE

    async def observe(self, params: GenerationParams, seconds: float) -> None:
        """Fold one finished job's engine time into the rate."""
        await self.observe_batch([params], seconds)

    async def observe_batch(self, batch: Sequence[GenerationParams], seconds: float) -> None:
        """Fold the engine time of jobs drawn together into the rate."""
        measured = seconds / max(sum(work(params) for params in batch), 1e-6)
        self.rate = (1 - LEARNING) * self.rate + LEARNING * measured
        await self.database.db.execute(
            "INSERT INTO stats (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (RATE_KEY, self.rate),
        )
        await self.database.db.commit()

    def seconds(self, params: GenerationParams) -> float:
        return work(params) * self.rate

    def start_at(
        self, ahead: Sequence[GenerationParams], running: Sequence[tuple[GenerationParams, float]], now: float
    ) -> float:
        """When a job behind `ahead` starts, given the jobs running (each with its start): the rate learned from
        batches makes their summed seconds the batch's, and the engines share the work left."""
        left = 0.0
        if running:
            began = min(started for _, started in running)
            left = max(0.0, began + sum(self.seconds(params) for params, _ in running) - now)
        return now + (left + sum(self.seconds(p) for p in ahead)) / self.parallel
