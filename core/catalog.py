"""The models folder: diffusers folders and single-file checkpoints by name, with family and defaults (no torch).

The bot reads it for autocomplete and validation, the engine to load what a job names; both scan the same way.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.checkpoint_header import Family, HeaderError, detect_family, family_of_folder, read_header
from core.sidecar import ModelDefaults, SidecarError, read_sidecar, sidecar_for
from core.source import PICKLE_SUFFIXES, SAFE_SUFFIXES
from core.vae_files import VaeError, VaeFolder, beside, check_vae_for, is_beside_vae

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices
MAX_CHOICE_VALUE = 100  # and refuses the whole answer if one choice's value is longer


class CatalogError(ValueError):
    """The models folder cannot be used as it is; the message is one line naming the file at fault."""


class UnknownModel(ValueError):
    """A member named no model of the catalog; the message is a sentence with close matches."""


def pickle_refusal(name: str) -> str:
    """The sentence for a member (and the line for the operator) when a pickle checkpoint is not allowed."""
    return (
        f"The model {name} is a pickle checkpoint (.ckpt/.pt), which can run code when loaded: the owner can"
        " convert it to .safetensors or set SDBOT_ALLOW_PICKLE=1."
    )


@dataclass(frozen=True)
class CatalogEntry:
    """One model of the folder: its name (A1111's: the file stem or folder name), where it is, what it is."""

    name: str
    path: Path
    family: Family
    native: int  # the side it was trained at: the default width and height
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    pickle: bool = False
    vae: str = ""  # the VAE it decodes with: its sidecar's, or `<name>.vae.safetensors` beside it; "": its own

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    def label(self) -> str:
        """How autocomplete shows it: the name and the sidecar's description, within Discord's 100 characters."""
        text = f"{self.name} — {self.defaults.description}" if self.defaults.description else self.name
        return text if len(text) <= 100 else text[:99] + "…"


def _folder_native(folder: Path, family: Family) -> int:
    """A diffusers folder's native side: the UNet's latent size times the VAE's downscale."""
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return family.native


def _apply_prediction(family: Family, defaults: ModelDefaults) -> Family:
    """An SD 2.x sidecar's `prediction` settles what the header could not."""
    if family not in (Family.SD2, Family.SD2_BASE) or defaults.prediction is None:
        return family
    return Family.SD2 if defaults.prediction == "v" else Family.SD2_BASE


def read_entry(path: Path) -> CatalogEntry:
    """One model's entry: family from the header (or folder configs), defaults from its sidecar."""
    sidecar = sidecar_for(path)
    defaults = read_sidecar(sidecar) if sidecar is not None else ModelDefaults()
    if path.is_dir():
        family = _apply_prediction(family_of_folder(path), defaults)
        return CatalogEntry(path.name, path, family, _folder_native(path, family), defaults)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        # A pickle's keys cannot be read without unpickling it; the engine detects its family when it loads it.
        return CatalogEntry(path.stem, path, Family.SD1, Family.SD1.native, defaults, pickle=True)
    family = _apply_prediction(detect_family(read_header(path)), defaults)
    return CatalogEntry(path.stem, path, family, family.native, defaults)


def _with_vae(entry: CatalogEntry, vaes: VaeFolder | None, skipped: list[str]) -> CatalogEntry:
    """The entry with the VAE its sidecar names (in `vaes`), else the one beside it, when that VAE is there and of
    the model's family; else a line for the owner, and the model keeps its own VAE."""
    if entry.defaults.vae:
        found = vaes.files().get(entry.defaults.vae) if vaes is not None else None
        if found is None:
            skipped.append(f"{entry.path.name}: its sidecar's VAE {entry.defaults.vae} is not in SDBOT_VAE_DIR")
            return entry
    else:
        found = beside(entry.path)
        if found is None:
            return entry
    try:
        check_vae_for(found, entry.family)
    except VaeError as exc:
        skipped.append(str(exc))
        return entry
    return replace(entry, vae=found.name)


def _is_model(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return (path / "model_index.json").is_file()
    # A checkpoint's own VAE beside it (A1111's `<name>.vae.safetensors`) is no model.
    return path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES and not is_beside_vae(path)


@dataclass(frozen=True)
class Catalog:
    """Every model in SDBOT_MODELS_DIR, by name."""

    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # one line per file that is not a usable checkpoint, for the owner

    def get(self, name: str) -> CatalogEntry | None:
        return self.entries.get(name)

    def by_path(self, location: str) -> CatalogEntry | None:
        """The entry at `location` (SDBOT_MODEL may point into the models folder), or None."""
        target = Path(location).resolve()
        return next((e for e in self.entries.values() if e.path.resolve() == target), None)

    def names(self) -> list[str]:
        return sorted(self.entries, key=str.lower)

    def find(self, name: str) -> CatalogEntry:
        """The entry called `name`, or UnknownModel with a sentence listing close matches."""
        entry = self.entries.get(name)
        if entry is not None:
            return entry
        folded = {n.lower(): n for n in self.entries}
        if name.lower() in folded:
            return self.entries[folded[name.lower()]]
        close = difflib.get_close_matches(name.lower(), list(folded), n=3, cutoff=0.5)
        if close:
            suggestion = " or ".join(f"`{folded[c]}`" for c in close)
            raise UnknownModel(f"There is no model called `{name}`: did you mean {suggestion}?")
        if not self.entries:
            raise UnknownModel(f"There is no model called `{name}`: only the bot's default model is installed.")
        raise UnknownModel(f"There is no model called `{name}`: pick one from the list Discord offers.")

    def matching(self, typed: str) -> list[CatalogEntry]:
        """Autocomplete: names starting with what was typed first, then those containing it (or its description)."""
        needle = typed.strip().lower()
        ordered = [self.entries[n] for n in self.names() if len(n) <= MAX_CHOICE_VALUE]
        starts = [e for e in ordered if e.name.lower().startswith(needle)]
        contains = [e for e in ordered if e not in starts and needle in e.label().lower()]
        return (starts + contains)[:MAX_CHOICES]


def scan(folder: Path, vaes: VaeFolder | None = None) -> Catalog:
    """Read every model in `folder` (not its subfolders' files), with the VAEs they name in `vaes`; CatalogError
    names the first sidecar at fault.

    A file that is no checkpoint (half downloaded, a LoRA) is skipped and noted, so it cannot stop the bot.
    A missing folder is an empty catalog: the bot then runs on SDBOT_MODEL alone.
    """
    if not folder.is_dir():
        return Catalog()
    entries: dict[str, CatalogEntry] = {}
    skipped: list[str] = []
    for path in sorted(folder.iterdir()):
        if not _is_model(path):
            continue
        try:
            entry = read_entry(path)
        except SidecarError as exc:
            raise CatalogError(str(exc)) from None
        except HeaderError as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        if entry.name in entries:
            raise CatalogError(f"{path}: another model is also called {entry.name} ({entries[entry.name].path.name})")
        entries[entry.name] = _with_vae(entry, vaes, skipped)
    return Catalog(entries, tuple(skipped))
