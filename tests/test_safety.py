"""The safety checker: a tiny StableDiffusionSafetyChecker saved in the test and loaded through the real code."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bot.pipeline.engine_client import EngineCommand, EngineStartError, ProcessEngine
from core.catalog import Catalog
from core.params import GenerationParams
from core.source import parse_source
from core.wire import GenerateRequest, JobResult, read_message
from engine.loading import LoadedModel, ModelLoadError, load_model
from engine.model_shelf import ModelShelf, catalog_loader
from engine.safety import SafetyChecker, load_safety_checker
from engine.worker import Channel, Inbox, Worker
from tests.support.bots import make_bot, results
from tests.support.fake_discord import FakeDiscord
from tests.support.tiny_safety import FLAG_ALL, FLAG_NONE, save_tiny_safety_checker, tiny_safety_checker

CPU = torch.device("cpu")
FOX = GenerationParams(prompt="a red fox", width=64, height=64, steps=2, seed=5, count=2)


def flat(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (64, 64), colour)


def noise(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), np.uint8))


@pytest.mark.parametrize(("threshold", "verdict"), [(FLAG_ALL, True), (FLAG_NONE, False)])
def test_the_checker_loads_offline_and_its_thresholds_decide(tmp_path: Path, threshold: float, verdict: bool) -> None:
    checker = load_safety_checker(save_tiny_safety_checker(tmp_path / "checker", threshold), CPU)
    assert checker.flags([flat((255, 0, 0)), noise(1)]) == [verdict, verdict]


def test_the_checker_looks_at_the_pixels(tmp_path: Path) -> None:
    """One concept set between two images' embeddings flags the one and not the other, whichever comes first."""
    model, processor = tiny_safety_checker(FLAG_NONE)
    red, static = flat((220, 30, 30)), noise(2)
    with torch.no_grad():
        pixels = processor([red, static], return_tensors="pt").pixel_values
        embeds = torch.nn.functional.normalize(model.visual_projection(model.vision_model(pixels)[1]))
        model.concept_embeds[0] = embeds[0] - embeds[1]
        model.concept_embeds_weights[0] = 0.0
    checker = load_safety_checker(save_tiny_safety_checker(tmp_path / "checker", checker=model), CPU)
    assert checker.flags([red, static]) == [True, False]
    assert checker.flags([static, red, red]) == [False, True, True]


def test_a_diffusers_pipeline_folder_with_its_safety_checker_loads(tmp_path: Path) -> None:
    folder = tmp_path / "stable-diffusion-v1-5"
    save_tiny_safety_checker(folder / "safety_checker", FLAG_ALL)
    (folder / "feature_extractor").mkdir()
    (folder / "safety_checker" / "preprocessor_config.json").rename(
        folder / "feature_extractor" / "preprocessor_config.json"
    )
    assert load_safety_checker(folder, CPU).flags([noise(3)]) == [True]


def test_unusable_folders_are_one_line_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"^SDBOT_SAFETY_MODEL: .*missing is not a folder$"):
        load_safety_checker(tmp_path / "missing", CPU)
    no_extractor = save_tiny_safety_checker(tmp_path / "no-extractor")
    (no_extractor / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match="^SDBOT_SAFETY_MODEL: .* has no preprocessor_config.json"):
        load_safety_checker(no_extractor, CPU)
    pickled = save_tiny_safety_checker(tmp_path / "pickled")
    model, _ = tiny_safety_checker()
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"^SDBOT_SAFETY_MODEL: .* has no \.safetensors weights"):
        load_safety_checker(pickled, CPU)
    broken = save_tiny_safety_checker(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError) as caught:
        load_safety_checker(broken, CPU)
    assert str(caught.value).startswith(f"SDBOT_SAFETY_MODEL: could not load {broken}:")
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def shelf(tiny_model_dir: Path) -> ModelShelf:
    source = parse_source(str(tiny_model_dir))
    model: LoadedModel = load_model(source, CPU)
    return ModelShelf(model, source, Catalog(), loader=catalog_loader(CPU, False))


def run(shelf: ModelShelf, request: GenerateRequest, safety: SafetyChecker | None) -> JobResult:
    """One job through the engine's own worker, its answer read back from the wire."""
    out = io.BytesIO()
    worker = Worker(shelf, Channel(out), Inbox(io.BytesIO()), None, safety)
    worker.run_batch([request])
    worker.flush()
    out.seek(0)
    answers = []
    while (message := read_message(out)) is not None:
        answers.append(message)
    assert isinstance(answers[-1], JobResult), answers[-1]
    return answers[-1]


def test_the_engine_marks_flagged_images_of_jobs_that_ask_and_leaves_the_pixels_alone(
    shelf: ModelShelf, tmp_path: Path
) -> None:
    flag_all = load_safety_checker(save_tiny_safety_checker(tmp_path / "all", FLAG_ALL), CPU)
    checked = run(shelf, GenerateRequest("j1", FOX, check_safety=True), flag_all)
    assert [image.flagged for image in checked.images] == [True, True]
    unchecked = run(shelf, GenerateRequest("j2", FOX), flag_all)
    assert [image.flagged for image in unchecked.images] == [False, False]
    assert [image.png for image in checked.images] == [image.png for image in unchecked.images]
    assert np.asarray(Image.open(io.BytesIO(checked.images[0].png))).any(), "not blacked out"

    one = dataclasses.replace(FOX, count=1)
    flag_none = load_safety_checker(save_tiny_safety_checker(tmp_path / "none", FLAG_NONE), CPU)
    assert not run(shelf, GenerateRequest("j3", one, check_safety=True), flag_none).images[0].flagged
    assert not run(shelf, GenerateRequest("j4", one, check_safety=True), None).images[0].flagged


async def test_the_engine_process_loads_the_checker_and_the_bot_posts_spoilers(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = save_tiny_safety_checker(tmp_path / "checker", FLAG_ALL)
    engine = ProcessEngine(EngineCommand(model=str(tiny_model_dir), device="cpu", safety_model=str(folder)))
    async with fake.connected(make_bot(tmp_path, engine), timeout=120):
        assert engine.ready is not None and engine.ready.safety_checker
        await (await fake.slash("imagine", {"prompt": "a red fox", "seed": 7, "steps": 2})).wait_response()
        # The result, not a status message showing a progress preview (slow machines get one).
        (result,) = await fake.wait_for(lambda: results(fake) or None, timeout=60)
    (attachment,) = result.attachments
    assert attachment.filename.startswith("SPOILER_sdbot-") and attachment.filename.endswith("-7.png")


async def test_an_unusable_checker_stops_the_engine_with_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = ProcessEngine(EngineCommand(model=str(tiny_model_dir), device="cpu", safety_model=str(tmp_path)))
    with pytest.raises(EngineStartError) as caught:
        await asyncio.wait_for(engine.start(), 120)
    await engine.close()
    assert str(caught.value) == f"SDBOT_SAFETY_MODEL: {tmp_path} has no preprocessor_config.json" + (
        " (the checker's feature extractor config)"
    )
