"""External VAE files as A1111 uses them: the VAE folder, `<checkpoint>.vae.*` beside a checkpoint, which family a
VAE is for (from its safetensors header, without torch) and A1111's VAE hash."""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.checkpoint_header import Family, Header, HeaderError, read_header
from core.network_files import short_hash

SAFE_VAE_SUFFIXES = (".safetensors",)
# A1111 lists these in models/VAE; they are pickles, which can run code when loaded.
PICKLE_VAE_SUFFIXES = (".pt", ".ckpt")
VAE_SUFFIXES = SAFE_VAE_SUFFIXES + PICKLE_VAE_SUFFIXES
# A VAE beside its checkpoint: safetensors first, as it is the one that loads without unpickling.
_BESIDE_SUFFIXES = tuple(f".vae{suffix}" for suffix in VAE_SUFFIXES)
# A whole checkpoint keeps its VAE under this prefix; a VAE file has the same keys without it.
CHECKPOINT_VAE_PREFIX = "first_stage_model."
# The encoder's last convolution gives the mean and log-variance of each latent channel: twice the channels.
_ENCODER_OUT = "encoder.conv_out.weight"
_DECODER_IN = "decoder.conv_in.weight"
_LATENT_CHANNELS = 4  # every family this bot loads (SD 1.x, SD 2.x, SDXL)
# "sdxl" anywhere, or "xl" as a word of its own ("vae-xl", "xl_vae") but not inside one ("pixel").
_SDXL_NAME = re.compile(r"sdxl|(?<![a-z])xl(?![a-z])")
_MODEL_LABELS = {Family.SD1: "SD 1.x", Family.SD2: "SD 2.x", Family.SD2_BASE: "SD 2.x", Family.SDXL: "SDXL"}


class VaeError(ValueError):
    """A VAE file cannot be used (with this model); the message is one line naming the file."""


class VaeFamily(str, enum.Enum):
    """Which models a VAE decodes for: SD 1.x and 2.x share one latent space, SDXL has its own (same shapes)."""

    SD = "sd"
    SDXL = "sdxl"

    @classmethod
    def of_model(cls, family: Family) -> VaeFamily:
        """The VAE family a model of `family` needs."""
        return cls.SDXL if family is Family.SDXL else cls.SD

    @property
    def label(self) -> str:
        return {"sd": "an SD 1.x/2.x VAE", "sdxl": "an SDXL VAE"}[self.value]


@dataclass(frozen=True)
class VaeFolder:
    """The VAE folder (A1111's models/VAE): its files by file name, as A1111's VAE list shows them."""

    path: Path

    def files(self) -> dict[str, Path]:
        """Every VAE file directly in the folder, by name; a missing folder has none."""
        if not self.path.is_dir():
            return {}
        found = (p for p in self.path.iterdir() if is_vae_file(p) and not p.name.startswith("."))
        return {p.name: p for p in sorted(found, key=lambda p: p.name.lower())}


def is_vae_file(path: Path) -> bool:
    """Whether the file has a VAE file's suffix (.safetensors, .pt, .ckpt)."""
    return path.is_file() and path.suffix.lower() in VAE_SUFFIXES


def is_pickle_vae(path: Path) -> bool:
    """Whether the VAE file is a pickle (.pt, .ckpt), which can run code when loaded."""
    return path.suffix.lower() in PICKLE_VAE_SUFFIXES


def is_beside_vae(path: Path) -> bool:
    """Whether the file is a checkpoint's own VAE (`<checkpoint>.vae.safetensors`), not a checkpoint."""
    return path.name.lower().endswith(_BESIDE_SUFFIXES)


def beside(checkpoint: Path) -> Path | None:
    """The VAE A1111 loads with `checkpoint` when it lies beside it as `<checkpoint stem>.vae.<suffix>`."""
    stem = checkpoint.name if checkpoint.is_dir() else checkpoint.stem
    for suffix in _BESIDE_SUFFIXES:
        candidate = checkpoint.parent / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _shape(header: Header, key: str) -> Sequence[int] | None:
    return header.shapes.get(key) or header.shapes.get(CHECKPOINT_VAE_PREFIX + key)


def latent_channels(header: Header) -> int | None:
    """The latent channels a VAE's weights encode to (or decode from); None when they hold no VAE."""
    encoder = _shape(header, _ENCODER_OUT)
    if encoder and len(encoder) == 4:
        return int(encoder[0]) // 2
    decoder = _shape(header, _DECODER_IN)
    if decoder and len(decoder) == 4:
        return int(decoder[1])
    return None


def _family_by_metadata(header: Header) -> VaeFamily | None:
    """SAI's model spec names the architecture, e.g. `stable-diffusion-xl-v1-base/vae`."""
    architecture = header.metadata.get("modelspec.architecture", "").lower()
    if architecture.startswith("stable-diffusion-xl"):
        return VaeFamily.SDXL
    if architecture.startswith(("stable-diffusion-v1", "stable-diffusion-v2")):
        return VaeFamily.SD
    return None


def _read(path: Path) -> Header:
    try:
        return read_header(path)
    except HeaderError as exc:
        raise VaeError(f"{path}: {exc}") from None


def vae_family(path: Path, header: Header | None = None) -> VaeFamily | None:
    """Which family the VAE at `path` is for: by its model-spec metadata, else its name; None when nothing tells
    (SD's and SDXL's VAEs have the same shapes). VaeError when it is no VAE or not one of 4-channel latents.

    A .safetensors header is read here; a pickle's can only come from the engine (`header`), else only its
    name is looked at.
    """
    if header is None and not is_pickle_vae(path):
        stat = path.stat()
        header = _read_cached(path.resolve(), stat.st_size, stat.st_mtime_ns)
    if header is not None:
        channels = latent_channels(header)
        if channels is None:
            raise VaeError(f"{path}: not a VAE (no encoder or decoder weights in it; a LoRA or an embedding?)")
        if channels == 16:
            raise VaeError(f"{path}: 16-channel latents (SD3/Flux); this bot's models use {_LATENT_CHANNELS}")
        if channels != _LATENT_CHANNELS:
            raise VaeError(f"{path}: {channels}-channel latents; this bot's models use {_LATENT_CHANNELS}")
        if (family := _family_by_metadata(header)) is not None:
            return family
    return VaeFamily.SDXL if _SDXL_NAME.search(path.name.lower()) else None


@functools.lru_cache(maxsize=64)
def _read_cached(path: Path, _size: int, _mtime_ns: int) -> Header:
    # The bot checks a server's VAE pick for every /imagine: the header is read once while the file is unchanged.
    return _read(path)


def vae_families(folder: VaeFolder | None) -> dict[str, VaeFamily | None]:
    """Each usable VAE file of the folder by name, with its family (None: nothing tells); a file that is no VAE of
    4-channel latents is left out. Blocking: it reads each safetensors header."""
    families: dict[str, VaeFamily | None] = {}
    for name, path in (folder.files() if folder is not None else {}).items():
        try:
            families[name] = vae_family(path)
        except VaeError:
            continue
    return families


def check_vae_for(path: Path, model_family: Family, header: Header | None = None) -> None:
    """VaeError when the VAE at `path` cannot decode for a model of `model_family`; an unknown family may."""
    family = vae_family(path, header)
    if family is not None and family is not VaeFamily.of_model(model_family):
        raise VaeError(f"{path}: {family.label}; this model is {_MODEL_LABELS[model_family]}")


def vae_hash(path: Path) -> str:
    """A1111's `VAE hash`: the first ten hex digits of the whole file's sha256."""
    return short_hash(path)
