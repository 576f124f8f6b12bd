"""`sdbot worker`: serves this machine's engines to the bot through Redis.

It announces itself with a heartbeat key, draws the batches the bot puts on its stream, and posts every result
until Redis has it: a worker that cannot reach Redis keeps its results and keeps trying, and never drops one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.fleet.streams import (
    MAX_RESULT_BYTES,
    PROGRESS,
    PROGRESS_KEPT,
    RESULTS,
    BadEntry,
    Kind,
    WorkerCard,
    batches_key,
    crashed_fields,
    outcome_fields,
    read_frame,
    text,
    worker_key,
)
from bot.models.picker import Models
from bot.pipeline.engine_client import Engine, EngineCrashed, EngineStartError, JobFailedError
from bot.pipeline.engines import Engines
from core.network_files import NetworkFolder
from core.upscaler_files import UpscalerFolder
from core.vae_files import VaeFamily, VaeFolder, vae_families
from core.wire import CancelRequest, GenerateBatch, JobFailed, JobResult, Progress, encode

log = logging.getLogger(__name__)

ENGINE_DOWN = "The image engine of the GPU worker {name} cannot start at the moment; its owner can see why in its log."


class WorkerRefused(Exception):
    """The worker cannot serve: the message is one line for the operator (Redis unreachable, name taken)."""


def name_taken(name: str) -> str:
    return f"SDBOT_WORKER_NAME {name} is taken by a worker that is still running: give this one another name"


async def wait_for_name(redis: Redis, name: str, clock: Callable[[], float] = time.monotonic) -> None:
    """Return once `name` is free: at once if no worker has it, or when the heartbeat of one that died expires;
    WorkerRefused if its worker keeps renewing it (it is alive). A restarted worker with a fixed name thus waits for
    its dead self's key instead of being refused."""
    key = worker_key(name)
    left = await redis.pttl(key)
    deadline = clock() + max(0, left) / 1000 + 1.0
    while left != -2:
        if clock() > deadline:
            raise WorkerRefused(name_taken(name))
        await asyncio.sleep(0.2)
        left = await redis.pttl(key)


def default_name(devices: Sequence[str]) -> str:
    """The host, its devices, and a suffix unique to this start, so two workers on one host are two workers."""
    return f"{socket.gethostname()}-{'+'.join(devices) or 'none'}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Heartbeat:
    """How long the bot trusts a worker without news (seconds), and how often it renews that trust."""

    ttl: float = 15.0

    @property
    def every(self) -> float:
        return self.ttl / 3


class Worker:
    """One machine's engines, served to the bot as worker `name`."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        engines: Engines,
        *,
        heartbeat: Heartbeat = Heartbeat(),
        models: Models | None = None,
        loras: NetworkFolder | None = None,
        embeddings: NetworkFolder | None = None,
        upscalers: UpscalerFolder | None = None,
        vaes: VaeFolder | None = None,
        retry: float = 1.0,
        block: float = 1.0,
    ) -> None:
        self.redis = redis
        self.name = name
        self.engines = engines
        self.heartbeat = heartbeat
        self.models = models
        self.folders = (loras or NetworkFolder(None), embeddings or NetworkFolder(None))
        # The LoRAs and embeddings its card lists, read at start and at each rescan.
        self.networks: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self.file_folders = (upscalers or UpscalerFolder(None), vaes)
        # The upscalers and VAEs (with their families) its card lists, read with the networks.
        self.files: tuple[frozenset[str], dict[str, VaeFamily | None]] = (frozenset(), {})
        self.retry = retry
        self.block = block
        self._batches: set[asyncio.Task[None]] = set()
        self._progress: asyncio.Queue[dict[str, str | bytes]] = asyncio.Queue(maxsize=1000)
        self._tasks: list[asyncio.Task[None]] = []
        self._warned = False

    def card(self) -> WorkerCard:
        readies = tuple(engine.ready for engine in self.engines.local if engine.ready is not None)
        models = tuple(self.models.local.entries.values()) if self.models is not None else ()
        loras, embeddings = self.networks
        upscalers, vaes = self.files
        return WorkerCard(
            self.name, socket.gethostname(), readies, self.heartbeat.ttl, models, loras, embeddings, upscalers, vaes
        )

    async def scan(self) -> None:
        """Read the LoRA, embedding, upscaler and VAE folders again (off the event loop)."""
        loras, embeddings = await asyncio.gather(*(asyncio.to_thread(folder.names) for folder in self.folders))
        self.networks = (frozenset(loras), frozenset(embeddings))
        upscalers, vaes = self.file_folders
        self.files = (frozenset(await asyncio.to_thread(upscalers.names)), await asyncio.to_thread(vae_families, vaes))

    async def register(self) -> None:
        """Announce this worker; WorkerRefused when Redis cannot be reached or a live worker has its name."""
        await self.scan()
        try:
            taken = not await self.redis.set(worker_key(self.name), self.card().to_json(), nx=True, px=self._ttl_ms)
            if not taken:
                # Batches left for an earlier worker of this name were drawn elsewhere once it was declared dead.
                await self.redis.delete(batches_key(self.name))
        except (RedisError, OSError) as exc:
            raise WorkerRefused(f"SDBOT_REDIS_URL cannot be reached: {exc}") from None
        if taken:
            raise WorkerRefused(name_taken(self.name))
        log.info("worker %s serves %d engines", self.name, len(self.engines.local))

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.heartbeat.ttl * 1000))

    async def serve(self) -> None:
        """Beat, draw and report until cancelled."""
        self._tasks = [
            asyncio.create_task(self._beat(), name="worker-heartbeat"),
            asyncio.create_task(self._read(), name="worker-batches"),
            asyncio.create_task(self._send_progress(), name="worker-progress"),
        ]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for task in self._tasks:
                task.cancel()

    async def stop(self, grace: float) -> None:
        """Take no more batches, finish those in hand within `grace` seconds and post them, then leave: the bot sees
        the heartbeat key go and sends what is left elsewhere."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._batches:
            _, late = await asyncio.wait(self._batches, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        try:
            await self.redis.delete(worker_key(self.name), batches_key(self.name))
        except RedisError as exc:
            log.warning("could not sign off (the bot declares this worker dead when its heartbeat expires): %s", exc)

    def _lost_redis(self, exc: BaseException) -> None:
        if not self._warned:
            log.warning("Redis cannot be reached (%s): results are kept until it is back", exc)
            self._warned = True

    async def _beat(self) -> None:
        while True:
            try:
                card = self.card().to_json()
                if not await self.redis.set(worker_key(self.name), card, xx=True, px=self._ttl_ms):
                    # Redis lost the key (restarted without it) or it expired while the worker could not reach it:
                    # announce again; the bot sees a worker join, and batches lost with the old one were re-sent.
                    log.warning("the heartbeat key was gone; announcing this worker again")
                    await self.redis.set(worker_key(self.name), card, px=self._ttl_ms)
                if self._warned:
                    log.info("Redis is back")
                    self._warned = False
            except (RedisError, OSError) as exc:
                self._lost_redis(exc)
            await asyncio.sleep(self.heartbeat.every)

    async def _read(self) -> None:
        last: bytes | str = "0"
        while True:
            try:
                reply = await self.redis.xread(
                    {batches_key(self.name): last}, count=16, block=max(1, int(self.block * 1000))
                )
            except (RedisError, OSError) as exc:
                self._lost_redis(exc)
                await asyncio.sleep(self.retry)
                continue
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    await self._take(fields)
                if entries:
                    # Taken: the stream need not keep them.
                    try:
                        await self.redis.xtrim(batches_key(self.name), minid=last)
                    except (RedisError, OSError) as exc:
                        self._lost_redis(exc)

    def _engine(self, fields: dict[bytes, bytes]) -> Engine:
        number = text(fields, "engine", 8)
        if not number.isdigit() or int(number) >= len(self.engines.local):
            raise BadEntry(f"no engine {number}")
        return self.engines.local[int(number)]

    async def _take(self, fields: dict[bytes, bytes]) -> None:
        """One entry of this worker's stream: a batch to draw, a cancel, a rescan."""
        try:
            kind = Kind(text(fields, "kind"))
            engine = self._engine(fields)
            if kind is Kind.RELOAD:
                # The next heartbeat's card tells the bot what the folder holds now.
                if self.models is not None:
                    await self.models.rescan()
                await self.scan()
                await engine.reload_models()
                return
            message = read_frame(fields.get(b"frame", b""), MAX_RESULT_BYTES)
            if kind is Kind.CANCEL and isinstance(message, CancelRequest):
                await engine.cancel(message.job_id)
            elif kind is Kind.BATCH and isinstance(message, GenerateBatch):
                task = asyncio.create_task(self._draw(engine, text(fields, "batch"), message), name="worker-batch")
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
            else:
                raise BadEntry(f"a {kind.value} entry with a {type(message).__name__} frame")
        except (BadEntry, ValueError) as exc:
            log.warning("ignored an entry of %s: %s", batches_key(self.name), exc)

    async def _draw(self, engine: Engine, batch: str, message: GenerateBatch) -> None:
        """Draw a batch and post each job's answer; if the engine dies, say which jobs it was drawing."""
        steps: dict[str, Progress] = {}

        def on_progress(progress: Progress) -> None:
            steps[progress.job_id] = progress
            entry: dict[str, str | bytes] = {"worker": self.name, "batch": batch, "frame": encode(progress)}
            if not self._progress.full():
                self._progress.put_nowait(entry)

        try:
            outcomes = await engine.generate_batch(message.requests, on_progress)
        except EngineCrashed as exc:
            log.error("batch %s: %s", batch, exc)
            for job_id, outcome in exc.finished.items():
                await self._post_outcome(batch, job_id, outcome)
            drawing = [job_id for job_id, progress in steps.items() if progress.step < progress.total]
            await self._post(crashed_fields(self.name, batch, str(exc), drawing))
            return
        except EngineStartError as exc:
            log.error("batch %s: the engine cannot start: %s", batch, exc)
            outcomes = [JobFailedError(ENGINE_DOWN.format(name=self.name)) for _ in message.requests]
        for request, outcome in zip(message.requests, outcomes, strict=True):
            await self._post_outcome(batch, request.job_id, outcome)

    async def _post_outcome(self, batch: str, job_id: str, outcome: JobResult | JobFailedError) -> None:
        frame = encode(outcome if isinstance(outcome, JobResult) else JobFailed(job_id=job_id, message=str(outcome)))
        await self._post(outcome_fields(self.name, batch, frame))

    async def _post(self, fields: dict[str, bytes]) -> None:
        """Add an entry to the results stream, trying until Redis takes it (a copy posted twice is dropped by the
        bot: the first answer for a job wins)."""
        while True:
            try:
                await self.redis.xadd(RESULTS, fields)  # type: ignore[arg-type]
                return
            except (RedisError, OSError) as exc:
                self._lost_redis(exc)
                await asyncio.sleep(self.retry)

    async def _send_progress(self) -> None:
        """Steps go out in order, at most one write at a time; while Redis is away they are dropped, not queued."""
        while True:
            entry = await self._progress.get()
            try:
                await self.redis.xadd(PROGRESS, entry, maxlen=PROGRESS_KEPT, approximate=True)  # type: ignore[arg-type]
            except (RedisError, OSError) as exc:
                self._lost_redis(exc)
