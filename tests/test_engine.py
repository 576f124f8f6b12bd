"""The engine on the tiny model, loaded through the real loading code."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.checkpoint_header import Family
from core.params import SAMPLERS, GenerationParams, InvalidParams
from core.source import SourceKind, parse_source
from engine import loading
from engine.generate import Painter
from engine.loading import (
    LoadedModel,
    ModelLoadError,
    file_hash,
    load_model,
    pixel_budgets,
    resolve_device,
    weight_bytes,
)
from engine.samplers import SAMPLER_SPECS
from tests.support.device import TEST_DEVICE
from tests.support.tiny_model import NATIVE_SIZE

FOX = GenerationParams(prompt="a red fox", negative_prompt="blurry", width=64, height=64, steps=2, seed=1234)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(tiny_model_dir)), TEST_DEVICE)


@pytest.fixture(scope="module")
def painter(tiny: LoadedModel) -> Painter:
    return Painter(tiny)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_folder_loads_in_the_devices_precision_with_name_hash_and_native_size(
    tiny: LoadedModel, tiny_model_dir: Path
) -> None:
    assert tiny.device.type == TEST_DEVICE.type
    assert tiny.dtype == (torch.float16 if TEST_DEVICE.type == "cuda" else torch.float32)
    assert tiny.info.name == "tiny-sd"
    weights = tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    assert tiny.info.hash == file_hash(weights) and len(tiny.info.hash) == 10
    assert tiny.native_size == NATIVE_SIZE


def test_a_64px_two_step_image_carries_its_infotext(painter: Painter, tiny: LoadedModel) -> None:
    steps: list[tuple[int, int]] = []
    (image,) = painter.paint(FOX, lambda step, total: steps.append((step, total)))
    assert steps == [(1, 2), (2, 2)]
    png = Image.open(io.BytesIO(image.png))
    assert png.format == "PNG" and png.size == (64, 64)
    assert (
        png.text["parameters"]
        == image.infotext
        == (
            "a red fox\nNegative prompt: blurry\n"
            "Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 64x64, "
            f"Model hash: {tiny.info.hash}, Model: tiny-sd"
        )
    )


def test_same_seed_same_pixels_and_another_seed_differs(painter: Painter) -> None:
    first = pixels(painter.paint(FOX)[0].png)
    again = pixels(painter.paint(FOX)[0].png)
    other = pixels(painter.paint(FOX.rerolled(1235))[0].png)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_each_image_of_a_batch_is_its_own_seed(painter: Painter) -> None:
    batch = painter.paint(GenerationParams(**{**FOX.to_dict(), "count": 2, "width": 96, "height": 64}))
    assert [i.seed for i in batch] == [1234, 1235]
    assert [Image.open(io.BytesIO(i.png)).size for i in batch] == [(96, 64), (96, 64)]
    assert "Seed: 1235, Size: 96x64" in batch[1].infotext
    alone = painter.paint(GenerationParams(**{**FOX.to_dict(), "seed": 1235, "width": 96, "height": 64}))
    # Batched kernels may round differently from single ones; a few levels out of 255 at most.
    difference = np.abs(pixels(batch[1].png).astype(int) - pixels(alone[0].png).astype(int))
    assert difference.max() <= 3


def test_every_sampler_offered_has_a_scheduler_and_runs(painter: Painter) -> None:
    assert tuple(SAMPLER_SPECS) == SAMPLERS
    seen = set()
    for sampler in SAMPLERS:
        (image,) = painter.paint(GenerationParams(**{**FOX.to_dict(), "sampler": sampler}))
        seen.add(pixels(image.png).tobytes())
        assert f"Sampler: {sampler.removesuffix(' Karras')}," in image.infotext
    assert len(seen) >= 5, "different samplers should draw different pictures"


def test_invalid_params_are_refused_before_any_work(painter: Painter) -> None:
    with pytest.raises(InvalidParams, match="multiple of 8"):
        painter.paint(GenerationParams(prompt="fox", width=70, height=64, steps=1))


def test_pickle_and_missing_sources_are_refused_by_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pickle checkpoint"):
        parse_source(str(tmp_path / "model.ckpt"))
    assert parse_source("prompthero/openjourney-v4").kind is SourceKind.HUB


def test_a_broken_checkpoint_names_the_setting(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ModelLoadError, match=r"^SDBOT_MODEL: could not load .*broken.safetensors"):
        load_model(parse_source(str(broken)), torch.device("cpu"))


def test_device_choice_and_capacity(tiny: LoadedModel) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="^SDBOT_DEVICE is cuda but"):
            resolve_device("cuda")
        with pytest.raises(ModelLoadError, match="^SDBOT_DEVICE is cuda:1 but"):
            resolve_device("cuda:1")
    with pytest.raises(ModelLoadError, match="^SDBOT_DEVICE takes auto, cpu, cuda, cuda:N or all"):
        resolve_device("cuda:x")
    assert pixel_budgets(tiny, 2.5) == dict.fromkeys(Family, 2_500_000)
    assert pixel_budgets(tiny, None)[Family.SD1] > 64 * 64


def test_a_bigger_family_gets_the_memory_its_weights_leave(tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    item = torch.tensor([], dtype=tiny.dtype).element_size()
    assert weight_bytes(tiny) == item * sum(
        p.numel() for part in (tiny.pipe.unet, tiny.pipe.text_encoder, tiny.pipe.vae) for p in part.parameters()
    )
    monkeypatch.setattr(loading, "_free_bytes", lambda _device: 40 * 2**30)
    budgets = pixel_budgets(tiny, None)
    # The loaded (SD 1.x) model's own budget is what is free; SD 2.x and SDXL weigh more. Activations per pixel:
    # 8 KiB in fp32 (the CPU), 4 KiB in fp16 (CUDA).
    per_pixel = 2048 * item
    assert budgets[Family.SD1] == int(40 * 2**30 * 0.85) // per_pixel
    # The upscaler models' weights are kept out of every family's budget.
    reserved = pixel_budgets(tiny, None, reserved=2**30)
    assert reserved[Family.SD1] == int(39 * 2**30 * 0.85) // per_pixel
    assert all(reserved[family] < budgets[family] for family in Family if budgets[family])
    assert budgets[Family.SD1] > budgets[Family.SD2] == budgets[Family.SD2_BASE] > budgets[Family.SDXL] > 0
    sdxl_weights = (budgets[Family.SD1] - budgets[Family.SDXL]) * per_pixel / 0.85
    assert 3.4e9 * item < sdxl_weights < 3.5e9 * item
    monkeypatch.setattr(loading, "_free_bytes", lambda _device: 2 * item * 2**30)
    assert pixel_budgets(tiny, None)[Family.SDXL] == 0, "SDXL's weights alone need more than 8 GiB (4 GiB in fp16)"


class OutOfMemoryOnBatches:
    """The pipeline as on a small GPU: a batch of more than `fits` images runs out of memory."""

    def __init__(self, pipe: Any, fits: int) -> None:
        object.__setattr__(self, "_pipe", pipe)
        object.__setattr__(self, "fits", fits)
        object.__setattr__(self, "batches", [])

    def __call__(self, **arguments: Any) -> Any:
        self.batches.append(len(arguments["generator"]))
        if len(arguments["generator"]) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self._pipe(**arguments)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._pipe, name, value)


def test_out_of_memory_splits_the_batch_and_keeps_every_image(painter: Painter, tiny: LoadedModel) -> None:
    params = GenerationParams(**{**FOX.to_dict(), "count": 4})
    whole = painter.paint(params)
    small_gpu = OutOfMemoryOnBatches(tiny.pipe, fits=1)
    split = Painter(dataclasses.replace(tiny, pipe=small_gpu)).paint(params)
    assert small_gpu.batches == [4, 2, 1, 1, 2, 1, 1]
    assert [i.seed for i in split] == [1234, 1235, 1236, 1237]
    assert [i.infotext for i in split] == [i.infotext for i in whole]
    for alone, batched in zip(split, whole, strict=True):
        assert np.abs(pixels(alone.png).astype(int) - pixels(batched.png).astype(int)).max() <= 3


def test_out_of_memory_while_decoding_decodes_in_tiles_without_denoising_again(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = Painter(tiny).paint(FOX)
    vae = tiny.pipe.vae
    decode = vae.decode
    tiled: list[bool] = []

    def small_gpu(*arguments: Any, **options: Any) -> Any:
        tiled.append(vae.use_tiling)
        if not vae.use_tiling:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return decode(*arguments, **options)

    monkeypatch.setattr(vae, "decode", small_gpu)
    steps: list[int] = []
    (image,) = Painter(tiny).paint(FOX, on_step=lambda step, _total: steps.append(step))
    assert steps == [1, 2], "denoised once"
    assert tiled == [False, True] and not vae.use_tiling
    # The tiny image is a single tile: the same pixels.
    assert np.abs(pixels(image.png).astype(int) - pixels(whole[0].png).astype(int)).max() <= 3


def test_a_single_image_that_does_not_fit_still_fails(tiny: LoadedModel) -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError):
        Painter(dataclasses.replace(tiny, pipe=OutOfMemoryOnBatches(tiny.pipe, fits=0))).paint(FOX)
