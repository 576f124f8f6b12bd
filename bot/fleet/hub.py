"""The bot's end of Redis: finds the workers by their heartbeats, feeds their engines to the dispatcher, and hands
each result to the batch it answers, acknowledging it only once the job log has it.

The bot stays the only scheduler: workers never take work, they are given batches built for them. A worker is dead
when its heartbeat key expires while Redis is up, never because a job takes long; while Redis itself is down no
worker is declared dead, the remote engines are paused and their members told why, and their jobs wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.fleet.remote_engine import RemoteEngine
from bot.fleet.streams import (
    CONSUMER,
    GROUP,
    MAX_PROGRESS_BYTES,
    MAX_RESULT_BYTES,
    PROGRESS,
    RESULTS,
    WORKER_KEYS,
    BadEntry,
    Kind,
    WorkerCard,
    batches_key,
    entry_size,
    read_frame,
    text,
    worker_key,
)
from bot.pipeline.dispatch import Dispatcher
from bot.pipeline.engine_client import UnusableFrame, check_result
from bot.pipeline.model_files import ModelFiles
from bot.pipeline.networks import Networks
from bot.pipeline.progress import Clock
from bot.pipeline.store import JobStore
from bot.results.render import WORKERS_UNREACHABLE
from core.wire import GenerateRequest, JobFailed, JobResult, Progress

log = logging.getLogger(__name__)


Entry = tuple[bytes, dict[bytes, bytes]]


def redacted(url: str) -> str:
    """The URL without its password, for the log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


# How long the hub waits for its reads to stop when cancelled.
STOP_WAIT_S = 5.0


class _Worker:
    """A worker the bot feeds: its card and its engines."""

    def __init__(self, card: WorkerCard, engines: list[RemoteEngine]) -> None:
        self.card = card
        self.engines = engines


class Hub:
    """Connects the dispatcher to the workers on `url`; keeps trying while Redis cannot be reached."""

    def __init__(
        self,
        url: str,
        dispatcher: Dispatcher,
        store: JobStore,
        loras: Networks,
        files: ModelFiles,
        *,
        poll: float = 1.0,
        retry: float = 2.0,
        clock: Clock = time.time,
    ) -> None:
        self.url = url
        self.dispatcher = dispatcher
        self.store = store
        self.loras = loras
        self.files = files
        self.poll = poll
        self.retry = retry
        self.clock = clock
        self.redis: Redis = Redis.from_url(url, socket_timeout=max(10.0, 5 * poll), socket_connect_timeout=5.0)
        self.connected = False
        self._workers: dict[str, _Worker] = {}
        # Each heartbeat key's card as last read (None: unusable), by the raw text it was read from.
        self._cards: dict[bytes, tuple[bytes, WorkerCard | None]] = {}
        # When Redis was last reached after being out of reach: no worker is dead before its time-to-live after it.
        self._reachable_since = 0.0
        # Results handed to their batches, acknowledged once the job log has them.
        self._held: dict[str, list[bytes]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[None]] = set()
        self.warned = False
        dispatcher.handover.recorded.append(self._recorded)

    @property
    def engines(self) -> list[RemoteEngine]:
        return [engine for worker in self._workers.values() for engine in worker.engines]

    async def start(self) -> None:
        """Connect, and post what workers drew before the bot last stopped; then keep serving in the background. When
        Redis cannot be reached now, say so in one line and keep trying."""
        try:
            await self._connect()
        except (RedisError, OSError) as exc:
            self._unreachable(exc)
        self._task = asyncio.create_task(self._supervise(), name="fleet-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Bounded: the bot's shutdown must end even should a read never see its cancel.
            await asyncio.wait({self._task}, timeout=STOP_WAIT_S)
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)
        await self.redis.aclose()

    async def _connect(self) -> None:
        await self.redis.ping()
        try:
            # From the stream's start: results posted before the group existed are read too.
            await self.redis.xgroup_create(RESULTS, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if not self.connected:
            log.info("connected to Redis at %s", redacted(self.url))
        self.connected = True
        self.warned = False
        self._reachable_since = self.clock()
        self.dispatcher.engines.broker_down = False
        await self._read_pending()

    def _unreachable(self, exc: BaseException) -> None:
        """Redis is out of reach: pause the remote engines (their workers are not dead), and tell their members."""
        if not self.warned:
            log.warning(
                "SDBOT_REDIS_URL %s cannot be reached (%s): the remote engines wait; trying again every %g s",
                redacted(self.url),
                exc,
                self.retry,
            )
            self.warned = True
        self.connected = False
        if self.dispatcher.engines.broker_down:
            return
        self.dispatcher.engines.broker_down = True
        for engine in self.engines:
            engine.reachable = False
            self.dispatcher.tell_drawing(engine, WORKERS_UNREACHABLE)
        self.dispatcher.engines_changed()

    async def _supervise(self) -> None:
        while True:
            try:
                if not self.connected:
                    await self._connect()
                await self._serve()
            except (RedisError, OSError) as exc:
                self._unreachable(exc)
                await asyncio.sleep(self.retry)

    async def _serve(self) -> None:
        """Watch the heartbeats, read results and progress, until one of them loses Redis."""
        tasks = [
            asyncio.create_task(self._watch(), name="fleet-watch"),
            asyncio.create_task(self._read_results(), name="fleet-results"),
            asyncio.create_task(self._read_progress(), name="fleet-progress"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=self.poll)
            # A read blocked on a connection Redis dropped may not notice its cancel: closing every connection (the
            # next command opens a fresh one) frees it.
            await self.redis.connection_pool.disconnect(inuse_connections=True)
            if stuck:
                # Bounded: one that still does not stop must not keep the hub from serving again (or the bot from
                # stopping); it is left to end with its connection.
                _, stuck = await asyncio.wait(stuck, timeout=STOP_WAIT_S)
                for task in stuck:
                    log.warning("%s did not stop when cancelled; serving on without it", task.get_name())

    # Workers

    async def _watch(self) -> None:
        while True:
            await self.check_workers()
            await asyncio.sleep(self.poll)

    async def check_workers(self) -> None:
        """Feed the workers whose heartbeat lives, and declare dead those whose heartbeat expired (not sooner than a
        time-to-live after Redis came back, so that a broker outage kills no one)."""
        keys = [key async for key in self.redis.scan_iter(match=WORKER_KEYS, count=100)]
        alive: dict[str, tuple[WorkerCard, float]] = {}
        if keys:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(key)
                    pipe.pttl(key)
                replies = await pipe.execute()
            now = self.clock()
            for key, raw, left in zip(keys, replies[::2], replies[1::2], strict=True):
                card = self._card(key, raw) if raw is not None else None
                if card is not None:
                    alive[card.name] = (card, now - max(0.0, card.ttl - max(0, left) / 1000))
        self._cards = {key: self._cards[key] for key in keys if key in self._cards}
        for name, (card, beat) in alive.items():
            worker = self._workers.get(name) or self._attach(card)
            if card is not worker.card:
                # Its folders were rescanned (/sdadmin models reload).
                worker.card = card
                for engine in worker.engines:
                    engine.card = card
                self._offer_models()
            for engine in worker.engines:
                engine.last_heartbeat = beat
                if not engine.reachable:
                    engine.reachable = True
                    self.dispatcher.engines_changed()
        now = self.clock()
        for name in [name for name in self._workers if name not in alive]:
            if now - self._reachable_since >= self._workers[name].card.ttl:
                await self._declare_dead(name)

    def _card(self, key: bytes, raw: bytes) -> WorkerCard | None:
        """The card a heartbeat key holds; None (said once) for one the bot cannot use. A card is read again only
        when its worker changed it: most heartbeats renew the same one."""
        known = self._cards.get(key)
        if known is not None and known[0] == raw:
            return known[1]
        card: WorkerCard | None = None
        try:
            card = WorkerCard.from_json(raw)
            if worker_key(card.name).encode() != key:
                log.warning("ignoring %s: its card names the worker %s", key.decode(errors="replace"), card.name)
                card = None
        except BadEntry as exc:
            log.warning("ignoring %s: %s", key.decode(errors="replace"), exc)
        self._cards[key] = (raw, card)
        return card

    def _attach(self, card: WorkerCard) -> _Worker:
        engines = [RemoteEngine(self.redis, card, index) for index in range(len(card.engines))]
        worker = self._workers[card.name] = _Worker(card, engines)
        for engine in engines:
            self.dispatcher.attach(engine)
        self._offer_models()
        devices = ", ".join(ready.device for ready in card.engines)
        log.info("worker %s on %s joined with %d engines (%s)", card.name, card.host, len(engines), devices)
        return worker

    def _offer_models(self) -> None:
        """/imagine offers every model some connected worker has, and takes its LoRAs, upscalers and VAEs (a job for
        one goes only to a worker with it)."""
        cards = [worker.card for worker in self._workers.values()]
        self.dispatcher.models.use_remote({entry.name: entry for card in cards for entry in card.models})
        self.loras.use_remote(name for card in cards for name in card.loras)
        self.files.use_remote(
            (name for card in cards for name in card.upscalers),
            {name: family for card in cards for name, family in card.vaes.items()},
        )

    async def _declare_dead(self, name: str) -> None:
        worker = self._workers.pop(name)
        self._offer_models()
        log.warning(
            "worker %s is dead: no heartbeat for %.0f s; its batches go to other engines", name, worker.card.ttl
        )
        for engine in worker.engines:
            self.dispatcher.detach(engine)
            engine.lost(f"the worker {name} stopped answering (no heartbeat for {worker.card.ttl:.0f} s)")
        # What it was still to draw is drawn elsewhere; should it come back, it starts from an empty stream.
        await self.redis.delete(batches_key(name))

    # Results

    async def _read_pending(self) -> None:
        """The results read before but not acknowledged (the bot stopped before recording them, or Redis went away)
        and not held by a batch now: each is handed on again."""
        last = b"0"
        while True:
            reply = await self.redis.xreadgroup(GROUP, CONSUMER, {RESULTS: last}, count=4)
            entries: list[Entry] = reply[0][1] if reply else []
            if not entries:
                return
            held = {entry_id for ids in self._held.values() for entry_id in ids}
            for entry_id, fields in entries:
                last = entry_id
                if entry_id not in held:
                    await self._result(entry_id, fields)

    async def _read_results(self) -> None:
        while True:
            reply = await self.redis.xreadgroup(
                # A few at a time: each may hold a batch job's PNGs (up to MAX_RESULT_BYTES).
                GROUP,
                CONSUMER,
                {RESULTS: ">"},
                count=4,
                block=max(1, int(self.poll * 1000)),
            )
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    await self._result(entry_id, fields)

    async def _result(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> None:
        """Hand one entry of the results stream to the batch it answers; refuse (and log) anything else."""
        try:
            if not fields:
                raise BadEntry("deleted entry")
            if entry_size(fields) > MAX_RESULT_BYTES:
                raise BadEntry(f"entry of {entry_size(fields)} bytes is over the {MAX_RESULT_BYTES} allowed")
            try:
                kind = Kind(text(fields, "kind"))
            except ValueError:
                raise BadEntry("unknown kind") from None
            worker, batch = text(fields, "worker"), text(fields, "batch")
            engines = self._workers[worker].engines if worker in self._workers else []
            if kind is Kind.CRASHED:
                drawing = frozenset(filter(None, text(fields, "drawing", MAX_PROGRESS_BYTES).split(",")))
                for engine in engines:
                    engine.crashed(batch, text(fields, "message", 4000), drawing)
                await self._ack([entry_id])
                return
            if kind is not Kind.OUTCOME or b"frame" not in fields:
                raise BadEntry(f"a {kind.value} entry has no place in {RESULTS}")
            message = read_frame(fields[b"frame"], MAX_RESULT_BYTES)
            if not isinstance(message, JobResult | JobFailed):
                raise BadEntry(f"a {type(message).__name__} frame has no place in {RESULTS}")
        except BadEntry as exc:
            log.warning("refused entry %s of %s: %s", entry_id.decode(), RESULTS, exc)
            await self._ack([entry_id])
            return
        for engine in engines:
            if engine.answer(batch, message):
                self._held[message.job_id].append(entry_id)
                return
        await self._unclaimed(worker, message, entry_id)

    async def _unclaimed(self, worker: str, message: JobResult | JobFailed, entry_id: bytes) -> None:
        """An answer no batch waits for: a result drawn before the bot restarted is posted if its job still waits
        (and was last given to that worker); anything else (a late worker's, a second copy) is dropped."""
        job_id = message.job_id
        if isinstance(message, JobResult) and not self.dispatcher.is_running(job_id):
            if await self.store.handed_to(job_id) == worker and (job := self.dispatcher.take_waiting(job_id)):
                try:
                    check_result(GenerateRequest(job.id, job.params), message)
                except UnusableFrame as exc:
                    log.warning("refused worker %s's result for job %s: %s", worker, job_id, exc)
                    await self.dispatcher.queue.put_back(job.user_id, job, job.guild_id)
                    await self._ack([entry_id])
                    return
                log.info("job %s: posting what worker %s drew before the bot restarted", job_id, worker)
                self._held[job_id].append(entry_id)
                await self.dispatcher.finish_recovered(job, message)
                return
        log.warning("dropped a %s for job %s from worker %s: no batch waits for it", message.TYPE, job_id, worker)
        await self._ack([entry_id])

    def _recorded(self, job_ids: Sequence[str]) -> None:
        """The job log has these jobs' ends: their results may go."""
        entries = [entry_id for job_id in job_ids for entry_id in self._held.pop(job_id, [])]
        if entries:
            task = asyncio.create_task(self._ack(entries), name="fleet-ack")
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _ack(self, entries: list[bytes]) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(RESULTS, GROUP, *entries)
                pipe.xdel(RESULTS, *entries)
                await pipe.execute()
        except RedisError as exc:
            # Read again when Redis is back: the job log says they are done, so they are dropped then.
            log.warning("could not acknowledge %d results yet: %s", len(entries), exc)

    # Progress

    async def _read_progress(self) -> None:
        last: bytes | str = "$"
        while True:
            reply = await self.redis.xread({PROGRESS: last}, count=64, block=max(1, int(self.poll * 1000)))
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self._progress(fields)

    def _progress(self, fields: dict[bytes, bytes]) -> None:
        try:
            if entry_size(fields) > MAX_PROGRESS_BYTES:
                raise BadEntry("oversized progress entry")
            worker, batch = text(fields, "worker"), text(fields, "batch")
            message = read_frame(fields.get(b"frame", b""), MAX_PROGRESS_BYTES)
            if not isinstance(message, Progress):
                raise BadEntry(f"a {type(message).__name__} frame has no place in {PROGRESS}")
        except BadEntry as exc:
            log.debug("ignored a progress entry: %s", exc)
            return
        for engine in self._workers[worker].engines if worker in self._workers else []:
            engine.progress(batch, message)
