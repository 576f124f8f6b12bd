"""The bot's view of the models: which one a job uses, its defaults, and the catalog behind autocomplete."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from discord import app_commands

from bot.models.channel_defaults import ChannelModels
from core.catalog import Catalog, CatalogEntry, UnknownModel, pickle_refusal, scan
from core.params import InvalidParams
from core.sidecar import ModelDefaults
from core.vae_files import VaeFolder
from core.wire import EngineReady


@dataclass(frozen=True)
class ModelPick:
    """The model a job uses: its catalog name ("" for the configured default), defaults and native side."""

    name: str = ""
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    native: int | None = None  # None: the engine's loaded default model's size
    family: str | None = None  # None: the default model's, whose memory budget the engine reports itself
    vae: str = ""  # the VAE the model names (its sidecar's, or one beside it); "": none

    def native_size(self, engine: EngineReady) -> tuple[int, int]:
        """The width and height the model was trained at (the engine reports its default model's)."""
        return (self.native, self.native) if self.native else (engine.native_width, engine.native_height)


class Models:
    """SDBOT_MODELS_DIR as last scanned, the models only workers have, SDBOT_MODEL, and the admins' per-channel
    defaults."""

    def __init__(
        self,
        *,
        catalog: Catalog | None = None,
        folder: Path | None = None,
        default_location: str = "",
        allow_pickle: bool = False,
        channels: ChannelModels | None = None,
        vaes: VaeFolder | None = None,
    ) -> None:
        self.vaes = vaes
        self.folder = folder
        self.default_location = default_location
        self.allow_pickle = allow_pickle
        self.channels = channels
        self._remote: dict[str, CatalogEntry] = {}
        self._use(catalog or Catalog())

    def _use(self, catalog: Catalog) -> None:
        self.local = catalog
        # What members may name: this folder's models, and those only a worker has (the folder's win a name).
        self.catalog = Catalog({**self._remote, **catalog.entries}, catalog.skipped)
        # SDBOT_MODEL's entry when it is (or points into) the models folder; the queue asks for every job.
        self.default_entry = catalog.by_path(self.default_location) if self.default_location else None

    def use_remote(self, entries: Mapping[str, CatalogEntry]) -> None:
        """The models the connected workers have besides (by name); offered and accepted as long as one has it."""
        self._remote = dict(entries)
        self._use(self.local)

    def choices(self, typed: str) -> list[app_commands.Choice[str]]:
        """Autocomplete for a `model:` option: the names matching what was typed, with their descriptions."""
        return [app_commands.Choice(name=e.label(), value=e.name) for e in self.catalog.matching(typed)]

    def has_locally(self, name: str) -> bool:
        """Whether the bot's own engines can draw a job naming `name` ("" the default model)."""
        return not name or name in self.local.entries

    async def rescan(self) -> Catalog:
        """Scan the folder again (off the event loop) and use what it finds; CatalogError keeps what there was."""
        if self.folder is not None:
            self._use(await asyncio.to_thread(scan, self.folder, self.vaes))
        return self.catalog

    def entry(self, name: str) -> CatalogEntry:
        """The usable entry called `name`, or InvalidParams with a sentence (close matches, or the pickle policy)."""
        try:
            entry = self.catalog.find(name)
        except UnknownModel as exc:
            raise InvalidParams(str(exc)) from None
        if entry.pickle and not self.allow_pickle:
            raise InvalidParams(pickle_refusal(entry.name))
        return entry

    def pick(self, name: str | None, channel_id: int | None) -> ModelPick:
        """What the member named, else the channel's default (while it is still installed), else SDBOT_MODEL."""
        channel_default = self.channels.get(channel_id) if self.channels is not None else None
        if not name and channel_default is not None and self.catalog.get(channel_default) is not None:
            name = channel_default
        entry = self.entry(name.strip()) if name else None
        default = self.default_entry
        if entry is None or entry is default:
            # The engine has the default model loaded and reports its native size itself.
            return ModelPick(
                entry.name if entry else "",
                default.defaults if default else ModelDefaults(),
                vae=default.vae if default else "",
            )
        return ModelPick(entry.name, entry.defaults, entry.native, entry.family.value, entry.vae)

    def _other(self, name: str) -> CatalogEntry | None:
        """The installed model a job's name resolves to; None for the default model, however it is named (and for
        a name no longer installed, which intake refuses anyway)."""
        entry = self.catalog.get(name) if name else None
        return None if entry is None or entry is self.default_entry else entry

    def family(self, name: str) -> str | None:
        """The family of the model a job names, as the engine keys its memory budgets; None for the default
        model, whose budget the engine reports itself."""
        entry = self._other(name)
        return entry.family.value if entry is not None else None

    def key(self, name: str) -> Hashable:
        """One key per model whatever name reached it, so the queue can group jobs that need the same weights."""
        entry = self._other(name)
        return str(entry.path) if entry is not None else ""
