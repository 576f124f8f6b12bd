"""Variations, upscales and outpaints on the tiny model: sizes, what is kept and what is redrawn."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.params import GenerationParams, InvalidParams
from core.source import parse_source
from engine.generate import Painter
from engine.loading import ModelLoadError, load_model
from engine.outpaint import OVERLAP, pan_placement, prefill, zoom_placement
from tests.support.device import TEST_DEVICE
from tests.support.ldm_checkpoint import write_ldm_checkpoint
from tests.support.tiny_model import save_tiny_model

FOX = GenerationParams(prompt="a red fox", width=64, height=64, steps=4, seed=11)


@pytest.fixture(scope="module")
def painter(tiny_model_dir: Path) -> Painter:
    return Painter(load_model(parse_source(str(tiny_model_dir)), TEST_DEVICE))


@pytest.fixture(scope="module")
def source(painter: Painter) -> bytes:
    return painter.paint(FOX)[0].png


def rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def test_variations_keep_the_size_and_redraw_as_much_as_their_strength_says(painter: Painter, source: bytes) -> None:
    runs = {}
    for strength in ("subtle", "strong"):
        steps: list[tuple[int, int]] = []
        params = FOX.variation((64, 64), strength, seed=5)
        (image,) = painter.paint(params, lambda step, total, seen=steps: seen.append((step, total)), source=source)
        runs[strength] = (image, steps)
    subtle, subtle_steps = runs["subtle"]
    assert Image.open(io.BytesIO(subtle.png)).size == (64, 64)
    assert "Denoising strength: 0.35" in subtle.infotext and "Seed: 5," in subtle.infotext
    assert not np.array_equal(rgb(subtle.png), rgb(source))
    # img2img runs steps × strength of the job's 4 steps: 1 for subtle (0.35), 2 for strong (0.7).
    assert subtle_steps[-1] == (1, 1) and runs["strong"][1][-1] == (2, 2)


def test_upscale_doubles_the_size_with_tiled_decoding_and_keeps_the_picture(painter: Painter, source: bytes) -> None:
    params = FOX.upscaled((64, 64), seed=11)
    (image,) = painter.paint(params, source=source)
    upscaled = Image.open(io.BytesIO(image.png))
    assert upscaled.size == (128, 128)
    assert not painter.img2img.vae.use_tiling, "tiling is switched off again after the upscale"
    # A light pass: shrunk back down it still resembles its source far more than a fresh image does.
    back = np.asarray(upscaled.convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)).astype(np.int16)
    other = rgb(painter.paint(FOX.rerolled(999))[0].png)
    assert np.abs(back - rgb(source)).mean() < np.abs(other - rgb(source)).mean()


def test_upscale_is_refused_beyond_2048_pixels_a_side() -> None:
    assert FOX.upscaled((1024, 1024), seed=1).validate().width == 2048
    with pytest.raises(InvalidParams, match="a 2304×1536 image, more than 2048 pixels a side"):
        FOX.upscaled((1152, 768), seed=1).validate()


@pytest.mark.parametrize("factor", [1.5, 2.0])
def test_zoom_out_keeps_the_shrunk_image_and_draws_the_border(painter: Painter, source: bytes, factor: float) -> None:
    params = FOX.zoomed_out((64, 64), factor, seed=3)
    (image,) = painter.paint(params, source=source)
    out = rgb(image.png)
    assert out.shape == (64, 64, 3)
    placement = zoom_placement((64, 64), factor)
    left, top, right, bottom = placement.box
    shrunk = np.asarray(
        Image.open(io.BytesIO(source)).convert("RGB").resize((right - left, bottom - top), Image.Resampling.LANCZOS)
    )
    inner = out[top + OVERLAP : bottom - OVERLAP, left + OVERLAP : right - OVERLAP]
    expected = shrunk.astype(np.int16)[OVERLAP:-OVERLAP, OVERLAP:-OVERLAP]
    if inner.size:
        assert np.abs(inner - expected).max() <= 1
    border = np.ones((64, 64), dtype=bool)
    border[top:bottom, left:right] = False
    filled = np.asarray(prefill(Image.open(io.BytesIO(source)), placement)).astype(np.int16)
    assert np.abs(out[border] - filled[border]).mean() > 5, "the border was drawn, not left as pre-filled"


@pytest.mark.parametrize(
    ("direction", "size"), [("left", (96, 64)), ("right", (96, 64)), ("up", (64, 96)), ("down", (64, 96))]
)
def test_pan_extends_by_half_and_keeps_the_image(
    painter: Painter, source: bytes, direction: str, size: tuple[int, int]
) -> None:
    params = FOX.panned((64, 64), direction, seed=3)
    assert (params.width, params.height) == size
    (image,) = painter.paint(params, source=source)
    out = rgb(image.png)
    assert out.shape == (size[1], size[0], 3)
    placement = pan_placement((64, 64), direction)
    left, top, right, bottom = placement.box
    kept = out[top:bottom, left:right]
    original = rgb(source)
    # Away from the seam the kept image is exactly as it was; across the seam it is blended.
    far = {
        "left": np.s_[:, OVERLAP:],
        "right": np.s_[:, :-OVERLAP],
        "up": np.s_[OVERLAP:, :],
        "down": np.s_[:-OVERLAP, :],
    }
    assert np.abs(kept[far[direction]] - original[far[direction]]).max() <= 1
    new = np.ones(out.shape[:2], dtype=bool)
    new[top:bottom, left:right] = False
    filled = np.asarray(prefill(Image.open(io.BytesIO(source)), placement)).astype(np.int16)
    assert np.abs(out[new] - filled[new]).mean() > 5


def test_prefill_continues_the_edge_colours_rather_than_grey() -> None:
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    canvas = np.asarray(prefill(image, pan_placement((64, 64), "right")))
    assert canvas.shape == (64, 96, 3)
    assert np.abs(canvas[:, 70:].astype(int) - [200, 30, 30]).max() <= 2


def test_a_job_without_its_source_image_is_refused(painter: Painter) -> None:
    with pytest.raises(InvalidParams, match="missing"):
        painter.paint(FOX.variation((64, 64), "subtle", seed=1))
    with pytest.raises(InvalidParams, match="could not be read"):
        painter.paint(FOX.variation((64, 64), "subtle", seed=1), source=b"not an image")


@pytest.fixture(scope="module")
def tiny_inpainting_dir(tiny_model_dir: Path) -> Path:
    return save_tiny_model(tiny_model_dir.parent / "tiny-inpainting", seed=1, in_channels=9)


def test_a_dedicated_inpainting_folder_draws_the_outpaints(
    painter: Painter, source: bytes, tiny_inpainting_dir: Path
) -> None:
    inpainting = load_model(
        parse_source(str(tiny_inpainting_dir)), TEST_DEVICE, inpainting=True, setting="SDBOT_INPAINT_MODEL"
    )
    dedicated = Painter(painter.model, inpainting)
    assert dedicated.inpaint.unet.config.in_channels == 9
    (image,) = dedicated.paint(FOX.panned((64, 64), "right", seed=3), source=source)
    out = rgb(image.png)
    assert out.shape == (64, 96, 3)
    assert np.abs(out[:, : 64 - OVERLAP] - rgb(source)[:, : 64 - OVERLAP]).max() <= 1
    assert "Model: tiny-sd" in image.infotext, "the infotext names the model the member chose"


def test_a_single_file_inpainting_checkpoint_loads_offline(tiny_inpainting_dir: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny-inpainting.safetensors"
    write_ldm_checkpoint(tiny_inpainting_dir, checkpoint)
    configs = tmp_path / "configs"
    shutil.copytree(tiny_inpainting_dir, configs, ignore=shutil.ignore_patterns("*.safetensors"))
    # The base (4-channel) configs, as shipped for SD 1.5: the loader widens the UNet's input itself.
    unet_config = json.loads((configs / "unet" / "config.json").read_text())
    (configs / "unet" / "config.json").write_text(json.dumps({**unet_config, "in_channels": 4}))
    model = load_model(
        parse_source(str(checkpoint)), TEST_DEVICE, configs, inpainting=True, setting="SDBOT_INPAINT_MODEL"
    )
    assert model.pipe.unet.config.in_channels == 9
    assert model.info.name == "tiny-inpainting"


def test_a_broken_inpainting_model_names_its_own_setting(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"nope")
    with pytest.raises(ModelLoadError, match="^SDBOT_INPAINT_MODEL: could not load"):
        load_model(parse_source(str(broken)), TEST_DEVICE, inpainting=True, setting="SDBOT_INPAINT_MODEL")
