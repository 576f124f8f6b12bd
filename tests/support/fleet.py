"""Workers in the test process, serving fake engines to the bot through a real Redis."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

from bot.fleet.worker import Heartbeat, Worker
from bot.models.picker import Models
from bot.pipeline.engines import Engines
from core.network_files import NetworkFolder
from core.upscaler_files import UpscalerFolder
from core.vae_files import VaeFolder
from tests.support.fake_engine import FakeEngine

# Short enough that a test sees a worker die in a couple of seconds, long enough that a loaded test machine never
# misses a beat; the bot looks for heartbeats every POLL seconds.
TTL = 2.0
POLL = 0.05


@dataclass
class RunningWorker:
    worker: Worker
    engine: FakeEngine
    redis: Redis
    task: asyncio.Task[None]

    async def die(self) -> None:
        """As a killed process: no goodbye, no result posted; its heartbeat key just expires."""
        self.task.cancel()
        # The batches it was drawing die with it (as the process would take them along).
        batches = list(self.worker._batches)
        for batch in batches:
            batch.cancel()
        await asyncio.gather(self.task, *batches, return_exceptions=True)
        await self.redis.aclose()

    def lose_heartbeat(self) -> None:
        """As a network partition between it and Redis for its heartbeats only: it goes on drawing and posting."""
        self.worker._tasks[0].cancel()

    async def leave(self) -> None:
        """A clean stop (SIGTERM)."""
        await self.worker.stop(grace=5.0)
        await asyncio.gather(self.task, return_exceptions=True)
        await self.redis.aclose()


async def start_worker(
    url: str,
    name: str,
    engine: FakeEngine | None = None,
    ttl: float = TTL,
    models: Models | None = None,
    loras: NetworkFolder | None = None,
    upscalers: UpscalerFolder | None = None,
    vaes: VaeFolder | None = None,
) -> RunningWorker:
    engine = engine or FakeEngine()
    engines = Engines([engine])
    await engines.start()
    redis = Redis.from_url(url)
    worker = Worker(
        redis,
        name,
        engines,
        heartbeat=Heartbeat(ttl),
        retry=POLL,
        block=POLL,
        models=models,
        loras=loras,
        upscalers=upscalers,
        vaes=vaes,
    )
    await worker.register()
    running = RunningWorker(worker, engine, redis, asyncio.create_task(worker.serve(), name=f"worker-{name}"))
    await asyncio.sleep(0)  # serve() has started its tasks
    return running
