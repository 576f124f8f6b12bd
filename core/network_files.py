"""Folders of LoRA and embedding files, named as A1111 names them, and A1111's short hashes (no torch)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".safetensors"
SHORT_HASH = 12
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class NetworkFolder:
    """A folder of `.safetensors` files (subfolders too), each known by its file name without the suffix."""

    path: Path | None

    def files(self) -> dict[str, Path]:
        """Every file by name; a missing folder holds none."""
        if self.path is None or not self.path.is_dir():
            return {}
        found = sorted(p for p in self.path.rglob(f"*{SUFFIX}") if p.is_file())
        return {p.name[: -len(SUFFIX)]: p for p in found}

    def names(self) -> tuple[str, ...]:
        """The names a prompt may use, sorted."""
        return tuple(sorted(self.files()))


def _sha256(path: Path, skip: int = 0) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(skip)
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def short_hash(path: Path) -> str:
    """A1111's model and VAE hash: the first ten hex digits of the whole file's sha256 (remembered while the file is
    unchanged)."""
    stat = path.stat()
    return _short_hash(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _short_hash(path: Path, _size: int, _mtime_ns: int) -> str:
    # Checkpoints and VAEs are hundreds of MB to GB: hashing one again for every image or switch would cost seconds.
    return _sha256(path)[:10]


def lora_hash(path: Path) -> str:
    """A1111's LoRA short hash: sha256 of a safetensors file's tensor data (the "addnet" hash), first 12 digits."""
    with path.open("rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
    return _sha256(path, skip=8 + header_length)[:SHORT_HASH]


def embedding_hash(path: Path) -> str:
    """A1111's textual-inversion short hash: sha256 of the whole file, first 12 digits."""
    return _sha256(path)[:SHORT_HASH]


def hash_list(hashes: dict[str, str]) -> str:
    """`name: hash, …` as A1111 writes `Lora hashes` and `TI hashes` (names lose their `:` and `,`)."""
    return ", ".join(f"{name.replace(':', '').replace(',', '')}: {value}" for name, value in hashes.items())
