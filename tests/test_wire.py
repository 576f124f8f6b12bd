from __future__ import annotations

import asyncio
import io
import struct

import pytest

from core.infotext import ModelInfo
from core.params import GenerationParams, JobMode
from core.wire import (
    EngineReady,
    EngineStarting,
    GenerateBatch,
    GeneratedImage,
    GenerateRequest,
    JobResult,
    Progress,
    ReloadModels,
    WireError,
    encode,
    read_message,
    read_message_async,
)

MODEL = ModelInfo(name="tiny", hash="0123456789")
MESSAGES = [
    GenerateRequest(job_id="j1", params=GenerationParams(prompt="fox", seed=3, count=2)),
    GenerateRequest(job_id="j2", params=GenerationParams(prompt="fox", model="deliberate_v2")),
    ReloadModels(),
    EngineStarting(stage="compiling the model: warm-up batch 2 of 8"),
    EngineReady(model=MODEL, device="cuda:0", native_width=512, native_height=768, max_pixels=4_000_000),
    Progress(job_id="j1", step=3, total=30),
    Progress(job_id="j1", step=4, total=30, preview=b"RIFF preview"),
    EngineReady(
        model=MODEL,
        device="cpu",
        native_width=64,
        native_height=64,
        max_pixels=9,
        max_batch=4,
        family_pixels={"sd1": 9, "sdxl": 0},
    ),
    GenerateBatch(
        requests=(
            GenerateRequest(job_id="a", params=GenerationParams(prompt="a")),
            GenerateRequest(
                job_id="b", params=GenerationParams(prompt="b", mode=JobMode.VARY, strength=0.35), source=b"B"
            ),
            GenerateRequest(job_id="c", params=GenerationParams(prompt="c")),
            GenerateRequest(
                job_id="d", params=GenerationParams(prompt="d", mode=JobMode.VARY, strength=0.7), source=b"DD"
            ),
        )
    ),
    JobResult(
        job_id="j1",
        images=(GeneratedImage(3, "fox\nSteps: 1", b"\x89PNG one"), GeneratedImage(4, "x", b"\x00\xff" * 1000)),
        seconds=1.5,
        model=MODEL,
    ),
]


def test_messages_round_trip_through_a_blocking_stream() -> None:
    stream = io.BytesIO(b"".join(encode(m) for m in MESSAGES))
    assert [read_message(stream) for _ in MESSAGES] == MESSAGES
    assert read_message(stream) is None


async def test_messages_round_trip_through_an_asyncio_stream() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"".join(encode(m) for m in MESSAGES))
    reader.feed_eof()
    assert [await read_message_async(reader) for _ in MESSAGES] == MESSAGES
    assert await read_message_async(reader) is None


def test_truncated_frame_and_garbage_are_wire_errors() -> None:
    frame = encode(MESSAGES[-1])
    with pytest.raises(WireError, match="ended inside a frame"):
        read_message(io.BytesIO(frame[:-3]))
    garbage = b"not json"
    with pytest.raises(WireError, match="not JSON"):
        read_message(io.BytesIO(struct.pack(">I", len(garbage)) + garbage))
    unknown = b'{"type": "launch_missiles", "blobs": []}'
    with pytest.raises(WireError, match="unknown message"):
        read_message(io.BytesIO(struct.pack(">I", len(unknown)) + unknown))


def test_the_pixels_a_model_may_draw_follow_its_family() -> None:
    ready = EngineReady(MODEL, "cuda:0", 512, 512, max_pixels=4_000_000, family_pixels={"sd1": 4_000_000, "sdxl": 0})
    assert ready.pixels_for(None) == 4_000_000, "the default model"
    assert ready.pixels_for("sdxl") == 0
    assert ready.pixels_for("sd2") == 4_000_000, "an engine that did not say: the default model's budget"
