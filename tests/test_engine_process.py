"""The engine as the bot runs it: a child process speaking frames, supervised and restarted."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import signal
from pathlib import Path

import pytest
from PIL import Image

from bot.pipeline.engine_client import EngineCommand, EngineCrashed, EngineStartError, JobFailedError, ProcessEngine
from core.params import GenerationParams
from core.wire import Progress

FOX = GenerationParams(prompt="a red fox", width=64, height=64, steps=2, seed=99, count=2)


async def test_generates_with_progress_and_restarts_after_being_killed(tiny_model_dir: Path) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    engine = ProcessEngine(EngineCommand(model=str(tiny_model_dir), device="cpu"), sleep=sleep)
    stages: list[str] = []
    ready = await engine.start(on_starting=stages.append)
    try:
        assert stages == ["loading the model"]
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
        assert engine.pid != first_pid and waits == [1.0], "restarted after the first crash's backoff"
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


async def test_jobs_name_models_of_the_folder_and_a_reload_finds_new_ones(tiny_model_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(tiny_model_dir, models / "tiny-copy")
    command = EngineCommand(model=str(tiny_model_dir), device="cpu", models_dir=str(models), model_cache=1)
    engine = ProcessEngine(command)
    await engine.start()
    try:
        one = GenerationParams(prompt="a red fox", width=64, height=64, steps=1, seed=5, model="tiny-copy")
        result = await engine.generate("job-1", one, print)
        assert result.model.name == "tiny-copy" and result.images[0].infotext.endswith("Model: tiny-copy")
        later = dataclasses.replace(one, model="tiny-later")
        with pytest.raises(JobFailedError, match="no model called `tiny-later`"):
            await engine.generate("job-2", later, print)
        shutil.copytree(tiny_model_dir, models / "tiny-later")
        await engine.reload_models()
        assert (await engine.generate("job-3", later, print)).model.name == "tiny-later"
        assert (await engine.generate("job-4", dataclasses.replace(one, model=""), print)).model.name == "tiny-sd"
    finally:
        await engine.close()
