"""The engine's models: catalog files load offline like a civitai download, switching keeps a bounded CPU cache,
pickles are refused unless allowed."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from core.catalog import scan
from core.checkpoint_header import Family
from core.params import GenerationParams, InvalidParams
from core.source import parse_source
from engine.generate import Painter
from engine.loading import LoadedModel, ModelLoadError, file_hash, load_model
from engine.model_shelf import ModelRequest, ModelShelf, catalog_loader
from tests.support.ldm_checkpoint import write_ldm_checkpoint
from tests.support.tiny_model import save_tiny_model

CPU = torch.device("cpu")
FOX = GenerationParams(prompt="a red fox", width=64, height=64, steps=2, seed=7)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A models folder as an owner fills it: two civitai-style single files (different weights) and a pickle."""
    folder = tmp_path_factory.mktemp("shelf") / "models"
    write_ldm_checkpoint(tiny_model_dir, folder / "tiny-ldm.safetensors")
    other = save_tiny_model(tmp_path_factory.mktemp("other") / "tiny-other", seed=1)
    write_ldm_checkpoint(other, folder / "other-ldm.safetensors")
    # A pickle as old checkpoints are saved: the LDM state dict under "state_dict".
    torch.save({"state_dict": load_file(folder / "tiny-ldm.safetensors")}, folder / "old-pickle.ckpt")
    return folder


@pytest.fixture(scope="module")
def tiny_configs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's configs and tokenizer, standing in for the shipped SD 1.x ones (same layout, tiny shapes)."""
    folder = tmp_path_factory.mktemp("configs") / "sd1"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return folder


@pytest.fixture(scope="module")
def default(tiny_model_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(tiny_model_dir)), CPU)


class CountingLoader:
    """The real catalog loader, counting what it has to load from disk."""

    def __init__(self, tiny_configs: Path, allow_pickle: bool = False) -> None:
        self.load = catalog_loader(CPU, allow_pickle, {Family.SD1: tiny_configs})
        self.loaded: list[str] = []

    def __call__(self, request: ModelRequest) -> LoadedModel:
        self.loaded.append(request.name)
        return self.load(request)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def shelf_for(
    default: LoadedModel, tiny_model_dir: Path, models: Path, loader: CountingLoader, **options: object
) -> ModelShelf:
    return ModelShelf(default, parse_source(str(tiny_model_dir)), scan(models), loader=loader, **options)  # type: ignore[arg-type]


def test_a_single_file_in_the_models_folder_loads_offline_and_is_named_and_hashed(
    default: LoadedModel, tiny_model_dir: Path, models: Path, tiny_configs: Path
) -> None:
    shelf = shelf_for(default, tiny_model_dir, models, CountingLoader(tiny_configs))
    painter = shelf.painter("tiny-ldm")
    assert painter.model.family is Family.SD1
    (image,) = painter.paint(FOX)
    digest = hashlib.sha256((models / "tiny-ldm.safetensors").read_bytes()).hexdigest()[:10]
    assert image.infotext.endswith(f"Model hash: {digest}, Model: tiny-ldm")
    # The same weights as the folder they were converted from: the same picture.
    (from_folder,) = shelf.painter("").paint(FOX)
    assert np.array_equal(pixels(from_folder.png), pixels(image.png))
    assert from_folder.infotext.endswith(f"Model: {default.info.name}")


def test_switching_keeps_a_bounded_cache_in_cpu_ram(
    default: LoadedModel, tiny_model_dir: Path, models: Path, tiny_configs: Path
) -> None:
    loader = CountingLoader(tiny_configs)
    shelf = shelf_for(default, tiny_model_dir, models, loader, cache_size=1)
    first = shelf.painter("tiny-ldm")
    assert loader.loaded == ["tiny-ldm"] and shelf.cached_keys() == [str(tiny_model_dir)]
    other = shelf.painter("other-ldm")
    # Only one model waits in CPU RAM: the default was dropped, tiny-ldm is kept.
    assert shelf.cached_keys() == [str(models / "tiny-ldm.safetensors")]
    assert shelf.painter("tiny-ldm") is first  # back from RAM, not from disk
    assert shelf.painter("other-ldm") is other
    assert loader.loaded == ["tiny-ldm", "other-ldm"]
    shelf.painter("")  # the default was dropped: loaded again
    assert loader.loaded == ["tiny-ldm", "other-ldm", default.info.name]
    assert len(shelf.cached_keys()) == 1
    a, b = shelf.painter("tiny-ldm").paint(FOX)[0], shelf.painter("other-ldm").paint(FOX)[0]
    assert not np.array_equal(pixels(a.png), pixels(b.png)) and "Model: other-ldm" in b.infotext


def test_without_a_cache_every_switch_loads_from_disk(
    default: LoadedModel, tiny_model_dir: Path, models: Path, tiny_configs: Path
) -> None:
    loader = CountingLoader(tiny_configs)
    shelf = shelf_for(default, tiny_model_dir, models, loader, cache_size=0)
    shelf.painter("tiny-ldm")
    shelf.painter("other-ldm")
    shelf.painter("tiny-ldm")
    assert loader.loaded == ["tiny-ldm", "other-ldm", "tiny-ldm"] and shelf.cached_keys() == []


def test_the_default_by_its_catalog_name_is_the_default(default: LoadedModel, models: Path, tiny_configs: Path) -> None:
    """SDBOT_MODEL may point into the models folder: naming it must not load it twice."""
    source = parse_source(str(models / "tiny-ldm.safetensors"))
    loader = CountingLoader(tiny_configs)
    shelf = ModelShelf(default, source, scan(models), loader=loader)
    assert shelf.painter("tiny-ldm") is shelf.painter("") and loader.loaded == []


def test_unknown_model_is_a_sentence_with_close_matches(
    default: LoadedModel, tiny_model_dir: Path, models: Path, tiny_configs: Path
) -> None:
    shelf = shelf_for(default, tiny_model_dir, models, CountingLoader(tiny_configs))
    with pytest.raises(InvalidParams, match="no model called `tiny`: did you mean `tiny-ldm`"):
        shelf.painter("tiny")


def test_a_pickle_is_refused_with_a_sentence(
    default: LoadedModel, tiny_model_dir: Path, models: Path, tiny_configs: Path
) -> None:
    loader = CountingLoader(tiny_configs)
    shelf = shelf_for(default, tiny_model_dir, models, loader)
    with pytest.raises(InvalidParams, match=r"old-pickle is a pickle checkpoint .* SDBOT_ALLOW_PICKLE=1"):
        shelf.painter("old-pickle")
    assert loader.loaded == []
    with pytest.raises(ModelLoadError, match="is a pickle checkpoint, which can run code"):
        load_model(parse_source(str(models / "old-pickle.ckpt"), allow_pickle=True), CPU)


def test_a_pickle_loads_with_the_flag_through_the_weights_only_unpickler(
    default: LoadedModel, tiny_model_dir: Path, models: Path, tiny_configs: Path
) -> None:
    shelf = shelf_for(
        default, tiny_model_dir, models, CountingLoader(tiny_configs, allow_pickle=True), allow_pickle=True
    )
    pickled = shelf.painter("old-pickle").paint(FOX)[0]
    safe = shelf.painter("tiny-ldm").paint(FOX)[0]
    assert "Model: old-pickle" in pickled.infotext
    # The same weights, whichever file they came from.
    assert np.array_equal(pixels(pickled.png), pixels(safe.png))


def test_a_model_that_fails_to_load_fails_the_job_not_the_engine(
    default: LoadedModel, tiny_model_dir: Path, models: Path, tiny_configs: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "models"
    shutil.copytree(models, broken)
    # Right header, wrong shapes: the loader cannot put these weights in the configured model.
    (broken / "tiny-ldm.safetensors").write_bytes((models / "other-ldm.safetensors").read_bytes()[:-64])
    shelf = shelf_for(default, tiny_model_dir, broken, CountingLoader(tiny_configs))
    with pytest.raises(InvalidParams, match="The model tiny-ldm could not be loaded; the owner can find why"):
        shelf.painter("tiny-ldm")
    assert shelf.painter("").paint(FOX)  # the next job, on another model, still draws


def test_a_rescan_brings_new_models(
    default: LoadedModel, tiny_model_dir: Path, models: Path, tiny_configs: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    shelf = shelf_for(default, tiny_model_dir, folder, CountingLoader(tiny_configs))
    with pytest.raises(InvalidParams):
        shelf.painter("other-ldm")
    shutil.copy(models / "other-ldm.safetensors", folder)
    shelf.reload(scan(folder))
    assert isinstance(shelf.painter("other-ldm"), Painter)


def test_a_pickle_that_is_more_than_weights_is_not_loaded(
    default: LoadedModel, tiny_model_dir: Path, tiny_configs: Path, tmp_path: Path
) -> None:
    """Even with the flag, the weights-only unpickler refuses objects (the way a pickle runs code)."""
    folder = tmp_path / "models"
    folder.mkdir()
    torch.save({"state_dict": {}, "callback": shutil.rmtree}, folder / "sneaky.ckpt")
    shelf = shelf_for(
        default, tiny_model_dir, folder, CountingLoader(tiny_configs, allow_pickle=True), allow_pickle=True
    )
    with pytest.raises(InvalidParams, match="The model sneaky could not be loaded"):
        shelf.painter("sneaky")
    assert folder.is_dir()


def test_the_a1111_hash_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"first weights")
    assert file_hash(path) == hashlib.sha256(b"first weights").hexdigest()[:10]
    path.write_bytes(b"other, longer weights")
    assert file_hash(path) == hashlib.sha256(b"other, longer weights").hexdigest()[:10]
