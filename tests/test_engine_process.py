"""The engine as the bot runs it: a child process speaking frames, supervised and restarted."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from bot.engine_client import EngineCommand, EngineCrashed, EngineStartError, JobFailedError, ProcessEngine
from engine.params import GenerationParams
from engine.wire import Progress

FOX = GenerationParams(prompt="a red fox", width=64, height=64, steps=2, seed=99, count=2)


async def test_generates_with_progress_and_restarts_after_being_killed(tiny_model_dir: Path) -> None:
    engine = ProcessEngine(EngineCommand(model=str(tiny_model_dir), device="cpu"))
    ready = await engine.start()
    try:
        assert (ready.model.name, ready.device, ready.native_width) == ("tiny-sd", "cpu", 64)
        progress: list[Progress] = []
        result = await engine.generate("job-1", FOX, progress.append)
        assert [(p.step, p.total) for p in progress] == [(1, 2), (2, 2)]
        assert [i.seed for i in result.images] == [99, 100]
        assert Image.open(io.BytesIO(result.images[0].png)).text["parameters"] == result.images[0].infotext
        assert result.model == ready.model and result.seconds > 0

        with pytest.raises(JobFailedError, match="multiple of 8"):
            await engine.generate("job-2", GenerationParams(prompt="x", width=65, height=64, steps=1), print)

        first_pid = engine.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(EngineCrashed):
            await engine.generate("job-3", FOX, progress.append)
        again = await engine.generate("job-4", FOX, progress.append)
        assert engine.pid != first_pid
        assert [i.png for i in again.images] == [i.png for i in result.images]
    finally:
        await engine.close()
    assert engine.pid is None


async def test_a_model_that_cannot_load_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    engine = ProcessEngine(EngineCommand(model=str(broken), device="cpu"))
    with pytest.raises(EngineStartError) as caught:
        await engine.start()
    await engine.close()
    assert str(caught.value).startswith("SDBOT_MODEL: could not load")
    assert "\n" not in str(caught.value)
