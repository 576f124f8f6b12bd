"""An in-process stand-in for the engine, for bot tests that need control over timing, not real pixels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from bot.pipeline.engine_client import JobFailedError, Outcome, ProgressCallback
from core.infotext import ModelInfo, format_infotext
from core.params import GenerationParams
from core.pngmeta import encode_png
from core.wire import EngineReady, GeneratedImage, GenerateRequest, JobResult, Progress

MODEL = ModelInfo(name="fake-model", hash="0123456789")


class FakeEngine:
    """Draws one flat colour per seed, with real PNG infotext; jobs wait for `gate` when it is cleared."""

    def __init__(
        self,
        *,
        max_pixels: int = 4 * 512 * 512,
        native: int = 512,
        noise: bool = False,
        max_batch: int = 1,
        safety_checker: bool = False,
        family_pixels: Mapping[str, int] | None = None,
    ) -> None:
        self._ready = EngineReady(
            model=MODEL,
            device="fake",
            native_width=native,
            native_height=native,
            max_pixels=max_pixels,
            max_batch=max_batch,
            safety_checker=safety_checker,
            family_pixels=family_pixels or {},
        )
        self.batches: list[list[str]] = []
        self.previews: dict[int, bytes] = {}  # step → preview sent with it
        self.started = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls: list[tuple[str, GenerationParams]] = []
        self.sources: dict[str, bytes | None] = {}
        self._called = asyncio.Condition()
        self.fail_with: str | None = None
        self.cancelled: set[str] = set()
        self.reloads = 0
        self.restarts = 0
        self.host = "local"
        self.last_heartbeat: float | None = None
        # The models it has (None: every one), as a remote worker reports them.
        self.models: set[str] | None = None
        # Cleared: it is not to be given batches (as a remote engine whose worker is unreachable).
        self.reachable = True
        # Noise does not compress: PNGs as large as real ones, for the upload-limit tests.
        self.noise = noise
        # As a loaded safety checker would: images of these seeds are flagged in jobs that ask for a check.
        self.flag_seeds: set[int] = set()
        self.checked: dict[str, bool] = {}
        # Set: a job stops after this step until `go_on` is set (`holding` tells it has got there).
        self.hold_after_step: int | None = None
        self.holding = asyncio.Event()
        self.go_on = asyncio.Event()
        # Cleared: results wait after the last step (denoised, as while PNGs are encoded) until it is set.
        self.results_gate = asyncio.Event()
        self.results_gate.set()
        self.in_flight = 0
        self.most_in_flight = 0
        # Told of each batch as it arrives.
        self.on_batch: Callable[[Sequence[GenerateRequest]], object] | None = None

    @property
    def ready(self) -> EngineReady | None:
        return self._ready if self.started else None

    @property
    def available(self) -> bool:
        return self.reachable

    def draws(self, params: GenerationParams) -> bool:
        return self.models is None or params.model in self.models

    async def start(self, on_starting: Callable[[str], object] | None = None) -> EngineReady:
        if on_starting is not None:
            on_starting("loading the model")
        self.started = True
        return self._ready

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        self.batches.append([request.job_id for request in requests])
        if self.on_batch is not None:
            self.on_batch(requests)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            outcomes = await asyncio.gather(
                *(self.generate(r.job_id, r.params, on_progress, r.source, r.check_safety) for r in requests),
                return_exceptions=True,
            )
        finally:
            self.in_flight -= 1
        for outcome in outcomes:
            if not isinstance(outcome, JobResult | JobFailedError):
                raise outcome
        return [outcome for outcome in outcomes if isinstance(outcome, JobResult | JobFailedError)]

    async def generate(
        self,
        job_id: str,
        params: GenerationParams,
        on_progress: ProgressCallback,
        source: bytes | None = None,
        check_safety: bool = False,
    ) -> JobResult:
        self.calls.append((job_id, params))
        self.checked[job_id] = check_safety
        self.sources[job_id] = source
        async with self._called:
            self._called.notify_all()
        await self.gate.wait()
        if job_id in self.cancelled:
            raise JobFailedError("Cancelled.")
        if self.fail_with is not None:
            raise JobFailedError(self.fail_with)
        for step in range(1, params.steps + 1):
            on_progress(Progress(job_id=job_id, step=step, total=params.steps, preview=self.previews.get(step)))
            if step == self.hold_after_step:
                self.holding.set()
                await self.go_on.wait()
            await asyncio.sleep(0)
            # As the engine does: a cancel takes effect between two steps (after the last one it is too late).
            if job_id in self.cancelled and step < params.steps:
                raise JobFailedError("Cancelled.")
        await self.results_gate.wait()
        images = []
        for seed in params.seeds():
            if self.noise:
                pixels = np.random.default_rng(seed).integers(0, 256, (params.height, params.width, 3), np.uint8)
                image = Image.fromarray(pixels)
            else:
                image = Image.new("RGB", (params.width, params.height), (seed % 256, seed // 256 % 256, 128))
            infotext = format_infotext(params, seed, MODEL)
            png = encode_png(image, infotext)
            flagged = check_safety and self._ready.safety_checker and seed in self.flag_seeds
            images.append(GeneratedImage(seed=seed, infotext=infotext, png=png, flagged=flagged))
        return JobResult(job_id=job_id, images=tuple(images), seconds=0.25, model=MODEL)

    async def wait_calls(self, count: int) -> None:
        """Wait until `count` jobs have reached the engine."""
        async with self._called:
            await asyncio.wait_for(self._called.wait_for(lambda: len(self.calls) >= count), 10)

    async def cancel(self, job_id: str) -> None:
        self.cancelled.add(job_id)

    async def reload_models(self) -> None:
        self.reloads += 1

    def begin_shutdown(self) -> None:
        """Nothing to restart here."""

    async def close(self) -> None:
        self.started = False
