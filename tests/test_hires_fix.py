"""A1111's hires fix: the parameters, their infotext read back, and the two passes on the tiny model."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.batching import compatible
from core.infotext import parse_infotext
from core.params import GenerationParams, InvalidParams, JobMode
from core.source import parse_source
from engine.generate import BatchJob, Painter, img2img_steps
from engine.loading import LoadedModel, load_model
from tests.support.device import TEST_DEVICE

BASE = GenerationParams(prompt="a red fox", negative_prompt="blurry", width=64, height=64, steps=3, seed=7)
TOLERANCE = 3


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(tiny_model_dir)), TEST_DEVICE)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_the_output_size_is_the_base_scaled_as_a1111_truncates_it_to_latents() -> None:
    assert replace(BASE, hires=2.0).output_size == (128, 128)
    assert replace(BASE, width=520, height=512, hires=1.5).output_size == (776, 768)  # int(780) down to 8
    assert replace(BASE, hires=2.0, count=2).pixels == 128 * 128 * 2
    assert BASE.output_size == (64, 64) and BASE.second_pass_steps == 0
    assert replace(BASE, hires=2.0).second_pass_steps == 3
    assert replace(BASE, hires=2.0, hires_steps=5).second_pass_steps == 5


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"hires": 3.0}, "Hires fix scales by 1.5 or 2, not 3."),
        ({"hires": 2.0, "width": 1152}, "Hires fix would make a 2304×128 image, more than 2048 pixels a side"),
        ({"hires": 2.0, "hires_strength": 0.0}, "Hires denoising must be from 0.05 to 1, not 0."),
        # diffusers would ask DDIM for 1,200 of the model's 1,000 timesteps (DPM++ 2M and UniPC draw black).
        (
            {"hires": 2.0, "hires_steps": 60, "hires_strength": 0.05},
            "60 hires steps at denoising 0.05 are more than the model's 1000 timesteps hold",
        ),
        ({"hires": 2.0, "hires_upscaler": " "}, "Name a hires upscaler: Latent, Lanczos or an installed model."),
        ({"hires": 2.0, "mode": JobMode.IMG2IMG, "strength": 0.5}, "Hires fix applies to drawing from a prompt"),
    ],
)
def test_a_hires_fix_that_cannot_run_gets_a_sentence(changes: dict[str, object], sentence: str) -> None:
    with pytest.raises(InvalidParams, match=sentence.replace("(", r"\(").replace("+", r"\+")):
        replace(BASE, **changes).validate()  # type: ignore[arg-type]


def test_buttons_over_a_hires_image_draw_without_a_hires_fix() -> None:
    upscaled = replace(BASE, hires=2.0).upscaled((128, 128), seed=9)
    assert upscaled.hires == 0 and upscaled.output_size == (256, 256)


def test_only_hires_jobs_alike_share_a_loop() -> None:
    hires = replace(BASE, hires=2.0)
    assert compatible(hires, replace(hires, prompt="an owl", cfg=4.0, seed=1))
    assert not compatible(hires, BASE)
    assert not compatible(hires, replace(hires, hires=1.5))
    assert not compatible(hires, replace(hires, hires_strength=0.3))
    assert not compatible(hires, replace(hires, hires_upscaler="Lanczos"))
    # Steps left to the job's and written out as the same number run the same second pass.
    assert compatible(hires, replace(hires, hires_steps=3))


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 20, 30, 100])
@pytest.mark.parametrize("strength", [0.05, 0.1, 0.3, 0.33, 0.5, 0.7, 0.75, 0.999, 1.0])
def test_the_hires_pass_runs_exactly_its_steps_at_any_strength(steps: int, strength: float) -> None:
    total = img2img_steps(steps, strength)
    # diffusers' img2img runs min(int(total × strength), total) of `total` steps.
    assert min(int(total * strength), total) == steps


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_a_hires_fix_draws_at_the_output_size_and_its_infotext_reads_back(tiny: LoadedModel, upscaler: str) -> None:
    painter = Painter(tiny)
    params = replace(BASE, hires=1.5, hires_steps=2, hires_strength=0.6, hires_upscaler=upscaler)
    steps: list[tuple[int, int]] = []
    (image,) = painter.paint(params, on_step=lambda done, total: steps.append((done, total)))
    assert Image.open(io.BytesIO(image.png)).size == (96, 96)
    # Progress runs through both passes: 3 steps, then the hires pass's 2.
    assert steps == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    # A1111 keeps the first pass's size as Size, and writes the hires keys after the model.
    assert "Size: 64x64, Model hash: " in image.infotext
    assert image.infotext.endswith(
        f"Denoising strength: 0.6, Hires upscale: 1.5, Hires steps: 2, Hires upscaler: {upscaler}"
    ), image.infotext
    info = parse_infotext(image.infotext)
    assert info is not None and info.unknown_keys == ("Model hash", "Model")
    assert info.to_params(GenerationParams(prompt="x")) == replace(params, model="")


def test_hires_jobs_in_a_batch_draw_the_same_pixels_as_alone(tiny: LoadedModel) -> None:
    painter = Painter(tiny)
    jobs = [replace(BASE, hires=2.0), replace(BASE, hires=2.0, prompt="an owl", cfg=4.0, seed=3, count=2)]
    batched = [painter.finish(d) for d in painter.draw([BatchJob(params) for params in jobs])]
    for params, images in zip(jobs, batched, strict=True):
        for mine, single in zip(images, painter.paint(params), strict=True):
            assert np.abs(pixels(mine.png) - pixels(single.png)).max() <= TOLERANCE
    # The second pass redraws: a hires image is not the first pass merely enlarged.
    enlarged = Image.fromarray(pixels(painter.paint(BASE)[0].png).astype(np.uint8)).resize((128, 128))
    assert np.abs(pixels(batched[0][0].png) - np.asarray(enlarged).astype(int)).max() > 2 * TOLERANCE
