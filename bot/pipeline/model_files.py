"""The upscaler models and VAE files jobs may name: the bot's own folders' (as last read) and those the connected
workers report. A job naming one the bot's folders lack goes only to a worker that has it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from core.checkpoint_header import Family
from core.params import GenerationParams
from core.upscaler_files import UpscalerFolder
from core.vae_files import VaeError, VaeFamily, VaeFolder, check_vae_for, is_beside_vae


class ModelFiles:
    """SDBOT_UPSCALERS_DIR and SDBOT_VAE_DIR as the bot last read them, and the workers' files."""

    def __init__(self, upscalers: UpscalerFolder | None = None, vaes: VaeFolder | None = None) -> None:
        self.upscaler_folder = upscalers or UpscalerFolder(None)
        self.vae_folder = vaes
        self.local_upscalers: frozenset[str] = frozenset()
        self.local_vaes: frozenset[str] = frozenset()
        self.remote_upscalers: frozenset[str] = frozenset()
        # Each worker VAE's family as its worker read it (None: nothing in the file tells).
        self.remote_vaes: dict[str, VaeFamily | None] = {}
        # Read once now, so the local engines take a job restored at start before any intake has read them.
        self.upscaler_names()
        self._vae_files()

    def upscaler_names(self) -> tuple[str, ...]:
        """Every upscaler model a job may name now, sorted. Blocking (it reads the folder): call it off the event
        loop where a member waits."""
        self.local_upscalers = frozenset(self.upscaler_folder.names())
        return tuple(sorted(self.local_upscalers | self.remote_upscalers))

    def _vae_files(self) -> dict[str, Path]:
        files = self.vae_folder.files() if self.vae_folder is not None else {}
        self.local_vaes = frozenset(files)
        return files

    def vae_names(self) -> tuple[str, ...]:
        """Every VAE file a server may pick now, the bot's own first (as its folder lists them), then the workers'."""
        local = tuple(self._vae_files())
        return local + tuple(sorted(set(self.remote_vaes) - set(local)))

    def vae_fits(self, name: str, family: Family) -> bool:
        """Whether the VAE called `name` is installed and can decode for a model of `family` (one whose family
        nothing tells may)."""
        path = self._vae_files().get(name)
        if path is not None:
            try:
                check_vae_for(path, family)
            except VaeError:
                return False
            return True
        if name not in self.remote_vaes:
            return False
        reported = self.remote_vaes[name]
        return reported is None or reported is VaeFamily.of_model(family)

    def use_remote(self, upscalers: Iterable[str], vaes: Mapping[str, VaeFamily | None]) -> None:
        """The upscalers and VAEs the connected workers have."""
        self.remote_upscalers = frozenset(upscalers)
        self.remote_vaes = dict(vaes)

    def local_has(self, params: GenerationParams) -> bool:
        """Whether the bot's own folders had the upscaler and VAE the job names when last read (at intake); a VAE
        beside a checkpoint comes with the model."""
        upscaler = params.upscaler_model
        if upscaler is not None and upscaler not in self.local_upscalers:
            return False
        return not params.vae or is_beside_vae(Path(params.vae)) or params.vae in self.local_vaes
