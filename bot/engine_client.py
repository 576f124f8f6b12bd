"""The bot's side of the engine: a narrow interface, and the child process that implements it."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from engine.params import GenerationParams
from engine.wire import (
    CancelRequest,
    EngineFatal,
    EngineReady,
    GenerateRequest,
    JobFailed,
    JobResult,
    Progress,
    WireError,
    encode,
    read_message_async,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]


class EngineStartError(RuntimeError):
    """The engine could not load its model; the message is one line for the operator."""


class EngineCrashed(RuntimeError):
    """The engine process died while a job was running."""


class JobFailedError(RuntimeError):
    """The engine refused or failed a job; the message is a sentence for the member."""


class Engine(Protocol):
    """What the bot needs from whatever draws images: start, draw one job, stop."""

    @property
    def ready(self) -> EngineReady | None: ...

    async def start(self) -> EngineReady: ...

    async def generate(
        self,
        job_id: str,
        params: GenerationParams,
        on_progress: ProgressCallback,
        source: bytes | None = None,
        check_safety: bool = False,
    ) -> JobResult: ...

    async def cancel(self, job_id: str) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class EngineCommand:
    """How to start the engine process."""

    model: str
    device: str
    max_megapixels: float | None = None
    inpaint_model: str | None = None
    python: str = sys.executable
    safety_model: str | None = None

    def argv(self) -> list[str]:
        args = [self.python, "-m", "engine", "--model", self.model, "--device", self.device]
        if self.max_megapixels is not None:
            args += ["--max-megapixels", str(self.max_megapixels)]
        if self.inpaint_model is not None:
            args += ["--inpaint-model", self.inpaint_model]
        if self.safety_model is not None:
            args += ["--safety-model", self.safety_model]
        return args


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before restarting an engine that died: doubling per crash in a row, capped."""

    initial: float = 1.0
    maximum: float = 60.0

    def delay(self, crashes: int) -> float:
        return 0.0 if crashes <= 0 else min(self.maximum, self.initial * 2 ** (crashes - 1))


def engine_environment() -> dict[str, str]:
    """The bot's environment, with the ML libraries' import-time chatter and progress bars kept out of the log."""
    env = dict(os.environ)
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ProcessEngine:
    """Runs the engine as a child OS process, one job at a time; restarts it if it died."""

    def __init__(
        self,
        command: EngineCommand,
        backoff: Backoff = Backoff(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.command = command
        self.backoff = backoff
        self._sleep = sleep
        self._crashes = 0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: EngineReady | None = None
        self._lock = asyncio.Lock()
        self._pending: asyncio.Future[JobResult] | None = None
        self._on_progress: ProgressCallback | None = None
        self._pending_id: str | None = None

    @property
    def ready(self) -> EngineReady | None:
        return self._ready

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _alive(self) -> bool:
        return self._process is not None and self._process.returncode is None and self._reader is not None

    async def start(self) -> EngineReady:
        """Start the process and wait until its model is loaded."""
        process = await asyncio.create_subprocess_exec(
            *self.command.argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=engine_environment(),
        )
        self._process = process
        assert process.stdout is not None
        try:
            first = await read_message_async(process.stdout)
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
        except WireError as exc:
            log.error("engine sent a bad frame, restarting it: %s", exc)
            process.kill()
        code = await process.wait()
        self._reader = None
        if process is self._process:  # not stopped by close(): it died
            self._crashes += 1
            log.error("the engine process exited with code %s", code)
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(EngineCrashed(f"the engine process exited with code {code}"))

    def _route(self, message: object) -> None:
        if isinstance(message, Progress) and message.job_id == self._pending_id and self._on_progress:
            self._on_progress(message)
        elif isinstance(message, JobResult | JobFailed) and message.job_id == self._pending_id:
            assert self._pending is not None
            if isinstance(message, JobResult):
                self._pending.set_result(message)
            else:
                self._pending.set_exception(JobFailedError(message.message))
        else:
            log.warning("engine sent an unexpected message: %r", message)

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
        async with self._lock:
            if not self._alive():
                delay = self.backoff.delay(self._crashes)
                log.warning("engine is not running; starting it again in %.0f s", delay)
                await self.close()
                await self._sleep(delay)
                await self.start()
            assert self._process is not None and self._process.stdin is not None
            self._pending = asyncio.get_running_loop().create_future()
            self._pending_id, self._on_progress = job_id, on_progress
            try:
                self._process.stdin.write(
                    encode(GenerateRequest(job_id=job_id, params=params, source=source, check_safety=check_safety))
                )
                await self._process.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the reader sees the exit and fails the job
            try:
                result = await self._pending
                self._crashes = 0
                return result
            finally:
                self._pending = self._pending_id = self._on_progress = None

    async def cancel(self, job_id: str) -> None:
        """Ask the engine to stop `job_id` between two steps; its generate() then fails with "Cancelled."."""
        if self._process is None or self._process.stdin is None or self._process.stdin.is_closing():
            return
        try:
            self._process.stdin.write(encode(CancelRequest(job_id=job_id)))
            await self._process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            log.warning("job %s: the engine is gone, nothing to cancel", job_id)

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
