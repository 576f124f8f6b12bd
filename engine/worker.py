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

from engine.generate import Painter
from engine.loading import ModelLoadError, load_model, max_pixels, resolve_device
from engine.params import InvalidParams
from engine.safety import SafetyChecker, load_safety_checker
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
        self._jobs: queue.Queue[GenerateRequest | None] = queue.Queue()
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
                    self._jobs.put(message)
        except WireError as exc:
            log.error("the bot sent a bad frame; stopping: %s", exc)
        finally:
            self._jobs.put(None)

    def next_job(self) -> GenerateRequest | None:
        """The next job to draw, or None once the bot has closed the pipe."""
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


def run_job(
    painter: Painter, request: GenerateRequest, channel: Channel, inbox: Inbox, safety: SafetyChecker | None = None
) -> None:
    """Draw one job (checking its images when asked and a checker is loaded) and answer with its result or a
    sentence for the member; never raise."""
    job_id = request.job_id

    def on_step(step: int, total: int) -> None:
        if inbox.is_cancelled(job_id):
            raise JobCancelled
        channel.send(Progress(job_id=job_id, step=step, total=total))

    started = time.perf_counter()
    try:
        if inbox.is_cancelled(job_id):
            raise JobCancelled
        images = painter.paint(request.params, on_step, source=request.source)
        if request.check_safety and safety is not None:
            images = safety.check(images)
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


def _source(value: str, setting: str) -> ModelSource:
    try:
        return parse_source(value)
    except InvalidSource as exc:
        raise ModelLoadError(f"{setting} {exc}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine", description="sdbot's image engine process")
    parser.add_argument("--model", required=True, help="diffusers folder, .safetensors file or hub id")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--max-megapixels", type=float, default=None, help="cap on width × height × count")
    parser.add_argument("--inpaint-model", default=None, help="inpainting checkpoint for outpainting (optional)")
    parser.add_argument("--safety-model", default=None, help="local safety checker folder (optional)")
    return parser.parse_args(argv)


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
        model = load_model(_source(args.model, "SDBOT_MODEL"), device)
        inpaint_model = None
        if args.inpaint_model:
            inpaint_source = _source(args.inpaint_model, "SDBOT_INPAINT_MODEL")
            inpaint_model = load_model(inpaint_source, device, inpainting=True, setting="SDBOT_INPAINT_MODEL")
        safety = load_safety_checker(Path(args.safety_model), device) if args.safety_model else None
    except ModelLoadError as exc:
        channel.send(EngineFatal(message=str(exc)))
        return 2
    painter = Painter(model, inpaint_model)
    channel.send(
        EngineReady(
            model=model.info,
            device=str(model.device),
            native_width=model.native_size,
            native_height=model.native_size,
            max_pixels=max_pixels(model, args.max_megapixels),
            safety_checker=safety is not None,
        )
    )
    inbox = Inbox(sys.stdin.buffer)
    while (request := inbox.next_job()) is not None:
        run_job(painter, request, channel, inbox, safety)
    return 0
