"""`<lora:name:te:unet>`: LoRA files applied as PEFT adapters for one job, and removed again after it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.network_files import NetworkFolder, lora_hash
from core.params import InvalidParams
from core.prompt_syntax import LoraTag, check_lora_names

log = logging.getLogger(__name__)


def component_weights(pipe: Any, adapters: Sequence[str], tags: Sequence[LoraTag]) -> list[dict[str, float]]:
    """Each adapter's weight per part of the pipe: A1111's text encoder multiplier for the text encoders (both of
    SDXL's), its UNet multiplier for the UNet. Only the parts an adapter has: diffusers warns about any other."""
    parts = pipe.get_list_adapters()  # e.g. {"unet": ["sdbot_0"], "text_encoder": ["sdbot_0"]}
    return [
        {
            part: tag.te if part.startswith("text_encoder") else tag.unet
            for part, names in parts.items()
            if adapter in names
        }
        for adapter, tag in zip(adapters, tags, strict=True)
    ]


class LoraLoader:
    """Loads the LoRAs a prompt names from `SDBOT_LORA_DIR`; remembers each file's hash while it is unchanged."""

    def __init__(self, folder: NetworkFolder) -> None:
        self.folder = folder
        self._hashes: dict[tuple[Path, int, int], str] = {}

    def _hash(self, path: Path) -> str:
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._hashes:
            self._hashes[key] = lora_hash(path)
        return self._hashes[key]

    @contextmanager
    def applied(self, pipe: Any, tags: Sequence[LoraTag]) -> Iterator[dict[str, str]]:
        """Within the block the pipe draws with these LoRAs at their weights; yields each one's short hash.

        The adapters are unloaded on the way out, also when the job fails, so the next job starts clean.
        """
        if not tags:
            yield {}
            return
        files = self.folder.files()
        check_lora_names(tags, files)
        adapters: list[str] = []
        hashes: dict[str, str] = {}
        try:
            for index, tag in enumerate(tags):
                adapter = f"sdbot_{index}"
                # Listed before loading: a load that fails halfway still leaves layers to unload.
                adapters.append(adapter)
                try:
                    with warnings.catch_warnings():
                        # PEFT warns that a second adapter makes several adapters: that is what a prompt asked for.
                        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                        pipe.load_lora_weights(str(files[tag.name]), adapter_name=adapter)
                except Exception as exc:
                    # Most often a LoRA made for another family (an SDXL LoRA on SD 1.5): the shapes differ.
                    log.warning("LoRA %s could not be loaded: %s", files[tag.name], exc)
                    raise InvalidParams(
                        f"The LoRA {tag.name!r} does not fit this model (it may be made for another base model):"
                        " remove it or pick another."
                    ) from None
                hashes[tag.name] = self._hash(files[tag.name])
            pipe.set_adapters(adapters, adapter_weights=component_weights(pipe, adapters, tags))
            yield hashes
        finally:
            if adapters:
                pipe.unload_lora_weights()
