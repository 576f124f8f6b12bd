"""Upscaler files from the owner's folder: the listing, spandrel's identification, tiling and the pickle policy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from core.upscaler_files import UpscalerFolder, is_pickle
from engine.upscaler_shelf import UpscalerShelf
from engine.upscalers import MAX_TILE, MIN_TILE, Upscaler, UpscalerError, load_upscaler, tile_for
from tests.support.device import TEST_DEVICE
from tests.support.tiny_esrgan import tiny_esrgan_state, write_tiny_esrgan


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels: every pixel differs from its neighbours, the hardest case for tiles to agree on."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def levels(a: Image.Image, b: Image.Image) -> int:
    """The largest difference between two images' channel values, in levels of 255."""
    assert a.size == b.size
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def load(path: Path, allow_pickle: bool = False) -> Upscaler:
    return load_upscaler(path, allow_pickle=allow_pickle, device=TEST_DEVICE, dtype=torch.float32)


def test_the_folder_lists_models_by_file_name_with_safetensors_first(tmp_path: Path) -> None:
    for name in (
        "4x-UltraSharp.pth",
        "RealESRGAN_x4plus.pth",
        "RealESRGAN_x4plus.safetensors",
        "sub/deeper/DAT_x2.PT",
        "sub/SwinIR_4x.ckpt",
        "sub/SwinIR_4x.pth",
        "b/twice.pth",
        "a/twice.pth",
        "notes.txt",
        "config.yaml",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.pth").mkdir()

    folder = UpscalerFolder(tmp_path)
    files = folder.files()
    assert folder.names() == ("4x-UltraSharp", "DAT_x2", "RealESRGAN_x4plus", "SwinIR_4x", "twice")
    assert files["RealESRGAN_x4plus"] == tmp_path / "RealESRGAN_x4plus.safetensors"
    assert files["SwinIR_4x"] == tmp_path / "sub/SwinIR_4x.pth", ".pth before .ckpt"
    assert files["twice"] == tmp_path / "a/twice.pth", "the same suffix twice: the first path in sorted order"
    assert files["DAT_x2"] == tmp_path / "sub/deeper/DAT_x2.PT"
    assert UpscalerFolder(tmp_path / "missing").files() == {}
    assert UpscalerFolder(None).names() == ()
    assert [is_pickle(path) for path in (files["4x-UltraSharp"], files["DAT_x2"], files["RealESRGAN_x4plus"])] == [
        True,
        True,
        False,
    ]


def test_a_2x_esrgan_is_identified_and_doubles_the_image(tmp_path: Path) -> None:
    upscaler = load(write_tiny_esrgan(tmp_path / "2x-Tiny.safetensors", scale=2))

    assert (upscaler.name, upscaler.scale) == ("2x-Tiny", 2)
    assert upscaler.descriptor.architecture.id == "ESRGAN" and upscaler.descriptor.purpose == "SR"
    assert upscaler.descriptor.dtype == torch.float32 and not upscaler.descriptor.model.training
    out = upscaler.upscale(noise(40, 24), 2, None)
    assert (out.mode, out.size) == ("RGB", (80, 48))
    assert np.asarray(out).std() > 20, "the tiny net draws a picture, not one flat colour"
    assert upscaler.upscale(noise(40, 24).convert("RGBA"), 2, None).tobytes() == out.tobytes(), "alpha is dropped"


def test_tiles_give_the_untiled_image(tmp_path: Path) -> None:
    upscaler = load(write_tiny_esrgan(tmp_path / "2x-Tiny.safetensors", scale=2, num_filters=16))
    # OVERLAP is sized for full ESRGANs; on images this small its windows would each hold the whole image. A 12-pixel
    # margin covers the tiny net's receptive field and cuts every window.
    tiled = dataclasses.replace(upscaler, overlap=12)
    image = noise(48, 40)
    whole = upscaler.upscale(image, 2, None)

    assert levels(tiled.upscale(image, 2, 16), whole) <= 2, "nine tiles of 16 pixels, each seen with its margin"
    assert levels(tiled.upscale(image, 2, 20), whole) <= 2, "uneven tiles"
    # The tolerance bites: with too small a margin the tile edges show.
    assert levels(dataclasses.replace(upscaler, overlap=2).upscale(image, 2, 16), whole) > 2


def test_a_pixel_unshuffling_model_is_padded_and_tiled_on_its_multiple(tmp_path: Path) -> None:
    # RealESRGAN_x2plus's layout: spandrel asks for sides that are a multiple of 4, and the net groups pixels 2 by 2.
    upscaler = load(write_tiny_esrgan(tmp_path / "RealESRGAN_x2plus.safetensors", scale=2, unshuffle=True))
    assert upscaler.scale == 2 and upscaler.descriptor.size_requirements.multiple_of == 4
    image = noise(41, 23)
    whole = upscaler.upscale(image, 2, None)

    assert whole.size == (82, 46)
    assert levels(dataclasses.replace(upscaler, overlap=16).upscale(image, 2, 10), whole) <= 2


def test_a_model_whose_scale_is_not_the_factor_is_resized_to_it(tmp_path: Path) -> None:
    four = load(write_tiny_esrgan(tmp_path / "4x-Tiny.safetensors", scale=4))
    two = load(write_tiny_esrgan(tmp_path / "2x-Tiny.safetensors", scale=2))
    image = noise(40, 24)

    halved = four.upscale(image, 2, None)
    assert halved.size == (80, 48)
    assert halved.tobytes() == four.upscale(image, 4, None).resize((80, 48), Image.Resampling.LANCZOS).tobytes()
    assert four.upscale(noise(41, 23), 1.5, 16).size == (round(41 * 1.5), round(23 * 1.5))
    # A 2× model for ×4 runs twice, as A1111 does, rather than stretching its output.
    twice = two.upscale(image, 4, None)
    assert twice.size == (160, 96) and twice.tobytes() == two.upscale(two.upscale(image, 2, None), 2, None).tobytes()
    with pytest.raises(ValueError, match="above 1"):
        two.upscale(image, 1, None)


def test_half_precision_where_the_architecture_supports_it(tmp_path: Path) -> None:
    path = write_tiny_esrgan(tmp_path / "2x-Tiny.safetensors", scale=2)
    half = load_upscaler(path, allow_pickle=False, device=TEST_DEVICE, dtype=torch.float16)

    assert half.descriptor.supports_half and half.descriptor.dtype == torch.float16
    assert levels(half.upscale(noise(24, 16), 2, None), load(path).upscale(noise(24, 16), 2, None)) <= 2


def test_a_pickle_loads_only_when_allowed_and_only_as_weights(tmp_path: Path) -> None:
    path = write_tiny_esrgan(tmp_path / "upscalers" / "2x-Tiny.pth", scale=2)
    with pytest.raises(UpscalerError) as refused:
        load(path)
    assert str(refused.value) == f"{path}: a pickle; set SDBOT_ALLOW_PICKLE=1 to load it (weights only)"

    expected = load(write_tiny_esrgan(tmp_path / "2x-Tiny.safetensors", scale=2)).upscale(noise(24, 16), 2, None)
    assert load(path, allow_pickle=True).upscale(noise(24, 16), 2, None).tobytes() == expected.tobytes()
    # Real-ESRGAN's releases wrap the weights as {"params_ema": …}; spandrel unwraps them.
    wrapped = tmp_path / "RealESRGAN_x2.pt"
    torch.save({"params_ema": tiny_esrgan_state(2)}, wrapped)
    assert load(wrapped, allow_pickle=True).upscale(noise(24, 16), 2, None).tobytes() == expected.tobytes()


class _Payload:
    """What a malicious pickle holds: unpickling it calls a function of the file's choosing."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


def test_a_pickle_holding_more_than_weights_is_refused_unopened(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "4x-Evil.pth"
    torch.save({**tiny_esrgan_state(4), "payload": _Payload(marker)}, path)

    refusal = r"4x-Evil\.pth: not plain weights, so it was not loaded \(Unsupported global: GLOBAL getattr"
    with pytest.raises(UpscalerError, match=refusal):
        load(path, allow_pickle=True)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what the weights-only unpickler kept from happening
    assert marker.exists()


def test_what_spandrel_cannot_use_is_refused_naming_the_file(tmp_path: Path) -> None:
    unrelated = tmp_path / "unrelated.safetensors"
    generator = torch.Generator().manual_seed(0)
    save_file({"encoder.weight": torch.randn(8, 4, generator=generator), "head.bias": torch.randn(8)}, str(unrelated))
    with pytest.raises(UpscalerError, match=r"^.*unrelated\.safetensors: spandrel does not recognise this model's"):
        load(unrelated)

    restoration = write_tiny_esrgan(tmp_path / "1x-Denoise.safetensors", scale=1)
    with pytest.raises(UpscalerError, match=r"1x-Denoise\.safetensors: this ESRGAN model is for 1× restoration, not"):
        load(restoration)

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(UpscalerError, match=r"broken\.safetensors: not a readable safetensors file"):
        load(broken)

    other = tmp_path / "notes.txt"
    other.write_text("")
    with pytest.raises(UpscalerError, match=r"notes\.txt: not an upscaler file"):
        load(other)


def test_tile_for_grows_with_the_budget_within_bounds() -> None:
    gib = 1024**3
    budgets = [0, 64 * 1024**2, gib // 2, gib, 4 * gib, 16 * gib, 1024 * gib]
    for scale in (2, 4):
        tiles = [tile_for(budget, scale) for budget in budgets]
        assert tiles == sorted(tiles) and tiles[0] == MIN_TILE and tiles[-1] == MAX_TILE
        assert all(tile % 32 == 0 for tile in tiles)
        assert len(set(tiles)) > 3, tiles
    assert tile_for(2 * gib, 4) < tile_for(2 * gib, 2), "a 4× model's output costs more per input pixel"


def test_the_shelf_keeps_one_model_on_the_device_and_reserves_the_largest_ones_weights(tmp_path: Path) -> None:
    write_tiny_esrgan(tmp_path / "small.safetensors", scale=2)
    write_tiny_esrgan(tmp_path / "large.safetensors", scale=2, num_filters=16)
    (tmp_path / "broken.safetensors").write_bytes(b"not a model")
    for dtype, itemsize in ((torch.float32, 4), (torch.float16, 2)):
        shelf = UpscalerShelf(UpscalerFolder(tmp_path), allow_pickle=False, device=TEST_DEVICE, dtype=dtype)
        assert shelf.reserve == 0, "nothing is measured before the files are checked"
        assert len(shelf.check()) == 1
        largest = sum(t.numel() for t in tiny_esrgan_state(2, 16, 1, 0, False).values() if t.is_floating_point())
        assert shelf.reserve == itemsize * largest
    image = noise(16, 16)
    for name in ("small", "large", "small"):
        shelf.enlarge(image, (32, 32), name)
        assert shelf.loaded == name
    shelf.release()
    assert shelf.loaded is None
