"""Switching models: the active one on the device, the last few in CPU RAM for a fast switch back."""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.catalog import Catalog, UnknownModel, pickle_refusal
from core.checkpoint_header import Family, HeaderError
from core.params import InvalidParams
from core.source import ModelSource, SourceKind
from engine.generate import Painter
from engine.loading import FAMILY_CONFIGS, LoadedModel, ModelLoadError, file_family, load_model

log = logging.getLogger(__name__)

CPU = torch.device("cpu")


@dataclass(frozen=True)
class ModelRequest:
    """What to load for a model name: where it is, what infotext calls it."""

    key: str  # the location; one model is one key whatever name reached it
    source: ModelSource
    name: str
    family: Family | None = None  # as the catalog settled it (a sidecar's `prediction` included); None: detect


Loader = Callable[[ModelRequest], LoadedModel]
# A Painter over a loaded model and the inpainting model that goes with it (if any).
PainterFactory = Callable[[LoadedModel, LoadedModel | None], Painter]


class ModelShelf:
    """Hands out the Painter of the model a job names; keeps at most `cache_size` others in CPU RAM.

    Moving a pipeline's modules between the CPU and the device takes a second or two where loading from disk
    takes many; the derived img2img and inpainting pipelines share those modules, so they move along.
    """

    def __init__(
        self,
        default: LoadedModel,
        default_source: ModelSource,
        catalog: Catalog,
        *,
        loader: Loader,
        cache_size: int = 2,
        allow_pickle: bool = False,
        inpaint_model: LoadedModel | None = None,
        make_painter: PainterFactory = Painter,
    ) -> None:
        self.default = ModelRequest(default_source.location, default_source, default.info.name)
        self.catalog = catalog
        self.cache_size = cache_size
        self.allow_pickle = allow_pickle
        self._loader = loader
        self._make_painter = make_painter
        # The owner's inpainting checkpoint matches the default model's family only.
        self._inpaint_model = inpaint_model
        # The model on the device (None after a switch that failed to load).
        self._active: tuple[str, Painter] | None = (self.default.key, make_painter(default, inpaint_model))
        self._cached: OrderedDict[str, Painter] = OrderedDict()

    def cached_keys(self) -> list[str]:
        """The models kept in CPU RAM, least recently used first."""
        return list(self._cached)

    def request(self, name: str) -> ModelRequest:
        """Where the model called `name` is ("" is the default); InvalidParams with a sentence when it cannot be."""
        if not name:
            return self.default
        entry = self.catalog.get(name)
        if entry is None:
            try:
                entry = self.catalog.find(name)
            except UnknownModel as exc:
                raise InvalidParams(str(exc)) from None
        if entry.path.resolve() == Path(self.default.key).resolve():
            return self.default
        if entry.pickle and not self.allow_pickle:
            raise InvalidParams(pickle_refusal(entry.name))
        kind = SourceKind.FOLDER if entry.is_folder else SourceKind.FILE
        # Single files only: a folder says its own family in its configs; a pickle is read when it loads.
        family = None if entry.pickle or entry.is_folder else entry.family
        return ModelRequest(str(entry.path), ModelSource(kind, str(entry.path)), entry.name, family)

    def reload(self, catalog: Catalog) -> None:
        """Take a rescanned catalog; models already loaded stay loaded."""
        self.catalog = catalog

    def painter(self, name: str) -> Painter:
        """The Painter for model `name` on the device, switching to it if needed."""
        wanted = self.request(name)
        if self._active is not None and self._active[0] == wanted.key:
            return self._active[1]
        # Taken out of the cache before the active model goes in, so parking cannot evict the one wanted.
        painter = self._cached.pop(wanted.key, None)
        if self._active is not None:
            key, previous = self._active
            self._active = None
            self._park(key, previous)
            del previous
            _free()
        if painter is not None:
            log.info("switching to %s from CPU RAM", wanted.name)
            _move(painter.model.pipe, painter.model.device)
        else:
            log.info("switching to %s: loading %s", wanted.name, wanted.key)
            try:
                inpaint = self._inpaint_model if wanted is self.default else None
                painter = self._make_painter(self._loader(wanted), inpaint)
            except ModelLoadError as exc:
                log.error("%s", exc)
                raise InvalidParams(
                    f"The model {wanted.name} could not be loaded; the owner can find why in the bot's log."
                ) from None
        self._active = (wanted.key, painter)
        return painter

    def _park(self, key: str, painter: Painter) -> None:
        """Move the active model to CPU RAM (or, with no cache, let it go), dropping the least recently used."""
        # Off the device even when it is let go: a result still being encoded may hold the painter a moment.
        painter.release_caches()
        _move(painter.model.pipe, CPU)
        if self.cache_size > 0:
            self._cached[key] = painter
            while len(self._cached) > self.cache_size:
                dropped, _ = self._cached.popitem(last=False)
                log.info("dropping %s from CPU RAM", dropped)


def _move(pipe: Any, device: torch.device) -> None:
    """`pipe.to(device)`, quiet: diffusers warns about fp32-only modules these pipelines do not have."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        pipe.to(device)
    finally:
        logger.setLevel(previous)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def catalog_loader(device: torch.device, allow_pickle: bool, configs: Mapping[Family, Path] = FAMILY_CONFIGS) -> Loader:
    """Load a catalog model on `device`, named as the catalog names it, single files with the family's `configs`."""

    def load(request: ModelRequest) -> LoadedModel:
        family = request.family
        if family is None and request.source.kind is SourceKind.FILE:
            try:
                family = file_family(Path(request.source.location))
            except HeaderError as exc:
                raise ModelLoadError(f"SDBOT_MODELS_DIR: {request.source.location}: {exc}") from None
        return load_model(
            request.source,
            device,
            configs[family] if family is not None else None,
            family=family,
            name=request.name,
            setting="SDBOT_MODELS_DIR",
            allow_pickle=allow_pickle,
        )

    return load
