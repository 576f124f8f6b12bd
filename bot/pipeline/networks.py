"""The LoRAs a job may name: the bot's own folder (SDBOT_LORA_DIR), read at each check so that a file copied in works
at once, and those the live workers have."""

from __future__ import annotations

from collections.abc import Iterable

from core.network_files import NetworkFolder
from core.params import GenerationParams
from core.prompt_syntax import split_loras


class Networks:
    """The bot's LoRA folder as last read, and the workers' LoRAs."""

    def __init__(self, folder: NetworkFolder | None = None) -> None:
        self.folder = folder or NetworkFolder(None)
        self.local: frozenset[str] = frozenset()
        self.remote: frozenset[str] = frozenset()

    def lora_names(self) -> set[str]:
        """Every LoRA a prompt may name now. Blocking (it reads the folder): call it off the event loop."""
        self.local = frozenset(self.folder.names())
        return set(self.local | self.remote)

    def use_remote(self, names: Iterable[str]) -> None:
        """The LoRAs the connected workers have."""
        self.remote = frozenset(names)

    def local_has(self, params: GenerationParams) -> bool:
        """Whether the bot's own folder had every LoRA the job names when it was last read (at intake)."""
        return all(tag.name in self.local for tag in split_loras(params.prompt)[1])
