"""SDBOT_SAFETY_MODEL from the settings to the engine's command line, and the wire fields the checker adds."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bot.pipeline.engine_client import EngineCommand
from bot.settings import SettingError, load_settings
from core.infotext import ModelInfo
from core.params import GenerationParams
from core.wire import EngineReady, GeneratedImage, GenerateRequest, JobResult, encode, read_message
from tests.test_settings import TOKEN


def test_the_safety_model_is_an_existing_local_folder(tmp_path: Path) -> None:
    assert load_settings({"DISCORD_TOKEN": TOKEN}, cwd=tmp_path).safety_model is None
    (tmp_path / "checker").mkdir()
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_SAFETY_MODEL": "checker"}, cwd=tmp_path)
    assert settings.safety_model == tmp_path / "checker"
    with pytest.raises(SettingError, match="^SDBOT_SAFETY_MODEL must be a local folder") as caught:
        load_settings(
            {"DISCORD_TOKEN": TOKEN, "SDBOT_SAFETY_MODEL": "CompVis/stable-diffusion-safety-checker"}, cwd=tmp_path
        )
    assert "\n" not in str(caught.value)


def test_the_engine_is_started_with_the_safety_model() -> None:
    argv = EngineCommand(model="m", device="cpu", safety_model="/srv/checker", python="py").argv()
    assert argv == ["py", "-m", "engine", "--model", "m", "--device", "cpu", "--safety-model", "/srv/checker"]
    assert "--safety-model" not in EngineCommand(model="m", device="cpu").argv()


@pytest.mark.parametrize(
    "message",
    [
        GenerateRequest(job_id="j", params=GenerationParams(prompt="fox"), check_safety=True),
        EngineReady(ModelInfo("m", ""), "cpu", 512, 512, 1, safety_checker=True),
        JobResult(
            "j",
            (GeneratedImage(1, "x", b"png", flagged=True), GeneratedImage(2, "y", b"png2")),
            1.0,
            ModelInfo("m", ""),
        ),
    ],
)
def test_the_new_fields_cross_the_wire(message: object) -> None:
    assert read_message(io.BytesIO(encode(message))) == message  # type: ignore[arg-type]


def test_messages_without_the_new_fields_still_read() -> None:
    old = GenerateRequest.from_header({"job_id": "j", "params": GenerationParams(prompt="fox").to_dict()}, [])
    assert not old.check_safety
    result = JobResult.from_header(
        {"job_id": "j", "seconds": 1.0, "model": {"name": "m", "hash": ""}, "images": [{"seed": 1, "infotext": ""}]},
        [b"png"],
    )
    assert not result.images[0].flagged
