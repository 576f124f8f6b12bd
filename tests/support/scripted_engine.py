"""An engine process that speaks the real frames but draws flat colours, and once answers with garbage.

Usage: python -m tests.support.scripted_engine MARKER KIND [BATCHES]. The first job it is sent while the file MARKER
does not exist is answered with the bad frame KIND (see GARBAGE), once BATCHES batches (default 1) have arrived, and
MARKER is created; every other job is drawn properly, so a restarted engine behaves.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from core.infotext import ModelInfo, format_infotext
from core.pngmeta import encode_png
from core.wire import (
    EngineReady,
    GenerateBatch,
    GeneratedImage,
    GenerateRequest,
    JobResult,
    Progress,
    encode,
    read_message,
)

MODEL = ModelInfo(name="scripted", hash="0123456789")
READY = EngineReady(model=MODEL, device="cpu", native_width=64, native_height=64, max_pixels=4 * 512 * 512, max_batch=4)


def frame(header: dict[str, object], *blobs: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw + b"".join(blobs)


def images(request: GenerateRequest, seeds: tuple[int, ...] | None = None) -> tuple[GeneratedImage, ...]:
    params = request.params
    drawn = []
    for seed in seeds if seeds is not None else params.seeds():
        infotext = format_infotext(params, seed, MODEL)
        image = Image.new("RGB", (params.width, params.height), (seed % 256, 90, 160))
        drawn.append(GeneratedImage(seed=seed, infotext=infotext, png=encode_png(image, infotext)))
    return tuple(drawn)


def result(request: GenerateRequest, seeds: tuple[int, ...] | None = None) -> JobResult:
    return JobResult(job_id=request.job_id, images=images(request, seeds), seconds=0.1, model=MODEL)


def _progress(job_id: str, **fields: object) -> bytes:
    return frame({"type": "progress", "blobs": [], "job_id": job_id, "step": 1, "total": 2, **fields})


def _retyped_result(request: GenerateRequest) -> bytes:
    first = result(request).images[0]
    header = {"type": "result", "blobs": [len(first.png)], "job_id": request.job_id, "seconds": "fast"}
    header |= {"model": {"name": "x", "hash": "y"}, "images": [{"seed": first.seed, "infotext": first.infotext}]}
    return frame(header, first.png)


def _blobless_result(request: GenerateRequest) -> bytes:
    header = {"type": "result", "blobs": [], "job_id": request.job_id, "seconds": 0.1}
    header |= {"model": {"name": "x", "hash": "y"}, "images": [{"seed": request.params.seed, "infotext": "x"}]}
    return frame(header)


def _not_png(request: GenerateRequest) -> bytes:
    good = result(request)
    bad = tuple(GeneratedImage(i.seed, i.infotext, b"GIF89a" + i.png[6:]) for i in good.images)
    return encode(JobResult(job_id=request.job_id, images=bad, seconds=0.1, model=MODEL))


# Each answers a job with something the bot cannot use.
GARBAGE: dict[str, Callable[[GenerateRequest], bytes]] = {
    "not-json": lambda request: struct.pack(">I", 5) + b"{nope",
    "unknown-type": lambda request: frame({"type": "launch_missiles", "blobs": []}),
    "no-blob-lengths": lambda request: frame({"type": "progress", "job_id": request.job_id, "step": 1, "total": 2}),
    "blob-lengths-not-a-list": lambda request: _progress(request.job_id, blobs="abc"),
    "negative-blob-length": lambda request: _progress(request.job_id, blobs=[-1]),
    "huge-blob-length": lambda request: _progress(request.job_id, blobs=[2**40]),
    "huge-header": lambda request: struct.pack(">I", 2**31),
    "missing-field": lambda request: frame({"type": "progress", "blobs": [], "job_id": request.job_id, "step": 1}),
    "step-as-text": lambda request: _progress(request.job_id, step="1"),
    "step-past-the-end": lambda request: _progress(request.job_id, step=7),
    "result-field-of-wrong-type": _retyped_result,
    "result-without-its-image": _blobless_result,
    "result-of-other-seeds": lambda request: encode(result(request, tuple(s + 1 for s in request.params.seeds()))),
    "result-that-is-not-png": _not_png,
    "ready-again": lambda request: encode(READY),
}


def answer(request: GenerateRequest, send: Callable[[bytes], None]) -> None:
    for step in range(1, request.params.steps + 1):
        send(encode(Progress(job_id=request.job_id, step=step, total=request.params.steps)))
    send(encode(result(request)))


def main(marker: Path, kind: str, batches: int) -> None:
    out = sys.stdout.buffer

    def send(data: bytes) -> None:
        out.write(data)
        out.flush()

    send(encode(READY))
    held: list[tuple[GenerateRequest, ...]] = []
    while (message := read_message(sys.stdin.buffer)) is not None:
        if isinstance(message, GenerateBatch):
            held.append(message.requests)
        elif isinstance(message, GenerateRequest):
            held.append((message,))
        if not marker.exists() and len(held) < batches:
            continue
        for requests in held:
            for request in requests:
                if marker.exists():
                    answer(request, send)
                else:
                    marker.touch()
                    send(GARBAGE[kind](request))
        held = []


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
