"""What family a checkpoint is (SD 1.x, SD 2.x, SDXL), read from its safetensors JSON header only (no torch)."""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Each family's diffusers configs and CLIP tokenizers ship here, so single files load (and prompts count) offline.
CONFIGS = Path(__file__).parent / "configs"
# A header larger than this is not a checkpoint header (real ones are a few hundred KiB).
MAX_HEADER_BYTES = 64 * 1024 * 1024

_SDXL_KEY = "conditioner.embedders.1.model."
_SD2_KEY = "cond_stage_model.model."
_SD1_KEY = "cond_stage_model.transformer."
# The UNet's cross-attention width is the text encoder's: 768 for CLIP-L (SD 1.x), 1024 for OpenCLIP-H (SD 2.x).
_CROSS_ATTENTION = ".transformer_blocks.0.attn2.to_k.weight"


class Family(str, enum.Enum):
    """Which pipeline and shipped configs a checkpoint needs; `native` is the side it was trained at."""

    SD1 = "sd1"
    SD2 = "sd2"  # v-prediction, 768 (SD 2.0-v / 2.1)
    SD2_BASE = "sd2-base"  # epsilon, 512 (SD 2.0-base / 2.1-base)
    SDXL = "sdxl"

    @property
    def native(self) -> int:
        return {"sd1": 512, "sd2": 768, "sd2-base": 512, "sdxl": 1024}[self.value]

    @property
    def is_sdxl(self) -> bool:
        return self is Family.SDXL


class HeaderError(ValueError):
    """The file is not a readable safetensors file; the message says why in a few words."""


@dataclass(frozen=True)
class Header:
    """A safetensors header: each tensor's shape, and the free-form `__metadata__` strings."""

    shapes: Mapping[str, Sequence[int]]
    metadata: Mapping[str, str]


def read_header(path: Path) -> Header:
    """The JSON header of a safetensors file: 8 bytes of little-endian length, then the JSON; nothing else is read."""
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                raise HeaderError("too short to be a safetensors file")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                raise HeaderError("not a safetensors file (header length out of range)")
            raw = f.read(length)
    except OSError as exc:
        raise HeaderError(exc.strerror or str(exc)) from None
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        raise HeaderError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(parsed, dict):
        raise HeaderError("not a safetensors file (its header is not a JSON object)")
    metadata = parsed.pop("__metadata__", None) or {}
    shapes = {key: tuple(entry.get("shape", ())) for key, entry in parsed.items() if isinstance(entry, dict)}
    return Header(shapes=shapes, metadata={str(k): str(v) for k, v in metadata.items()})


def _cross_attention_width(shapes: Mapping[str, Sequence[int]]) -> int | None:
    for key, shape in shapes.items():
        if key.startswith("model.diffusion_model.") and key.endswith(_CROSS_ATTENTION) and len(shape) == 2:
            return int(shape[1])
    return None


def _sd2_prediction(metadata: Mapping[str, str]) -> Family:
    """SD 2.x's v and epsilon checkpoints have the same weights' shapes; only metadata (SAI model spec) tells them
    apart. Without it, assume v-prediction at 768, as SD 2.0-v and 2.1 (what fine-tunes start from) are."""
    described = " ".join(metadata.get(k, "") for k in ("modelspec.prediction_type", "modelspec.architecture")).lower()
    if "epsilon" in described or "-base" in described:
        return Family.SD2_BASE
    return Family.SD2


def detect_family(header: Header) -> Family:
    """SDXL by its second (OpenCLIP-G) text encoder, SD 2.x by its OpenCLIP-H one (1024 wide), else SD 1.x."""
    shapes = header.shapes
    if any(key.startswith(_SDXL_KEY) for key in shapes):
        return Family.SDXL
    if any(key.startswith(_SD2_KEY) for key in shapes) or _cross_attention_width(shapes) == 1024:
        return _sd2_prediction(header.metadata)
    if any(key.startswith(_SD1_KEY) for key in shapes) or any(k.startswith("model.diffusion_model.") for k in shapes):
        return Family.SD1
    raise HeaderError("not a Stable Diffusion checkpoint (no UNet in it; a LoRA or an embedding?)")


def family_of_folder(folder: Path) -> Family:
    """A diffusers folder's family, from the pipeline class and scheduler named in its configs."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HeaderError(f"unreadable model_index.json ({exc})") from None
    if "XL" in str(index.get("_class_name", "")):
        return Family.SDXL
    try:
        text = json.loads((folder / "text_encoder" / "config.json").read_text(encoding="utf-8"))
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Family.SD1
    if text.get("hidden_size") == 1024:
        return Family.SD2 if scheduler.get("prediction_type") == "v_prediction" else Family.SD2_BASE
    return Family.SD1
