"""The owner's folder of upscaler models (ESRGAN and kin), named as A1111 names them (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.source import PICKLE_SUFFIXES

# Earlier wins when two files share a name: safetensors cannot run code, so it beats any pickle.
SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")


def is_pickle(path: Path) -> bool:
    """Whether a model file is a pickle, which can run code when loaded without torch's weights-only unpickler."""
    return path.suffix.lower() in PICKLE_SUFFIXES


@dataclass(frozen=True)
class UpscalerFolder:
    """A folder of upscaler files (subfolders too, as A1111's `models/ESRGAN`), each known by its file name
    without the suffix."""

    path: Path | None

    def files(self) -> dict[str, Path]:
        """Every model file by name; a missing folder holds none. A name found twice: safetensors first, then
        .pth, .pt, .ckpt, then the first path in sorted order."""
        folder = self.path
        if folder is None or not folder.is_dir():
            return {}
        found = [p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()]
        found.sort(key=lambda p: (SUFFIXES.index(p.suffix.lower()), p.relative_to(folder).as_posix()))
        files: dict[str, Path] = {}
        for path in found:
            files.setdefault(path.stem, path)
        return files

    def names(self) -> tuple[str, ...]:
        """The names a member may pick, sorted."""
        return tuple(sorted(self.files()))
