"""Upscaler models (ESRGAN, SwinIR, DAT, …) from the owner's files, loaded with spandrel and run in tiles."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from core.errors import first_line
from core.upscaler_files import is_pickle

if TYPE_CHECKING:
    from spandrel import ImageModelDescriptor

# spandrel is imported inside the functions that need it: importing it registers every architecture it knows
# (about 2 s after torch), and the engine process imports this module whether or not anyone upscales.

# Input pixels of context each tile sees beyond its share on every side; only its share is kept, so a pixel comes
# out as the whole image would give it wherever the net's effective receptive field fits in the margin.
OVERLAP = 32
MIN_TILE = 64
MAX_TILE = 1024
_TILE_MULTIPLE = 32
# As A1111: a model short of the factor (a 2× model for ×4) runs again on its own output, at most this often.
_MAX_PASSES = 3

# tile_for's estimate, per input pixel of a tile's window: an RRDB net (ESRGAN's 64 features) keeps about eight
# feature maps alive inside a dense block, and two at the output resolution while it upsamples (scale² pixels each);
# plus the image itself in and out. Counted in float32 and doubled: half precision, transformer archs' attention
# (SwinIR, DAT) and the allocator's slack all fit in that margin.
_FEATURES = 64
_DENSE_MAPS = 8
_BYTES = 4
_SAFETY = 2

_PURPOSES = {"FaceSR": "face restoration", "Inpainting": "inpainting", "Restoration": "1× restoration"}


class UpscalerError(ValueError):
    """An upscaler file cannot be used; the message names the file and says what to do."""


@dataclass(frozen=True)
class Upscaler:
    """A loaded super-resolution model, on its device and in its dtype."""

    name: str
    scale: int
    descriptor: ImageModelDescriptor[Any]
    overlap: int = OVERLAP

    def upscale(self, image: Image.Image, factor: float, tile: int | None) -> Image.Image:
        """The image `factor` times larger (exactly `round(w*factor)` × `round(h*factor)`), RGB: the model, in
        tiles of `tile` input pixels a side when given, then Lanczos where its own scale is not the factor."""
        if factor <= 1:
            raise ValueError(f"an upscale factor must be above 1, not {factor}")
        if tile is not None and tile < 1:
            raise ValueError(f"a tile must be at least 1 pixel a side, not {tile}")
        target = (round(image.width * factor), round(image.height * factor))
        result = image.convert("RGB")
        for _ in range(_MAX_PASSES):
            if result.width >= target[0] and result.height >= target[1]:
                break
            result = self._run(result, tile)
        if result.size != target:
            result = result.resize(target, Image.Resampling.LANCZOS)
        return result

    def weight_bytes(self, dtype: torch.dtype) -> int:
        """What its weights take on a device that runs `dtype` (float32 where the architecture has no half)."""
        itemsize = torch.tensor([], dtype=_dtype_for(self.descriptor, dtype)).element_size()
        return itemsize * sum(p.numel() for p in self.descriptor.model.parameters())

    def _run(self, image: Image.Image, tile: int | None) -> Image.Image:
        """One pass of the model over an RGB image; the descriptor pads each window to its size requirements and
        crops the padding off again."""
        descriptor, scale = self.descriptor, self.scale
        width, height = image.size
        out = torch.empty((height * scale, width * scale, 3), dtype=torch.uint8)
        side = tile or max(width, height)
        # Windows start on the model's multiple: a pixel-unshuffling net (RealESRGAN x2) groups pixels from there.
        multiple = descriptor.size_requirements.multiple_of
        margin = -(-self.overlap // multiple) * multiple
        with torch.inference_mode():
            pixels = torch.from_numpy(np.array(image)).to(descriptor.device).permute(2, 0, 1).unsqueeze(0)
            pixels = pixels.to(descriptor.dtype).div_(255)
            for top, bottom in _spans(height, side, multiple):
                for left, right in _spans(width, side, multiple):
                    window_top, window_left = max(top - margin, 0), max(left - margin, 0)
                    window = pixels[
                        ...,
                        window_top : min(bottom + margin, height),
                        window_left : min(right + margin, width),
                    ]
                    share = descriptor(window)[
                        0,
                        :,
                        (top - window_top) * scale : (bottom - window_top) * scale,
                        (left - window_left) * scale : (right - window_left) * scale,
                    ]
                    block = share.float().mul_(255).round_().to(torch.uint8).permute(1, 2, 0)
                    out[top * scale : bottom * scale, left * scale : right * scale] = block.cpu()
        return Image.fromarray(out.numpy(), "RGB")


def _spans(length: int, tile: int, multiple: int) -> list[tuple[int, int]]:
    """`length` cut into the fewest spans of about `tile`, as even as can be (no thin last tile), each starting on
    a multiple of `multiple`."""
    count = -(-length // tile)
    step = -(-length // count)
    step = -(-step // multiple) * multiple
    return [(start, min(start + step, length)) for start in range(0, length, step)]


def _bytes_per_window_pixel(scale: int, channels: int) -> int:
    return _BYTES * _SAFETY * (_FEATURES * (_DENSE_MAPS + 2 * scale * scale) + channels * (1 + scale * scale))


def tile_bytes(tile: int, scale: int, channels: int = 3) -> int:
    """The activations tile_for budgets for a tile of this side (its window, OVERLAP included): what the benchmark
    holds a tile's measured peak against."""
    return _bytes_per_window_pixel(scale, channels) * (tile + 2 * OVERLAP) ** 2


def tile_for(budget_bytes: int, scale: int, channels: int = 3) -> int:
    """A tile side (input pixels, a multiple of 32 from 64 to 1024) whose window, the tile plus OVERLAP on every
    side, fits `budget_bytes` of activations for a model of this scale."""
    window = math.isqrt(max(budget_bytes, 0) // _bytes_per_window_pixel(scale, channels))
    tile = (window - 2 * OVERLAP) // _TILE_MULTIPLE * _TILE_MULTIPLE
    return min(max(tile, MIN_TILE), MAX_TILE)


def _read_state_dict(path: Path, allow_pickle: bool) -> dict[str, Any]:
    """The file's tensors: safetensors as is, a pickle only through torch's weights-only unpickler."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise UpscalerError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    if not is_pickle(path):
        raise UpscalerError(f"{path}: not an upscaler file; use .safetensors (or .pth, .pt, .ckpt)")
    if not allow_pickle:
        raise UpscalerError(f"{path}: a pickle; set SDBOT_ALLOW_PICKLE=1 to load it (weights only)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UpscalerError(f"{path}: not plain weights, so it was not loaded ({_unpickling_reason(exc)})") from None
    if not isinstance(loaded, dict):
        raise UpscalerError(f"{path}: holds a {type(loaded).__name__}, not a model's weights")
    return loaded


def _unpickling_reason(exc: Exception) -> str:
    """What the weights-only unpickler objected to, without torch's advice to load the file unrestricted."""
    for line in str(exc).splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].split(". ")[0].strip()
    return first_line(exc)


def _dtype_for(descriptor: ImageModelDescriptor[Any], dtype: torch.dtype) -> torch.dtype:
    """The engine's dtype where the architecture supports it; spandrel marks those that break in fp16 or bf16."""
    if (dtype == torch.float16 and descriptor.supports_half) or (
        dtype == torch.bfloat16 and descriptor.supports_bfloat16
    ):
        return dtype
    return torch.float32


def load_upscaler(path: Path, *, allow_pickle: bool, device: torch.device, dtype: torch.dtype) -> Upscaler:
    """A super-resolution model from an owner's file, identified by spandrel, on `device` (in `dtype` where the
    architecture supports it, else float32)."""
    import spandrel

    state = _read_state_dict(path, allow_pickle)
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise UpscalerError(f"{path}: spandrel does not recognise this model's architecture") from None
    except Exception as exc:
        raise UpscalerError(f"{path}: spandrel could not load this model ({first_line(exc)})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != "SR":
        purpose = _PURPOSES.get(descriptor.purpose, descriptor.purpose)
        raise UpscalerError(
            f"{path}: this {descriptor.architecture.name} model is for {purpose}, not upscaling;"
            " only super-resolution models (2×, 4×, …) can upscale"
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UpscalerError(
            f"{path}: a model for {descriptor.input_channels}-channel images; only RGB (3-channel) upscalers work"
        )
    descriptor.to(device=device, dtype=_dtype_for(descriptor, dtype)).eval()
    return Upscaler(name=path.stem, scale=descriptor.scale, descriptor=descriptor)
