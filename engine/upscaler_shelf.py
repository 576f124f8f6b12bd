"""The upscaler models one engine uses, by name: each loads when first used, one at a time, and is let go when the
GPU needs room for a model switch; a file that cannot be used is one log line (the rest keep working)."""

from __future__ import annotations

import logging

import torch
from PIL import Image

from core.params import LANCZOS, InvalidParams
from core.upscaler_files import UpscalerFolder
from engine.upscalers import Upscaler, UpscalerError, load_upscaler, tile_for

log = logging.getLogger(__name__)

# The share of the device's free memory a tile's activations may take; CPU tiles are sized as for 2 GiB.
FREE_MEMORY_SHARE = 0.5
CPU_BUDGET = 2 * 1024**3


class UpscalerShelf:
    """SDBOT_UPSCALERS_DIR as one engine sees it."""

    def __init__(self, folder: UpscalerFolder, *, allow_pickle: bool, device: torch.device, dtype: torch.dtype) -> None:
        self.folder = folder
        self.allow_pickle = allow_pickle
        self.device = device
        self.dtype = dtype
        self._loaded: Upscaler | None = None
        # The device memory the largest usable model's weights take: what the engine's budget keeps for them.
        self.reserve = 0

    def check(self) -> list[str]:
        """One line for each file that cannot be used (identified on the CPU, then let go), for the log at start
        and at a reload; measures the largest usable model for `reserve` on the way."""
        problems = []
        largest = 0
        for path in self.folder.files().values():
            try:
                found = load_upscaler(
                    path, allow_pickle=self.allow_pickle, device=torch.device("cpu"), dtype=torch.float32
                )
            except UpscalerError as exc:
                problems.append(str(exc))
                continue
            largest = max(largest, found.weight_bytes(self.dtype))
        self.reserve = largest
        return problems

    @property
    def loaded(self) -> str | None:
        """The name of the model on the device now, if any."""
        return self._loaded.name if self._loaded is not None else None

    def release(self) -> None:
        """Let go of the loaded model (the next use loads it again)."""
        self._loaded = None

    def _get(self, name: str) -> Upscaler:
        if self._loaded is None or self._loaded.name != name:
            path = self.folder.files().get(name)
            if path is None:
                raise InvalidParams(f"The upscaler {name[:60]} is not installed on this GPU's machine any more.")
            # One model on the device at a time, so upscalers never take more than `reserve` beside the model.
            self.release()
            try:
                self._loaded = load_upscaler(path, allow_pickle=self.allow_pickle, device=self.device, dtype=self.dtype)
            except UpscalerError as exc:
                log.error("%s", exc)
                raise InvalidParams(
                    f"The upscaler {name[:60]} could not be loaded; the owner can find why in the bot's log."
                ) from None
        return self._loaded

    def _tile(self, upscaler: Upscaler) -> int:
        """A tile side that fits the memory free on the device now."""
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            return tile_for(int(free * FREE_MEMORY_SHARE), upscaler.scale)
        return tile_for(CPU_BUDGET, upscaler.scale)

    def enlarge(self, image: Image.Image, size: tuple[int, int], name: str) -> Image.Image:
        """`image` at exactly `size`: by the model called `name`, in tiles that fit the device, or resized with
        Lanczos."""
        if name == LANCZOS:
            return image.resize(size, Image.Resampling.LANCZOS)
        upscaler = self._get(name)
        enlarged = upscaler.upscale(image, size[0] / image.width, self._tile(upscaler))
        return enlarged if enlarged.size == size else enlarged.resize(size, Image.Resampling.LANCZOS)
