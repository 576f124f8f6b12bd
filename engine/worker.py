"""The engine process: load the model once, then draw the jobs the bot sends over stdin/stdout frames."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

import torch
from diffusers.utils import logging as diffusers_logging

from engine.catalog import Catalog, CatalogError, scan
from engine.embeddings import load_embeddings
from engine.generate import Painter
from engine.loading import LoadedModel, ModelLoadError, load_model, max_pixels, resolve_device
from engine.loras import LoraLoader
from engine.model_shelf import ModelShelf, catalog_loader
from engine.network_files import NetworkFolder
from engine.params import InvalidParams
from engine.source import DEVICE_CHOICES, InvalidSource, ModelSource, parse_source
from engine.wire import (
    CancelRequest,
    EngineFatal,
    EngineReady,
    GenerateRequest,
    JobFailed,
    JobResult,
    Message,
    Progress,
    ReloadModels,
    WireError,
    encode,
    read_message,
)

log = logging.getLogger("engine")

OUT_OF_MEMORY = "The GPU ran out of memory drawing this: try a smaller size or fewer images."
CANCELLED = "Cancelled."


class JobCancelled(Exception):
    """The bot asked to stop the running job."""


class Inbox:
    """Requests from the bot, read on a thread so that a cancel arrives while a job is running."""

    def __init__(self, stream: BinaryIO) -> None:
        self._jobs: queue.Queue[GenerateRequest | ReloadModels | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(stream,), name="engine-inbox", daemon=True).start()

    def _read(self, stream: BinaryIO) -> None:
        try:
            while (message := read_message(stream)) is not None:
                if isinstance(message, CancelRequest):
                    with self._lock:
                        self._cancelled.add(message.job_id)
                elif isinstance(message, GenerateRequest | ReloadModels):
                    # A rescan waits its turn between jobs: the job running now keeps the catalog it started with.
                    self._jobs.put(message)
        except WireError as exc:
            log.error("the bot sent a bad frame; stopping: %s", exc)
        finally:
            self._jobs.put(None)

    def next_job(self) -> GenerateRequest | ReloadModels | None:
        """The next job to draw (or rescan to do), or None once the bot has closed the pipe."""
        return self._jobs.get()

    def is_cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancelled


class Channel:
    """The engine's half of the wire: frames out on a private copy of stdout."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def send(self, message: Message) -> None:
        self._out.write(encode(message))
        self._out.flush()


def claim_stdout() -> BinaryIO:
    """Keep the real stdout for frames and point fd 1 at stderr, so stray prints cannot corrupt the wire."""
    wire = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return wire


def run_job(shelf: ModelShelf, request: GenerateRequest, channel: Channel, inbox: Inbox) -> None:
    """Switch to the job's model, draw the job and answer with its result or a sentence for the member; never raise."""
    job_id = request.job_id

    def on_step(step: int, total: int) -> None:
        if inbox.is_cancelled(job_id):
            raise JobCancelled
        channel.send(Progress(job_id=job_id, step=step, total=total))

    started = time.perf_counter()
    try:
        if inbox.is_cancelled(job_id):
            raise JobCancelled
        painter = shelf.painter(request.params.model)
        images = painter.paint(request.params, on_step, source=request.source)
    except JobCancelled:
        log.info("job %s cancelled", job_id)
        channel.send(JobFailed(job_id=job_id, message=CANCELLED))
        return
    except InvalidParams as exc:
        channel.send(JobFailed(job_id=job_id, message=str(exc)))
        return
    except torch.cuda.OutOfMemoryError:
        log.warning("job %s: out of memory at %s", job_id, request.params)
        torch.cuda.empty_cache()
        channel.send(JobFailed(job_id=job_id, message=OUT_OF_MEMORY))
        return
    except Exception:
        log.exception("job %s failed", job_id)
        channel.send(
            JobFailed(
                job_id=job_id,
                message=f"Something went wrong drawing job {job_id}; the owner can find the error in the bot's log.",
            )
        )
        return
    seconds = time.perf_counter() - started
    channel.send(JobResult(job_id=job_id, images=images, seconds=seconds, model=painter.model.info))


def _source(value: str, setting: str, allow_pickle: bool = False) -> ModelSource:
    try:
        return parse_source(value, allow_pickle=allow_pickle)
    except InvalidSource as exc:
        raise ModelLoadError(f"{setting} {exc}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine", description="sdbot's image engine process")
    parser.add_argument("--model", required=True, help="diffusers folder, .safetensors file or hub id")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--max-megapixels", type=float, default=None, help="cap on width × height × count")
    parser.add_argument("--inpaint-model", default=None, help="inpainting checkpoint for outpainting (optional)")
    parser.add_argument("--lora-dir", type=Path, default=None, help="folder of LoRAs for <lora:name:weight>")
    parser.add_argument("--embeddings-dir", type=Path, default=None, help="folder of textual-inversion embeddings")
    parser.add_argument("--models-dir", type=Path, default=None, help="folder of models jobs may name")
    parser.add_argument("--model-cache", type=int, default=2, help="models kept in CPU RAM besides the active one")
    parser.add_argument("--allow-pickle", action="store_true", help="load .ckpt/.pt checkpoints (they can run code)")
    return parser.parse_args(argv)


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
    args = parse_args(argv)
    channel = Channel(claim_stdout())
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("SDBOT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s engine: %(message)s",
    )
    diffusers_logging.disable_progress_bar()
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
    except CatalogError as exc:
        channel.send(EngineFatal(message=f"SDBOT_MODELS_DIR: {exc}"))
        return 2
    except ModelLoadError as exc:
        channel.send(EngineFatal(message=str(exc)))
        return 2
    loras = LoraLoader(NetworkFolder(args.lora_dir))
    embeddings_folder = NetworkFolder(args.embeddings_dir)
    if inpaint_model is not None:
        load_embeddings(inpaint_model.pipe, embeddings_folder)

    def make_painter(loaded: LoadedModel, inpaint: LoadedModel | None) -> Painter:
        # Every model a job switches to gets the embeddings loaded into its own text encoder.
        return Painter(loaded, inpaint, loras=loras, embeddings=load_embeddings(loaded.pipe, embeddings_folder))

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
    channel.send(
        EngineReady(
            model=model.info,
            device=str(model.device),
            native_width=model.native_size,
            native_height=model.native_size,
            max_pixels=max_pixels(model, args.max_megapixels),
        )
    )
    inbox = Inbox(sys.stdin.buffer)
    while (request := inbox.next_job()) is not None:
        if isinstance(request, ReloadModels):
            rescan(shelf, args.models_dir)
        else:
            run_job(shelf, request, channel, inbox)
    return 0
