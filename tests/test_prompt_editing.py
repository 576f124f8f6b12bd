"""A1111's prompt editing and alternation drawn on the tiny models: the texts change between steps, per image of a
batch, and a job gives the same pixels in a batch as alone."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.params import GenerationParams
from core.source import parse_source
from engine.generate import BatchJob, Painter
from engine.loading import LoadedModel, load_model
from tests.support.tiny_sdxl import save_tiny_sdxl

# Batched matrix kernels add up in another order than single ones: a level or two of 255 at most.
TOLERANCE = 3
# DDIM keeps each step's text visible on the tiny models (their pictures settle in the first steps).
BASE = GenerationParams(prompt="x", width=64, height=64, steps=4, seed=1234, cfg=7.0, sampler="DDIM")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = save_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))
    return load_model(parse_source(str(folder)), torch.device("cpu"))


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def drawn(painter: Painter, prompt: str, **changes: object) -> np.ndarray:
    return pixels(painter.paint(replace(BASE, prompt=prompt, **changes))[0].png)  # type: ignore[arg-type]


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(a - b).max() > 2 * TOLERANCE)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(a - b).max() <= TOLERANCE)


@pytest.mark.parametrize("model", ["tiny", "tiny_xl"])
def test_an_edit_switches_the_text_between_steps(model: str, request: pytest.FixtureRequest) -> None:
    painter = Painter(request.getfixturevalue(model))
    cat, dog = drawn(painter, "a red cat"), drawn(painter, "a blue dog")
    # An edit at the last step never happens, and one at step 0 happens before the first: plain prompts then.
    assert same(drawn(painter, "[a red cat:a blue dog:4]"), cat)
    assert same(drawn(painter, "[a red cat:a blue dog:0]"), dog)
    # Cat for steps 0 and 1 (A1111 switches after the step named), dog for steps 2 and 3.
    switched = drawn(painter, "[a red cat:a blue dog:1]")
    assert differ(switched, cat) and differ(switched, dog)
    # The same edit written as a fraction of the steps draws the same.
    assert same(drawn(painter, "[a red cat:a blue dog:0.25]"), switched)
    # Alternation, as A1111 counts it: cat at steps 0 and 1, dog at 2, cat at 3; the other order is another picture.
    alternating = drawn(painter, "[a red cat|a blue dog]")
    assert differ(alternating, cat) and differ(alternating, dog)
    assert differ(drawn(painter, "[a blue dog|a red cat]"), alternating)


def test_the_negative_prompt_is_scheduled_too(tiny: LoadedModel) -> None:
    painter = Painter(tiny)
    plain = drawn(painter, "a fox", negative_prompt="blurry")
    assert same(drawn(painter, "a fox", negative_prompt="[grainy:blurry:0]"), plain)
    assert differ(drawn(painter, "a fox", negative_prompt="[grainy:blurry:1]"), plain)


def test_a_prompt_editing_job_in_a_batch_with_plain_jobs_draws_the_same_pixels_as_alone(tiny: LoadedModel) -> None:
    painter = Painter(tiny)
    jobs = [
        replace(BASE, prompt="a red fox", negative_prompt="blurry", seed=1),
        replace(BASE, prompt="[a red cat:(a blue dog:1.3):0.5], night", seed=2, count=2),
        replace(BASE, prompt="an owl", negative_prompt="[lowres|jpeg]", seed=3, cfg=4.0),
        replace(BASE, prompt="[tree|[house:boat:3]] by a lake", seed=4),
    ]
    batched = [painter.finish(d) for d in painter.draw([BatchJob(params) for params in jobs])]
    for params, images in zip(jobs, batched, strict=True):
        alone = painter.paint(params)
        assert [i.infotext for i in images] == [i.infotext for i in alone]
        assert images[0].infotext.startswith(params.prompt)  # the prompt as written, as A1111 keeps it
        for mine, single in zip(images, alone, strict=True):
            assert same(pixels(mine.png), pixels(single.png))


def test_a_schedules_longest_text_sets_the_chunks_the_job_batches_by(tiny: LoadedModel) -> None:
    painter = Painter(tiny)
    long = ", ".join(["a very detailed red fox"] * 20)  # past one 75-token chunk
    chunks = painter.prepare(replace(BASE, prompt=long))
    assert chunks > painter.prepare(replace(BASE, prompt="a cat")) == 1
    assert painter.prepare(replace(BASE, prompt=f"[a cat:{long}:0.5]")) == chunks
    assert painter.prepare(replace(BASE, prompt=f"[a cat|{long}]")) == chunks


def test_the_hires_pass_follows_a1111s_hires_schedule(tiny: LoadedModel) -> None:
    painter = Painter(tiny)
    hires = {"hires": 2.0, "hires_strength": 0.6}
    cat = drawn(painter, "a red cat", **hires)
    # Step 4 ends the 4-step first pass: cat there, dog for the whole hires pass (A1111 counts on into it).
    assert same(drawn(painter, "[a red cat:a blue dog:4]"), drawn(painter, "a red cat"))
    assert differ(drawn(painter, "[a red cat:a blue dog:4]", **hires), cat)
    # Step 8 is the hires pass's last: the switch never comes, as for a plain prompt.
    assert same(drawn(painter, "[a red cat:a blue dog:8]", **hires), cat)
