"""The bot's side of the engine: a narrow interface, and the child process that implements it."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.params import GenerationParams
from core.wire import (
    CancelRequest,
    EngineFatal,
    EngineReady,
    EngineStarting,
    GenerateBatch,
    GenerateRequest,
    JobFailed,
    JobResult,
    Progress,
    ReloadModels,
    WireError,
    encode,
    read_message_async,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]


class EngineStartError(RuntimeError):
    """The engine could not load its model; the message is one line for the operator."""


class EngineCrashed(RuntimeError):
    """The engine process died while jobs were running; `finished` holds the answers that came before, `drawing`
    (when the engine knows) the jobs it was denoising, which bear the crash."""

    def __init__(
        self,
        message: str,
        finished: Mapping[str, JobResult | JobFailedError] | None = None,
        drawing: frozenset[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.finished = dict(finished or {})
        self.drawing = drawing


class EngineLost(EngineCrashed):
    """The engine is gone for good (its worker stopped answering, or could not be reached): its unanswered jobs go
    to another engine."""


class EngineGarbled(EngineCrashed):
    """The engine sent a frame the bot cannot use about these jobs; it was killed, and is started again."""


class JobFailedError(RuntimeError):
    """The engine refused or failed a job; the message is a sentence for the member."""


class UnusableFrame(Exception):
    """A well-formed frame that makes no sense here (a result with the wrong images, a step past the end, …)."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class _Pending:
    """A job sent to the engine and not yet answered: what was asked, where its answer and progress go, and the
    jobs sent with it (a bad frame fails the batch it concerns)."""

    request: GenerateRequest
    future: asyncio.Future[JobResult]
    on_progress: ProgressCallback
    batch: tuple[str, ...]


def check_result(request: GenerateRequest, result: JobResult) -> None:
    """UnusableFrame unless `result` holds one PNG per seed the job asked for, in seed order."""
    seeds = tuple(image.seed for image in result.images)
    if seeds != request.params.seeds():
        raise UnusableFrame(f"result with seeds {seeds[:8]} for a job of seeds {request.params.seeds()}", result.job_id)
    for image in result.images:
        if not image.png.startswith(PNG_SIGNATURE):
            raise UnusableFrame(f"result image of seed {image.seed} is not a PNG", result.job_id)


def check_progress(progress: Progress) -> None:
    """UnusableFrame unless the step lies within the job's steps."""
    if not 0 <= progress.step <= progress.total or progress.total < 1:
        raise UnusableFrame(f"progress step {progress.step} of {progress.total}", progress.job_id)


# Each job of a batch ends with its result or with the sentence it failed with.
Outcome = JobResult | JobFailedError


def batch_outcomes(requests: Sequence[GenerateRequest], gathered: Sequence[object]) -> list[Outcome]:
    """Each job's outcome, in the order asked, from what its future gave; if the engine died (or was lost) before
    answering some, its EngineCrashed again, carrying the answers that came before."""
    results: dict[str, Outcome] = {}
    crash: BaseException | None = None
    for request, outcome in zip(requests, gathered, strict=True):
        if isinstance(outcome, JobResult | JobFailedError):
            results[request.job_id] = outcome
        elif isinstance(outcome, BaseException):
            crash = outcome
    if isinstance(crash, EngineCrashed):
        raise type(crash)(str(crash), results, crash.drawing)
    if crash is not None:
        raise crash
    return [results[request.job_id] for request in requests]


class Engine(Protocol):
    """What the bot needs from whatever draws images: start, draw batches of jobs, stop."""

    # How often it was started again after dying.
    restarts: int
    # Where it runs, for operators: "local", or the name of the worker serving it.
    host: str
    # When its worker last said it was alive (None: a local engine, which the bot watches itself).
    last_heartbeat: float | None

    @property
    def available(self) -> bool:
        """Whether it may be given a batch now (a remote one is not while its worker is unreachable)."""
        ...

    def draws(self, params: GenerationParams) -> bool:
        """Whether it has the model ("" the default model) and the LoRAs a job names."""
        ...

    @property
    def ready(self) -> EngineReady | None: ...

    async def start(self, on_starting: Callable[[str], object] | None = None) -> EngineReady:
        """Start the engine; `on_starting(stage)` hears what it is doing until it is ready."""
        ...

    async def generate_batch(
        self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback
    ) -> list[Outcome]: ...

    async def cancel(self, job_id: str) -> None: ...

    async def reload_models(self) -> None: ...

    def begin_shutdown(self) -> None:
        """The bot is stopping: running jobs may finish, but an engine that dies now is not started again."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class EngineCommand:
    """How to start the engine process."""

    model: str
    device: str
    max_megapixels: float | None = None
    inpaint_model: str | None = None
    max_batch: int | None = None  # None: the engine chooses from the device memory
    compile: bool = False
    preview_model: str | None = None
    python: str = sys.executable
    lora_dir: str | None = None
    embeddings_dir: str | None = None
    upscalers_dir: str | None = None
    vae_dir: str | None = None
    face_model: str | None = None
    models_dir: str | None = None
    model_cache: int = 2
    allow_pickle: bool = False
    safety_model: str | None = None
    niceness: int | None = None  # None: the engine's own choice, 10 levels below the bot
    threads: int | None = None  # CPU threads for torch; None: torch's own choice (every core)

    def argv(self) -> list[str]:
        args = [self.python, "-m", "engine", "--model", self.model, "--device", self.device]
        if self.max_megapixels is not None:
            args += ["--max-megapixels", str(self.max_megapixels)]
        if self.inpaint_model is not None:
            args += ["--inpaint-model", self.inpaint_model]
        if self.lora_dir is not None:
            args += ["--lora-dir", self.lora_dir]
        if self.embeddings_dir is not None:
            args += ["--embeddings-dir", self.embeddings_dir]
        if self.upscalers_dir is not None:
            args += ["--upscalers-dir", self.upscalers_dir]
        if self.vae_dir is not None:
            args += ["--vae-dir", self.vae_dir]
        if self.face_model is not None:
            args += ["--face-model", self.face_model]
        if self.models_dir is not None:
            args += ["--models-dir", self.models_dir, "--model-cache", str(self.model_cache)]
        if self.allow_pickle:
            args.append("--allow-pickle")
        if self.max_batch is not None:
            args += ["--max-batch", str(self.max_batch)]
        if self.compile:
            args.append("--compile")
        if self.preview_model is not None:
            args += ["--preview-model", self.preview_model]
        if self.safety_model is not None:
            args += ["--safety-model", self.safety_model]
        if self.niceness is not None:
            args += ["--niceness", str(self.niceness)]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        return args


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before restarting an engine that died: doubling per crash in a row, capped."""

    initial: float = 1.0
    maximum: float = 60.0

    def delay(self, crashes: int) -> float:
        return 0.0 if crashes <= 0 else min(self.maximum, self.initial * 2 ** (crashes - 1))


# The bot's credentials (DISCORD_TOKEN): the engine needs none, and it opens files from anywhere (with
# SDBOT_ALLOW_PICKLE=1 even checkpoints that run code when loaded).
BOT_SECRETS_PREFIX = "DISCORD_"


def engine_environment() -> dict[str, str]:
    """The bot's environment without its secrets, with the ML libraries' import-time chatter and progress bars
    kept out of the log."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(BOT_SECRETS_PREFIX)}
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ProcessEngine:
    """Runs the engine as a child OS process; restarts it if it died.

    A batch may be sent before the last one is answered, so the engine starts it while the last one's PNGs
    are still being encoded.
    """

    def __init__(
        self,
        command: EngineCommand,
        backoff: Backoff = Backoff(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        has: Callable[[GenerationParams], bool] = lambda params: True,
    ) -> None:
        self.command = command
        # Whether the bot's own folders have a job's model and LoRAs (not ones only a worker has).
        self.has = has
        self.backoff = backoff
        self._sleep = sleep
        self._crashes = 0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: EngineReady | None = None
        self._lock = asyncio.Lock()
        self._pending: dict[str, _Pending] = {}
        self._shutting_down = False
        self.restarts = 0
        self.host = "local"
        self.last_heartbeat: float | None = None

    @property
    def ready(self) -> EngineReady | None:
        return self._ready

    @property
    def available(self) -> bool:
        return True

    def draws(self, params: GenerationParams) -> bool:
        """A local engine reads the bot's own folders."""
        return self.has(params)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _alive(self) -> bool:
        return self._process is not None and self._process.returncode is None and self._reader is not None

    async def start(self, on_starting: Callable[[str], object] | None = None) -> EngineReady:
        """Start the process and wait until its model is loaded (and compiled), hearing of each stage."""
        process = await asyncio.create_subprocess_exec(
            *self.command.argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=engine_environment(),
        )
        self._process = process
        assert process.stdout is not None
        try:
            while isinstance(first := await read_message_async(process.stdout), EngineStarting):
                log.info("engine: %s", first.stage)
                if on_starting is not None:
                    on_starting(first.stage)
        except WireError as exc:
            first = EngineFatal(message=f"the engine process spoke garbage at start: {exc}")
        if not isinstance(first, EngineReady):
            code = await process.wait()
            if isinstance(first, EngineFatal):
                raise EngineStartError(first.message)
            raise EngineStartError(f"the engine process exited with code {code} before loading the model; see above")
        self._ready = first
        self._reader = asyncio.create_task(self._read(process), name="engine-reader")
        log.info(
            "engine ready: %s (%s) on %s, up to %.1f megapixels a job",
            first.model.name,
            first.model.hash,
            first.device,
            first.max_pixels / 1e6,
        )
        return first

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while (message := await read_message_async(process.stdout)) is not None:
                self._route(message)
        except (WireError, UnusableFrame) as exc:
            # Nothing the engine says after this can be trusted: the jobs it concerns fail, the engine restarts.
            log.error("the engine sent a frame I cannot use, restarting it: %s", exc)
            self._garbled(str(exc), exc.job_id if isinstance(exc, UnusableFrame) else None)
            process.kill()
        code = await process.wait()
        self._reader = None
        if process is self._process:  # not stopped by close(): it died
            self._crashes += 1
            log.error("the engine process exited with code %s", code)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(EngineCrashed(f"the engine process exited with code {code}"))

    def _garbled(self, reason: str, job_id: str | None) -> None:
        """Fail the batch a bad frame was about (or, when it names none, the one the engine was drawing)."""
        waiting = [pending for pending in self._pending.values() if not pending.future.done()]
        named = self._pending.get(job_id) if job_id is not None else None
        batch = named.batch if named is not None else waiting[0].batch if waiting else ()
        for pending in waiting:
            if pending.request.job_id in batch:
                pending.future.set_exception(EngineGarbled(f"the engine sent a frame I cannot use: {reason}"))

    def _route(self, message: object) -> None:
        """Hand a frame to the job it answers; UnusableFrame for one that has no place in a running engine."""
        if not isinstance(message, Progress | JobResult | JobFailed):
            raise UnusableFrame(f"unexpected {type(message).__name__} while drawing")
        pending = self._pending.get(message.job_id)
        if pending is None or pending.future.done():
            log.warning("engine sent a %s for job %s, which it was not drawing", type(message).__name__, message.job_id)
        elif isinstance(message, Progress):
            check_progress(message)
            try:
                pending.on_progress(message)
            except Exception:
                log.exception("job %s: showing its progress failed", message.job_id)
        elif isinstance(message, JobResult):
            check_result(pending.request, message)
            pending.future.set_result(message)
        else:
            pending.future.set_exception(JobFailedError(message.message))

    async def generate(
        self,
        job_id: str,
        params: GenerationParams,
        on_progress: ProgressCallback,
        source: bytes | None = None,
        check_safety: bool = False,
    ) -> JobResult:
        """Draw one job (over `source` for the modes that need one, its images checked when `check_safety`);
        raise JobFailedError or EngineCrashed."""
        request = GenerateRequest(job_id, params, source, check_safety=check_safety)
        (outcome,) = await self.generate_batch([request], on_progress)
        if isinstance(outcome, JobFailedError):
            raise outcome
        return outcome

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        """Draw jobs in one denoising loop; each gets its result or JobFailedError. EngineCrashed if it died."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[JobResult]] = [loop.create_future() for _ in requests]
        async with self._lock:
            if not self._alive() and self._shutting_down:
                log.warning(
                    "the engine is not running and the bot is stopping: jobs %s run again after the next start",
                    ", ".join(request.job_id for request in requests),
                )
                # Loading a model now would only delay the stop: the shutdown abandons this batch, its jobs stay
                # running in the job log, and they are drawn again after the next start.
                await loop.create_future()
            if not self._alive():
                delay = self.backoff.delay(self._crashes)
                log.warning("engine is not running; starting it again in %.0f s", delay)
                await self.close()
                await self._sleep(delay)
                self.restarts += 1
                await self.start()
            assert self._process is not None and self._process.stdin is not None
            batch = tuple(request.job_id for request in requests)
            for request, future in zip(requests, futures, strict=True):
                self._pending[request.job_id] = _Pending(request, future, on_progress, batch)
            message = requests[0] if len(requests) == 1 else GenerateBatch(tuple(requests))
            try:
                self._process.stdin.write(encode(message))
                await self._process.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the reader sees the exit and fails the jobs
        try:
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            for request in requests:
                self._pending.pop(request.job_id, None)
        answered = batch_outcomes(requests, outcomes)
        self._crashes = 0
        return answered

    async def _send(self, message: CancelRequest | ReloadModels) -> bool:
        """Write a message beside the running job; False when there is no engine to take it."""
        if self._process is None or self._process.stdin is None or self._process.stdin.is_closing():
            return False
        try:
            self._process.stdin.write(encode(message))
            await self._process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def cancel(self, job_id: str) -> None:
        """Ask the engine to stop `job_id` between two steps; its generate() then fails with "Cancelled."."""
        if not await self._send(CancelRequest(job_id=job_id)):
            log.warning("job %s: the engine is gone, nothing to cancel", job_id)

    async def reload_models(self) -> None:
        """Have the engine rescan the models folder after its current job (a restarted engine scans anyway)."""
        await self._send(ReloadModels())

    def begin_shutdown(self) -> None:
        """Start no engine from now on; the running one finishes its jobs."""
        self._shutting_down = True

    async def close(self, grace: float = 10.0) -> None:
        """Close stdin so the engine exits after its current job; kill it if it takes longer than `grace`."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except asyncio.TimeoutError:
            log.warning("engine did not stop within %.0f s; killing it", grace)
            process.kill()
            await process.wait()
        if self._reader is not None:
            await self._reader
