"""The engine process: load the model once, then draw the jobs the bot sends over stdin/stdout frames."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import torch
from diffusers.utils import logging as diffusers_logging

from core.batching import compatible
from core.catalog import Catalog, CatalogError, scan
from core.checkpoint_header import Family
from core.errors import first_line
from core.network_files import NetworkFolder
from core.params import InvalidParams
from core.source import InvalidSource, ModelSource, parse_source
from core.upscaler_files import UpscalerFolder
from core.vae_files import VaeFolder
from core.wire import (
    CancelRequest,
    EngineFatal,
    EngineReady,
    EngineStarting,
    GenerateBatch,
    GenerateRequest,
    JobFailed,
    JobResult,
    Message,
    ReloadModels,
    WireError,
    encode,
    read_message,
)
from engine.acceleration import compile_model, default_max_batch, use_fast_paths, warm_up
from engine.batch_progress import PREVIEW_INTERVAL, BatchProgress, JobCancelled
from engine.child_process import NICENESS, ignore_stop_signals, lower_priority
from engine.embeddings import load_embeddings
from engine.face_fix import FaceDetector, FaceDetectorError
from engine.generate import BatchJob, Drawn, Painter
from engine.loading import LoadedModel, ModelLoadError, load_model, pixel_budgets, resolve_device
from engine.loras import LoraLoader
from engine.model_shelf import ModelShelf, catalog_loader
from engine.preview import Previewer, PreviewError, load_tiny_autoencoder
from engine.safety import SafetyChecker, load_safety_checker
from engine.upscaler_shelf import UpscalerShelf
from engine.vae_switch import VaeFiles, VaeSwitch

log = logging.getLogger("engine")

OUT_OF_MEMORY = "The GPU ran out of memory drawing this: try a smaller size or fewer images."
CANCELLED = "Cancelled."


class Inbox:
    """Requests from the bot, read on a thread so that a cancel arrives while a batch is running."""

    def __init__(self, stream: BinaryIO) -> None:
        self._jobs: queue.Queue[tuple[GenerateRequest, ...] | ReloadModels | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(stream,), name="engine-inbox", daemon=True).start()

    def _read(self, stream: BinaryIO) -> None:
        try:
            while (message := read_message(stream)) is not None:
                if isinstance(message, CancelRequest):
                    with self._lock:
                        self._cancelled.add(message.job_id)
                elif isinstance(message, GenerateRequest):
                    self._jobs.put((message,))
                elif isinstance(message, GenerateBatch):
                    self._jobs.put(message.requests)
                elif isinstance(message, ReloadModels):
                    # A rescan waits its turn between batches: the batch running now keeps the catalog it started with.
                    self._jobs.put(message)
        except WireError as exc:
            log.error("the bot sent a bad frame; stopping: %s", exc)
        finally:
            self._jobs.put(None)

    def next_batch(self) -> tuple[GenerateRequest, ...] | ReloadModels | None:
        """The next jobs to draw together (or rescan to do), or None once the bot has closed the pipe."""
        return self._jobs.get()

    def is_cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancelled


class Channel:
    """The engine's half of the wire: frames out on a private copy of stdout, whole even from two threads."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        frame = encode(message)
        with self._lock:
            self._out.write(frame)
            self._out.flush()


def claim_stdout() -> BinaryIO:
    """Keep the real stdout for frames and point fd 1 at stderr, so stray prints cannot corrupt the wire."""
    wire = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return wire


def _failure(job_id: str, exc: BaseException) -> JobFailed:
    """The sentence a member gets for an exception while drawing their job."""
    if isinstance(exc, JobCancelled):
        return JobFailed(job_id=job_id, message=CANCELLED)
    if isinstance(exc, InvalidParams):
        return JobFailed(job_id=job_id, message=str(exc))
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return JobFailed(job_id=job_id, message=OUT_OF_MEMORY)
    return JobFailed(
        job_id=job_id,
        message=f"Something went wrong drawing job {job_id}; the owner can find the error in the bot's log.",
    )


def _log_unsent(sending: Future[None]) -> None:
    """The writer thread's errors, which nobody else would see: the bot then hears of the job only at a restart."""
    exc = sending.exception()
    if exc is not None:
        log.error("a result could not be sent", exc_info=exc)


class Previews:
    """Which previewer a batch gets: the owner's tiny autoencoder for the family it was made for, else the
    cheap approximation fitted to the model's family."""

    def __init__(self, tiny_autoencoder: Any, family: Family) -> None:
        self.tiny_autoencoder = tiny_autoencoder
        self.family = family

    def for_model(self, model: LoadedModel) -> Previewer:
        tiny = self.tiny_autoencoder if model.family == self.family else None
        return Previewer(model.pipe.vae.config.scaling_factor, tiny)


class Worker:
    """Draws batches on the model they name; the safety checker, PNG encoding and sending results run on a
    thread beside the next batch, so the GPU does not wait for them."""

    def __init__(
        self,
        shelf: ModelShelf,
        channel: Channel,
        inbox: Inbox,
        previews: Previews | None = None,
        safety: SafetyChecker | None = None,
        *,
        models_dir: Path | None = None,
        upscalers: UpscalerShelf | None = None,
        clock: Callable[[], float] = time.monotonic,
        preview_interval: float = PREVIEW_INTERVAL,
    ) -> None:
        self.upscalers = upscalers
        self.shelf = shelf
        self.channel = channel
        self.inbox = inbox
        self.previews = previews
        self.safety = safety
        self.models_dir = models_dir
        self.clock = clock
        self.preview_interval = preview_interval
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-results")
        self._sending: list[Future[None]] = []

    def serve(self) -> None:
        """Draw what the bot sends until it closes the pipe, then finish sending results."""
        try:
            while (requests := self.inbox.next_batch()) is not None:
                self._sending = [future for future in self._sending if not future.done()]
                if isinstance(requests, ReloadModels):
                    rescan(self.shelf, self.models_dir)
                    if self.upscalers is not None:
                        self.upscalers.release()
                        check_upscalers(self.upscalers)
                    continue
                for group in batch_groups(requests):
                    self.run_batch(group)
        finally:
            self.flush()
            self._writer.shutdown()

    def flush(self) -> None:
        """Wait until every drawn result has been encoded and sent (or its failure logged)."""
        sending, self._sending = self._sending, []
        wait(sending)

    def run_batch(self, requests: Sequence[GenerateRequest]) -> None:
        """Draw compatible jobs in as few loops as their prompts allow and answer each with its result or a
        sentence; never raise."""
        live = []
        for request in requests:
            try:
                if self.inbox.is_cancelled(request.job_id):
                    raise JobCancelled
                request.params.validate()
                live.append(request)
            except (JobCancelled, InvalidParams) as exc:
                self.channel.send(_failure(request.job_id, exc))
        if not live:
            return
        try:
            painter = self.shelf.painter(live[0].params.model)
        except Exception as exc:
            self._fail(live, exc)
            return
        groups: dict[int, list[GenerateRequest]] = {}
        for request in live:
            # One at a time: whatever a job's prompt raises fails that job alone, and its companions are drawn.
            try:
                chunks = painter.prepare(request.params, request.source)
            except Exception as exc:
                self._fail([request], exc)
                continue
            groups.setdefault(chunks, []).append(request)
        for group in groups.values():
            self._draw(painter, group)

    def _draw(self, painter: Painter, jobs: Sequence[GenerateRequest]) -> None:
        """One denoising loop; the results go to the writer thread for the safety checker, PNG encoding and
        sending."""
        started = time.perf_counter()
        try:
            previewer = self.previews.for_model(painter.model) if self.previews is not None else None
            progress = BatchProgress(jobs, self.channel.send, self.inbox, previewer, self.clock, self.preview_interval)
            on_latents = progress.on_latents if previewer is not None else None
            drawn = painter.draw([BatchJob(r.params, r.source) for r in jobs], progress.on_step, on_latents)
        except Exception as exc:
            self._fail(jobs, exc)
            return
        seconds = time.perf_counter() - started
        kept = []
        for request, job in zip(jobs, drawn, strict=True):
            if self.inbox.is_cancelled(request.job_id):
                self.channel.send(_failure(request.job_id, JobCancelled()))
            else:
                kept.append((request, job))
        if kept:
            sending = self._writer.submit(self._send_results, painter, kept, seconds)
            sending.add_done_callback(_log_unsent)
            self._sending.append(sending)

    def _fail(self, jobs: Sequence[GenerateRequest], exc: Exception) -> None:
        self._log_failure(jobs, exc)
        for request in jobs:
            self.channel.send(_failure(request.job_id, exc))

    def _flags(self, live: Sequence[GenerateRequest], drawn: Sequence[Drawn]) -> list[tuple[bool, ...]]:
        """The safety checker's verdicts on the images of the jobs that ask for them, all in one pass."""
        asked = [i for i, request in enumerate(live) if request.check_safety and self.safety is not None]
        flags = [(False,) * len(job.images) for job in drawn]
        if self.safety is None or not asked:
            return flags
        verdicts = iter(self.safety.flags([image for i in asked for _, image in drawn[i].images]))
        for i in asked:
            flags[i] = tuple(next(verdicts) for _ in drawn[i].images)
        return flags

    def _send_results(self, painter: Painter, kept: Sequence[tuple[GenerateRequest, Drawn]], seconds: float) -> None:
        """On the writer thread, beside the next batch: the safety checker's verdicts, then each job's PNGs."""
        try:
            flags = self._flags([request for request, _ in kept], [job for _, job in kept])
        except Exception as exc:
            # Only the jobs that asked to be checked fail: no image goes out unchecked, and none is lost.
            self._fail([request for request, _ in kept if request.check_safety], exc)
            kept = [(request, job) for request, job in kept if not request.check_safety]
            flags = [(False,) * len(job.images) for _, job in kept]
        for (request, job), flagged in zip(kept, flags, strict=True):
            self._send_result(painter, request.job_id, job, seconds, flagged)

    def _send_result(
        self, painter: Painter, job_id: str, drawn: Drawn, seconds: float, flags: tuple[bool, ...]
    ) -> None:
        try:
            images = tuple(replace(image, flagged=f) for image, f in zip(painter.finish(drawn), flags, strict=True))
        except Exception as exc:
            log.exception("job %s: encoding its images failed", job_id)
            self.channel.send(_failure(job_id, exc))
            return
        self.channel.send(JobResult(job_id=job_id, images=images, seconds=seconds, model=painter.model.info))

    @staticmethod
    def _log_failure(live: Sequence[GenerateRequest], exc: Exception) -> None:
        ids = ", ".join(r.job_id for r in live)
        if isinstance(exc, JobCancelled):
            log.info("jobs %s cancelled", ids)
        elif isinstance(exc, torch.cuda.OutOfMemoryError):
            log.warning("jobs %s: out of memory at %s", ids, live[0].params)
            torch.cuda.empty_cache()
        elif not isinstance(exc, InvalidParams):
            log.error("jobs %s failed", ids, exc_info=exc)


def batch_groups(requests: Sequence[GenerateRequest]) -> list[list[GenerateRequest]]:
    """The bot sends compatible jobs together; anything else is drawn in runs of compatible neighbours."""
    groups: list[list[GenerateRequest]] = []
    for request in requests:
        if groups and compatible(groups[-1][0].params, request.params):
            groups[-1].append(request)
        else:
            groups.append([request])
    return groups


def _source(value: str, setting: str, allow_pickle: bool = False) -> ModelSource:
    try:
        return parse_source(value, allow_pickle=allow_pickle)
    except InvalidSource as exc:
        raise ModelLoadError(f"{setting} {exc}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine", description="sdbot's image engine process")
    parser.add_argument("--model", required=True, help="diffusers folder, .safetensors file or hub id")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--max-megapixels", type=float, default=None, help="cap on width × height × count")
    parser.add_argument("--inpaint-model", default=None, help="inpainting checkpoint for outpainting (optional)")
    parser.add_argument("--lora-dir", type=Path, default=None, help="folder of LoRAs for <lora:name:weight>")
    parser.add_argument("--embeddings-dir", type=Path, default=None, help="folder of textual-inversion embeddings")
    parser.add_argument("--upscalers-dir", type=Path, default=None, help="folder of upscaler models (ESRGAN family)")
    parser.add_argument("--vae-dir", type=Path, default=None, help="folder of VAE files (A1111's models/VAE)")
    parser.add_argument(
        "--face-model", type=Path, default=None, help="a YuNet or YOLOv8 face detector (.onnx); else Haar"
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="folder of models jobs may name")
    parser.add_argument("--model-cache", type=int, default=2, help="models kept in CPU RAM besides the active one")
    parser.add_argument("--allow-pickle", action="store_true", help="load .ckpt/.pt checkpoints (they can run code)")
    parser.add_argument("--max-batch", type=int, default=0, help="images per denoising loop (0: from memory)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE at start")
    parser.add_argument("--preview-model", default=None, help="tiny autoencoder folder for previews (optional)")
    parser.add_argument("--safety-model", default=None, help="local safety checker folder (optional)")
    parser.add_argument("--niceness", type=int, default=NICENESS, help="nice levels below the bot's CPU priority")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: every core)")
    return parser.parse_args(argv)


def check_upscalers(upscalers: UpscalerShelf) -> None:
    """Log one line for each upscaler file that cannot be used; the others keep working."""
    for problem in upscalers.check():
        log.warning("SDBOT_UPSCALERS_DIR: %s", problem)


def rescan(shelf: ModelShelf, folder: Path | None) -> None:
    """Take a fresh look at the models folder; a folder that became unusable keeps the catalog there was."""
    if folder is None:
        return
    try:
        shelf.reload(scan(folder))
    except CatalogError as exc:
        log.error("SDBOT_MODELS_DIR: %s; keeping the models found before", exc)
        return
    log.info("models folder rescanned: %d models", len(shelf.catalog.entries))


def main(argv: list[str] | None = None) -> int:
    """Serve jobs until the bot closes stdin; exit 2 with a fatal message when the model cannot load."""
    ignore_stop_signals()
    args = parse_args(argv)
    channel = Channel(claim_stdout())
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("SDBOT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s engine: %(message)s",
    )
    try:
        lower_priority(args.niceness)
    except OSError as exc:
        log.warning("could not lower the engine's CPU priority (%s): the bot may answer late while it draws", exc)
    if args.threads > 0:
        # Several engines on the CPU share its cores rather than each taking all of them.
        torch.set_num_threads(args.threads)
        log.info("using %d CPU threads", torch.get_num_threads())
    diffusers_logging.disable_progress_bar()
    channel.send(EngineStarting("loading the model"))
    try:
        device = resolve_device(args.device)
        catalog = scan(args.models_dir) if args.models_dir is not None else Catalog()
        source = _source(args.model, "SDBOT_MODEL", args.allow_pickle)
        default = catalog.by_path(source.location)
        model = load_model(
            source,
            device,
            allow_pickle=args.allow_pickle,
            name=default.name if default else None,
            setting="SDBOT_MODEL",
        )
        inpaint_model = None
        if args.inpaint_model:
            inpaint_source = _source(args.inpaint_model, "SDBOT_INPAINT_MODEL")
            inpaint_model = load_model(inpaint_source, device, inpainting=True, setting="SDBOT_INPAINT_MODEL")
            use_fast_paths(inpaint_model)
        tiny_autoencoder = None
        if args.preview_model:
            tiny_autoencoder = load_tiny_autoencoder(Path(args.preview_model), device, model.dtype)
        safety = load_safety_checker(Path(args.safety_model), device) if args.safety_model else None
        if args.face_model is not None:
            # Checked at start: a file it cannot run is one line now rather than a failed job later.
            FaceDetector(args.face_model)
    except CatalogError as exc:
        channel.send(EngineFatal(message=f"SDBOT_MODELS_DIR: {exc}"))
        return 2
    except (ModelLoadError, PreviewError) as exc:
        channel.send(EngineFatal(message=str(exc)))
        return 2
    except FaceDetectorError as exc:
        channel.send(EngineFatal(message=f"SDBOT_FACE_MODEL: {exc}"))
        return 2
    loras = LoraLoader(NetworkFolder(args.lora_dir))
    embeddings_folder = NetworkFolder(args.embeddings_dir)
    upscalers = UpscalerShelf(
        UpscalerFolder(args.upscalers_dir), allow_pickle=args.allow_pickle, device=device, dtype=model.dtype
    )
    check_upscalers(upscalers)
    vaes = VaeFiles(VaeFolder(args.vae_dir) if args.vae_dir is not None else None, args.models_dir, args.allow_pickle)
    if inpaint_model is not None:
        load_embeddings(inpaint_model.pipe, embeddings_folder)

    # One switch for the inpainting checkpoint's VAE, whichever painter of the default model uses it.
    inpaint_vae = VaeSwitch(inpaint_model, vaes) if inpaint_model is not None else None

    def make_painter(loaded: LoadedModel, inpaint: LoadedModel | None) -> Painter:
        # Every model a job switches to gets the fast paths and the embeddings in its own text encoder.
        use_fast_paths(loaded)
        embeddings = load_embeddings(loaded.pipe, embeddings_folder)
        return Painter(
            loaded,
            inpaint,
            loras=loras,
            embeddings=embeddings,
            upscalers=upscalers,
            vaes=vaes,
            face_model=args.face_model,
            inpaint_vae=inpaint_vae if inpaint is not None else None,
        )

    shelf = ModelShelf(
        model,
        source,
        catalog,
        loader=catalog_loader(device, args.allow_pickle),
        cache_size=args.model_cache,
        allow_pickle=args.allow_pickle,
        inpaint_model=inpaint_model,
        make_painter=make_painter,
    )
    budgets = pixel_budgets(model, args.max_megapixels, reserved=upscalers.reserve)
    pixels = budgets[model.family]
    max_batch = args.max_batch or default_max_batch(model, pixels)
    if args.compile:
        # Only the default model is compiled: one switched to later runs uncompiled rather than stall the queue.
        compile_model(model)
        try:
            warm_up(
                shelf.painter(""),
                lambda number, of: channel.send(EngineStarting(f"compiling the model: warm-up batch {number} of {of}")),
                max_images=max_batch,
                max_pixels=pixels,
            )
        except Exception as exc:
            log.debug("compiling the model failed", exc_info=exc)
            line = first_line(exc)
            channel.send(
                EngineFatal(message=f"SDBOT_COMPILE: compiling the model failed ({line}); set SDBOT_COMPILE=0")
            )
            return 2
    channel.send(
        EngineReady(
            model=model.info,
            device=str(model.device),
            native_width=model.native_size,
            native_height=model.native_size,
            max_pixels=pixels,
            max_batch=max_batch,
            safety_checker=safety is not None,
            family_pixels={family.value: budget for family, budget in budgets.items()},
        )
    )
    previews = Previews(tiny_autoencoder, model.family)
    # The shelf alone holds the models from here, so switching away can free the default one.
    del model, inpaint_model
    Worker(
        shelf, channel, Inbox(sys.stdin.buffer), previews, safety, models_dir=args.models_dir, upscalers=upscalers
    ).serve()
    return 0
