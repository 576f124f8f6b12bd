"""Where the model comes from (a diffusers folder, a single checkpoint file or a hub id) and runs (no torch)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

SAFE_SUFFIXES = (".safetensors",)
# Pickle-based checkpoints can run arbitrary code when loaded, so they are refused unless SDBOT_ALLOW_PICKLE=1.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SourceKind(str, enum.Enum):
    FOLDER = "folder"
    FILE = "file"
    HUB = "hub"


class InvalidSource(ValueError):
    """SDBOT_MODEL names nothing loadable; the message says what it should be."""


@dataclass(frozen=True)
class ModelSource:
    """A classified model location and the name A1111 would give it."""

    kind: SourceKind
    location: str

    @property
    def name(self) -> str:
        """A1111 names a checkpoint after its file; a folder or hub id after its last part."""
        if self.kind is SourceKind.FILE:
            return Path(self.location).stem
        return Path(self.location.rstrip("/")).name


def parse_source(value: str, *, base: Path | None = None, allow_pickle: bool = False) -> ModelSource:
    """Classify a model setting, checking local paths exist; raise InvalidSource with what to change."""
    text = value.strip()
    if not text:
        raise InvalidSource("is empty: give a diffusers folder, a .safetensors file or a hub id")
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    lowered = text.lower()
    pickle = lowered.endswith(PICKLE_SUFFIXES)
    if pickle and not allow_pickle:
        raise InvalidSource(
            f"{text} is a pickle checkpoint, which can run code when loaded: use a .safetensors file instead"
            " (or set SDBOT_ALLOW_PICKLE=1 if you trust it)"
        )
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise InvalidSource(f"{text} is a folder without model_index.json: give a diffusers pipeline folder")
        return ModelSource(SourceKind.FOLDER, str(path))
    if path.is_file():
        if not (pickle or lowered.endswith(SAFE_SUFFIXES)):
            raise InvalidSource(f"{text} is not a .safetensors checkpoint")
        return ModelSource(SourceKind.FILE, str(path))
    looks_local = pickle or lowered.endswith(SAFE_SUFFIXES) or text.startswith(("/", ".", "~")) or text.count("/") != 1
    if looks_local or not _HUB_ID.match(text):
        raise InvalidSource(f"{text} does not exist: give a diffusers folder, a .safetensors file or a hub id")
    return ModelSource(SourceKind.HUB, text)
