"""Small previews of latents mid-denoising: a tiny autoencoder when the owner has one, else a linear guess."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderTiny
from PIL import Image

from core.errors import first_line

log = logging.getLogger(__name__)

# A1111's "Approx cheap" previews: each latent channel's contribution to R, G and B, fitted per family.
# The VAE's scaling factor tells the families apart without knowing the pipeline class.
_SD1_FACTORS = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
_SDXL_FACTORS = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)
_SDXL_SCALING = 0.13025
# Big enough to see the composition in a Discord embed, small enough to cost a few KiB a second.
PREVIEW_SIDE = 256


class PreviewError(RuntimeError):
    """The preview model cannot be loaded; the message is one line for the operator."""


def _to_webp(image: Image.Image) -> bytes:
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=70)
    return out.getvalue()


def _pixels(rgb: torch.Tensor) -> Image.Image:
    """An image from a (3, H, W) tensor in [-1, 1]."""
    scaled = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(scaled.permute(1, 2, 0).cpu().numpy())


class Previewer:
    """Turns one image's latents (scaled as the pipeline keeps them) into a small WebP."""

    def __init__(self, vae_scaling_factor: float, tiny_autoencoder: Any = None) -> None:
        factors = _SDXL_FACTORS if abs(vae_scaling_factor - _SDXL_SCALING) < 1e-4 else _SD1_FACTORS
        self._factors = torch.tensor(factors)
        self._tiny = tiny_autoencoder

    @property
    def uses_autoencoder(self) -> bool:
        return self._tiny is not None

    def preview(self, latent: torch.Tensor) -> bytes:
        """A WebP of `latent` (4, h, w): decoded by the tiny autoencoder if there is one."""
        with torch.inference_mode():
            if self._tiny is not None:
                decoded = self._tiny.decode(latent[None].to(self._tiny.device, self._tiny.dtype)).sample[0]
                return _to_webp(_pixels(decoded))
            rgb = torch.einsum("chw,cr->rhw", latent.float().cpu(), self._factors)
        image = _pixels(rgb).resize((latent.shape[-1] * 4, latent.shape[-2] * 4), Image.Resampling.BILINEAR)
        return _to_webp(image)


def load_tiny_autoencoder(location: Path, device: torch.device, dtype: torch.dtype) -> Any:
    """A TAESD-style AutoencoderTiny from a local diffusers folder, for previews."""
    try:
        model = AutoencoderTiny.from_pretrained(location, local_files_only=True, torch_dtype=dtype)
    except Exception as exc:
        raise PreviewError(f"SDBOT_PREVIEW_MODEL: could not load {location}: {first_line(exc)}") from exc
    return model.to(device).eval()
