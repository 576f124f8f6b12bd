"""Which VAE a loaded model decodes with: its own, or the file a job names (in SDBOT_VAE_DIR, or a
`<checkpoint>.vae.safetensors` in the models folder); loaded when first asked for, one swap per change."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from core.infotext import ModelInfo
from core.params import InvalidParams
from core.vae_files import VaeError, VaeFolder, check_vae_for, is_beside_vae, vae_hash
from engine.loading import LoadedModel
from engine.vae import load_vae, swap_vae

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VaeFiles:
    """Where an engine finds the VAE files jobs name."""

    folder: VaeFolder | None = None
    models_dir: Path | None = None
    allow_pickle: bool = False

    def path(self, name: str) -> Path | None:
        found = self.folder.files().get(name) if self.folder is not None else None
        if found is None and self.models_dir is not None and is_beside_vae(Path(name)):
            beside = self.models_dir / name
            found = beside if beside.is_file() else None
        return found


class VaeSwitch:
    """One loaded model's VAE: the checkpoint's own until a job names a file."""

    def __init__(self, model: LoadedModel, files: VaeFiles) -> None:
        self.model = model
        self.files = files
        self.current = ""
        self._own = model.pipe.vae
        self._info: ModelInfo | None = None

    @property
    def info(self) -> ModelInfo | None:
        """The external VAE's name and hash, as the infotext writes them; None for the checkpoint's own."""
        return self._info

    def use(self, name: str) -> bool:
        """Decode with `name` ("" the checkpoint's own VAE); whether the pipeline's VAE changed. InvalidParams with
        a sentence when it cannot be used (the owner's log says why)."""
        if name == self.current:
            return False
        if not name:
            swap_vae(self.model.pipe, self._own)
            self.current, self._info = "", None
            return True
        path = self.files.path(name)
        if path is None:
            raise InvalidParams(f"The VAE {name[:80]} is not installed on this GPU's machine.")
        try:
            check_vae_for(path, self.model.family)
            vae = load_vae(
                path,
                allow_pickle=self.files.allow_pickle,
                dtype=self.model.dtype,
                device=self.model.device,
                config=self._own.config,
            )
        except VaeError as exc:
            log.error("%s", exc)
            raise InvalidParams(
                f"The VAE {name[:80]} cannot be used with this model; the bot's log says why."
            ) from None
        previous = swap_vae(self.model.pipe, vae)
        if previous is self._own and self.model.device.type != "cpu":
            # The checkpoint's own VAE waits in CPU RAM, not on the GPU, until a job wants it back.
            self._own.to(torch.device("cpu"))
        self.current, self._info = name, ModelInfo(path.name, vae_hash(path))
        return True
