"""LoRAs, embeddings and clip skip through the Painter on the tiny model, with files written in the test."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bot.pipeline.engine_client import EngineCommand, JobFailedError, ProcessEngine
from core.network_files import NetworkFolder
from core.params import GenerationParams, InvalidParams
from core.prompt_syntax import split_loras
from core.source import parse_source
from engine.embeddings import load_embeddings
from engine.generate import Painter
from engine.loading import LoadedModel, load_model
from engine.loras import LoraLoader
from tests.support.tiny_networks import (
    give_trained_text_mean,
    write_a1111_embedding,
    write_kohya_lora,
    write_kohya_sdxl_lora,
)
from tests.support.tiny_sdxl import build_tiny_sdxl_pipeline

FOX = GenerationParams(prompt="a red fox", negative_prompt="blurry", width=64, height=64, steps=2, seed=1234)


def load_tiny(folder: Path) -> LoadedModel:
    model = load_model(parse_source(str(folder)), torch.device("cpu"))
    give_trained_text_mean(model.pipe.text_encoder)
    return model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_tiny(tiny_model_dir)


@pytest.fixture(scope="module")
def lora_dir(tiny: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    write_kohya_lora(folder / "detail.safetensors", tiny.pipe, seed=1)
    write_kohya_lora(folder / "styles" / "inkwash.safetensors", tiny.pipe, seed=2)
    return folder


@pytest.fixture(scope="module")
def painter(tiny: LoadedModel, lora_dir: Path) -> Painter:
    return Painter(tiny, loras=LoraLoader(NetworkFolder(lora_dir)))


def pixels(params: GenerationParams, painter: Painter) -> np.ndarray:
    (image,) = painter.paint(params)
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"))


def with_prompt(prompt: str, **changes: object) -> GenerationParams:
    return dataclasses.replace(FOX, prompt=prompt, **changes)  # type: ignore[arg-type]


def a1111_lora_hash(path: Path) -> str:
    """Computed here from the file's bytes: sha256 of everything after the safetensors header, 12 digits."""
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header :]).hexdigest()[:12]


def test_a_lora_changes_the_image_and_is_gone_after_the_job(
    painter: Painter, tiny: LoadedModel, lora_dir: Path
) -> None:
    before = pixels(FOX, painter)
    (image,) = painter.paint(with_prompt("a red fox <lora:detail:0.8>"))
    drawn = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"))
    assert not np.array_equal(drawn, before)
    assert tiny.pipe.get_list_adapters() == {}
    assert np.array_equal(pixels(FOX, painter), before)
    # The prompt stays as the member wrote it; the hash is A1111's, so civitai links the LoRA.
    assert image.infotext.startswith("a red fox <lora:detail:0.8>\nNegative prompt: blurry\n")
    assert image.infotext.endswith(f'Lora hashes: "detail: {a1111_lora_hash(lora_dir / "detail.safetensors")}"')


def test_the_weight_and_several_loras_count(painter: Painter, lora_dir: Path) -> None:
    strong = pixels(with_prompt("a red fox <lora:detail:1>"), painter)
    weak = pixels(with_prompt("a red fox <lora:detail:0.3>"), painter)
    both = painter.paint(with_prompt("a red fox <lora:detail:1> <lora:inkwash:0.5>"))[0]
    assert not np.array_equal(strong, weak)
    assert not np.array_equal(np.asarray(Image.open(io.BytesIO(both.png)).convert("RGB")), strong)
    detail, inkwash = (a1111_lora_hash(lora_dir / p) for p in ("detail.safetensors", "styles/inkwash.safetensors"))
    assert f'Lora hashes: "detail: {detail}, inkwash: {inkwash}"' in both.infotext


def lora_scales(module: torch.nn.Module, adapter: str) -> set[float]:
    """The scale each PEFT LoRA layer of `module` gives `adapter` (its weight × alpha / rank; alpha = rank here)."""
    return {round(layer.scaling[adapter], 6) for layer in module.modules() if adapter in getattr(layer, "scaling", {})}


def test_the_text_encoder_and_the_unet_take_their_own_weights(
    painter: Painter, tiny: LoadedModel, lora_dir: Path
) -> None:
    loader = LoraLoader(NetworkFolder(lora_dir))
    with loader.applied(tiny.pipe, split_loras("a fox <lora:detail:0.8:0.5>")[1]):
        assert lora_scales(tiny.pipe.text_encoder, "sdbot_0") == {0.8}
        assert lora_scales(tiny.pipe.unet, "sdbot_0") == {0.5}
    split = pixels(with_prompt("a red fox <lora:detail:0.8:0.5>"), painter)
    assert np.array_equal(pixels(with_prompt("a red fox <lora:detail:te=0.8:unet=0.5>"), painter), split)
    assert not np.array_equal(pixels(with_prompt("a red fox <lora:detail:0.8>"), painter), split)
    assert not np.array_equal(pixels(with_prompt("a red fox <lora:detail:0.5>"), painter), split)
    (image,) = painter.paint(with_prompt("a red fox <lyco:detail:0.8:0.5>"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB")), split), "lyco is lora"
    assert image.infotext.startswith("a red fox <lyco:detail:0.8:0.5>\nNegative prompt: blurry\n")
    assert 'Lora hashes: "detail: ' in image.infotext


def test_a_repeated_lora_is_one_adapter_at_the_sum_of_its_weights(
    painter: Painter, tiny: LoadedModel, lora_dir: Path
) -> None:
    tags = split_loras("a fox " + "<lora:detail:0.25>" * 4)[1]
    with LoraLoader(NetworkFolder(lora_dir)).applied(tiny.pipe, tags):
        assert tiny.pipe.get_list_adapters() == {"unet": ["sdbot_0"], "text_encoder": ["sdbot_0"]}
        assert lora_scales(tiny.pipe.unet, "sdbot_0") == {1.0}
    repeated = painter.paint(with_prompt("a red fox " + "<lora:detail:0.25>" * 4))[0]
    once = pixels(with_prompt("a red fox <lora:detail:1>"), painter)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(repeated.png)).convert("RGB")), once)
    assert repeated.infotext.count("detail: ") == 1, "one hash per LoRA, as A1111 lists them"


def test_both_sdxl_text_encoders_take_the_text_encoder_weight(tmp_path: Path) -> None:
    pipe = build_tiny_sdxl_pipeline(tmp_path / "sdxl")
    write_kohya_sdxl_lora(tmp_path / "loras" / "wide.safetensors", pipe)
    with LoraLoader(NetworkFolder(tmp_path / "loras")).applied(pipe, split_loras("<lora:wide:0.8:0.5>")[1]):
        assert pipe.get_list_adapters() == {part: ["sdbot_0"] for part in ("unet", "text_encoder", "text_encoder_2")}
        assert lora_scales(pipe.text_encoder, "sdbot_0") == lora_scales(pipe.text_encoder_2, "sdbot_0") == {0.8}
        assert lora_scales(pipe.unet, "sdbot_0") == {0.5}
    assert pipe.get_list_adapters() == {}


def test_another_kind_of_network_is_not_drawn_as_words(painter: Painter) -> None:
    assert np.array_equal(pixels(with_prompt("a red fox <hypernet:anime:1>"), painter), pixels(FOX, painter))


def test_a_job_that_fails_midway_still_removes_its_lora(painter: Painter, tiny: LoadedModel) -> None:
    before = pixels(FOX, painter)

    def cancel(_step: int, _total: int) -> None:
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        painter.paint(with_prompt("a red fox <lora:detail:0.8>"), cancel)
    assert tiny.pipe.get_list_adapters() == {}
    assert np.array_equal(pixels(FOX, painter), before)


def test_an_unknown_or_unfitting_lora_is_a_sentence_for_the_member(painter: Painter, tmp_path: Path) -> None:
    with pytest.raises(InvalidParams, match="There is no LoRA named 'detial': did you mean detail"):
        painter.paint(with_prompt("a red fox <lora:detial:0.8>"))
    other = load_tiny_sdxl_shaped_lora(tmp_path)
    with pytest.raises(InvalidParams, match="The LoRA 'wide' does not fit this model"):
        Painter(painter.model, loras=LoraLoader(NetworkFolder(other))).paint(with_prompt("a fox <lora:wide>"))
    assert painter.model.pipe.get_list_adapters() == {}


def load_tiny_sdxl_shaped_lora(folder: Path) -> Path:
    """A LoRA whose layers are wider than the tiny model's, as an SDXL LoRA is for SD 1.5."""
    from safetensors.torch import save_file

    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file(
        {
            f"{key}.lora_down.weight": torch.ones(4, 640),
            f"{key}.lora_up.weight": torch.ones(640, 4),
            f"{key}.alpha": torch.tensor(4.0),
        },
        str(folder / "wide.safetensors"),
    )
    return folder


def test_clip_skip_changes_the_image_and_is_recorded(painter: Painter) -> None:
    default = painter.paint(FOX)[0]
    last = painter.paint(dataclasses.replace(FOX, clip_skip=1))[0]
    skipped = painter.paint(dataclasses.replace(FOX, clip_skip=2))[0]
    assert default.png == last.png and "Clip skip" not in last.infotext
    assert skipped.png != default.png
    assert "Seed: 1234, Size: 64x64, Model hash: " in skipped.infotext
    assert skipped.infotext.endswith(", Model: tiny-sd, Clip skip: 2")


def test_an_embedding_is_used_by_its_file_name(tiny_model_dir: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    folder = tmp_path / "embeddings"
    a1111 = write_a1111_embedding(folder / "fancystyle.safetensors", width=32, vectors=3)
    # The diffusers format: one tensor under the token it was trained as; the file name is what prompts use.
    from safetensors.torch import save_file

    save_file(
        {"<cat-toy>": torch.randn(32, generator=torch.Generator().manual_seed(5))}, str(folder / "cattoy.safetensors")
    )
    with_embeddings = load_tiny(tiny_model_dir)
    embeddings = load_embeddings(with_embeddings.pipe, NetworkFolder(folder))
    assert sorted(embeddings.hashes) == ["cattoy", "fancystyle"]
    plain, loaded = Painter(tiny), Painter(with_embeddings, embeddings=embeddings)
    negative = dataclasses.replace(FOX, negative_prompt="fancystyle, blurry")
    assert not np.array_equal(pixels(negative, loaded), pixels(negative, plain))
    assert not np.array_equal(pixels(with_prompt("a cattoy"), loaded), pixels(with_prompt("a cattoy"), plain))
    # Loading them leaves prompts that do not use them alone.
    assert np.array_equal(pixels(FOX, loaded), pixels(FOX, plain))
    (image,) = loaded.paint(negative)
    ti_hash = hashlib.sha256(a1111.read_bytes()).hexdigest()[:12]
    assert image.infotext.endswith(f'TI hashes: "fancystyle: {ti_hash}"')


async def test_the_engine_process_reads_both_folders(tiny_model_dir: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    loras = tmp_path / "loras"
    write_kohya_lora(loras / "detail.safetensors", tiny.pipe, seed=1)
    embeddings = tmp_path / "embeddings"
    write_a1111_embedding(embeddings / "badhands.safetensors", width=32)
    command = EngineCommand(
        model=str(tiny_model_dir), device="cpu", lora_dir=str(loras), embeddings_dir=str(embeddings)
    )
    engine = ProcessEngine(command)
    await engine.start()
    try:
        params = dataclasses.replace(FOX, prompt="a fox <lora:detail:0.5>", negative_prompt="badhands", steps=1)
        (image,) = (await engine.generate("job-1", params, lambda _progress: None)).images
        assert 'Lora hashes: "detail: ' in image.infotext and 'TI hashes: "badhands: ' in image.infotext
        with pytest.raises(JobFailedError, match="There is no LoRA named 'detial': did you mean detail"):
            await engine.generate("job-2", dataclasses.replace(params, prompt="a fox <lora:detial>"), print)
    finally:
        await engine.close()
