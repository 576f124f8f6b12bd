"""Outpainting geometry: the canvas, what to generate on it, and how the seams blend (PIL and numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from core.params import half_side

# How far the generated area reaches into the kept image, so the model sees and continues its edge.
OVERLAP = 16


@dataclass(frozen=True)
class Placement:
    """Where the kept image sits on the canvas."""

    canvas_size: tuple[int, int]
    box: tuple[int, int, int, int]  # left, top, right, bottom of the kept image on the canvas


def _multiple_of_8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


def zoom_placement(size: tuple[int, int], factor: float) -> Placement:
    """The image shrunk by `factor` into the centre of a canvas of its own size."""
    width, height = size
    inner_w, inner_h = _multiple_of_8(width / factor), _multiple_of_8(height / factor)
    left, top = (width - inner_w) // 2, (height - inner_h) // 2
    return Placement((width, height), (left, top, left + inner_w, top + inner_h))


def pan_placement(size: tuple[int, int], direction: str) -> Placement:
    """The canvas extended by half the image towards `direction`."""
    width, height = size
    extra_w, extra_h = half_side(width), half_side(height)
    if direction == "left":
        return Placement((width + extra_w, height), (extra_w, 0, extra_w + width, height))
    if direction == "right":
        return Placement((width + extra_w, height), (0, 0, width, height))
    if direction == "up":
        return Placement((width, height + extra_h), (0, extra_h, width, extra_h + height))
    if direction == "down":
        return Placement((width, height + extra_h), (0, 0, width, height))
    raise ValueError(f"unknown pan direction {direction!r}")


def prefill(image: Image.Image, placement: Placement) -> Image.Image:
    """The canvas with the image placed and the new area filled by stretching its edge pixels outwards, blurred.

    The sampler starts from this (not flat grey), so the new area begins with the colours that meet it.
    """
    left, top, right, bottom = placement.box
    width, height = placement.canvas_size
    kept = np.asarray(image.convert("RGB").resize((right - left, bottom - top), Image.Resampling.LANCZOS))
    padded = np.pad(kept, ((top, height - bottom), (left, width - right), (0, 0)), mode="edge")
    blurred = Image.fromarray(padded).filter(ImageFilter.GaussianBlur(radius=max(width, height) / 32))
    canvas = blurred.copy()
    canvas.paste(Image.fromarray(kept), (left, top))
    return canvas


def generation_mask(placement: Placement) -> Image.Image:
    """White where the model draws: the new area plus an overlap into the kept image's border.

    diffusers binarises inpainting masks, so the soft seam comes from `paste_back`, not from blurring this.
    """
    width, height = placement.canvas_size
    left, top, right, bottom = placement.box
    mask = np.full((height, width), 255, dtype=np.uint8)
    inner_left = left + OVERLAP if left > 0 else 0
    inner_top = top + OVERLAP if top > 0 else 0
    inner_right = right - OVERLAP if right < width else right
    inner_bottom = bottom - OVERLAP if bottom < height else bottom
    mask[inner_top:inner_bottom, inner_left:inner_right] = 0
    return Image.fromarray(mask)


def paste_back(generated: Image.Image, original: Image.Image, placement: Placement) -> Image.Image:
    """Keep the original pixels inside the kept image, feathered into the generated ones across the overlap."""
    left, top, right, bottom = placement.box
    kept = original.convert("RGB").resize((right - left, bottom - top), Image.Resampling.LANCZOS)
    width, height = placement.canvas_size
    alpha = np.zeros((height, width), dtype=np.float32)
    inner_w, inner_h = right - left, bottom - top
    # 1 deep inside the kept image, ramping to 0 over the overlap on the sides that border new area.
    ys = np.arange(inner_h, dtype=np.float32)[:, None]
    xs = np.arange(inner_w, dtype=np.float32)[None, :]
    ramp = np.ones((inner_h, inner_w), dtype=np.float32)
    if left > 0:
        ramp = np.minimum(ramp, xs / OVERLAP)
    if right < width:
        ramp = np.minimum(ramp, (inner_w - 1 - xs) / OVERLAP)
    if top > 0:
        ramp = np.minimum(ramp, ys / OVERLAP)
    if bottom < height:
        ramp = np.minimum(ramp, (inner_h - 1 - ys) / OVERLAP)
    alpha[top:bottom, left:right] = np.clip(ramp, 0.0, 1.0)
    canvas = np.asarray(generated.convert("RGB"), dtype=np.float32)
    placed = np.array(canvas)
    placed[top:bottom, left:right] = np.asarray(kept, dtype=np.float32)
    blended = placed * alpha[..., None] + canvas * (1.0 - alpha[..., None])
    return Image.fromarray(np.clip(blended.round(), 0, 255).astype(np.uint8))
