"""Tiny ESRGAN (RRDBNet) upscalers with seeded random weights, written as the files owners drop in their folder."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file


def tiny_esrgan_state(
    scale: int, num_filters: int = 8, num_blocks: int = 1, seed: int = 0, unshuffle: bool = False
) -> dict[str, torch.Tensor]:
    """An old-arch ESRGAN state dict (`model.0.weight`, `model.1.sub.0.RDB1.conv1.0.weight`, …), the layout of
    4x-UltraSharp and A1111's ESRGAN files, from spandrel's own RRDBNet. `unshuffle`: as RealESRGAN_x2plus, the net
    pixel-unshuffles its input by 2 and upscales that by 2 × `scale` (12 input channels, sides a multiple of 4)."""
    from spandrel.architectures.ESRGAN import ESRGAN

    shape = {"in_nc": 12, "scale": 2 * scale, "shuffle_factor": 2} if unshuffle else {"scale": scale}
    layout = ESRGAN(num_filters=num_filters, num_blocks=num_blocks, **shape).state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in layout.items():
        if key.endswith(".weight"):
            # He init keeps activations alive through the blocks; torch's default lets them fade into a dim, nearly
            # flat output that a careless tiling would match as well.
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=generator) * math.sqrt(2.0 / fan_in)
        else:
            state[key] = torch.zeros_like(value)
    last = next(reversed(layout))
    # Mid-grey plus a modest spread: outputs vary across the image without clamping to black or white.
    state[last] = torch.full_like(layout[last], 0.5)
    state[last.replace(".bias", ".weight")] *= 0.25
    return state


def write_tiny_esrgan(
    path: Path, scale: int, num_filters: int = 8, num_blocks: int = 1, seed: int = 0, unshuffle: bool = False
) -> Path:
    """A tiny ESRGAN file: `.safetensors`, or a pickled state dict (`torch.save`) for `.pth`, `.pt` and `.ckpt`."""
    state = tiny_esrgan_state(scale, num_filters, num_blocks, seed, unshuffle)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
