"""SD 2.x and SDXL: the shipped configs and tokenizers, the pipeline each family gets, tiny ones loaded and drawing."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from core.catalog import scan
from core.checkpoint_header import Family
from core.params import SAMPLERS, GenerationParams
from core.source import parse_source
from engine.generate import BatchJob, Painter
from engine.loading import FAMILY_CONFIGS, LoadedModel, ModelLoadError, file_family, load_model, pipeline_class_for
from engine.model_shelf import ModelShelf, catalog_loader
from engine.samplers import make_scheduler
from tests.support.checkpoint_headers import SD1_KEYS, SD2_KEYS, SDXL_KEYS, write_header_only
from tests.support.ldm_sd2_checkpoint import write_sd2_checkpoint
from tests.support.ldm_sdxl_checkpoint import write_sdxl_checkpoint
from tests.support.tiny_model import NATIVE_SIZE, save_tiny_model
from tests.support.tiny_sdxl import save_tiny_sdxl

CPU = torch.device("cpu")
FOX = GenerationParams(prompt="a red fox", width=64, height=64, steps=2, seed=3)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", [Family.SD2, Family.SD2_BASE])
def test_shipped_sd2_configs(family: Family) -> None:
    folder = FAMILY_CONFIGS[family]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder", local_files_only=True))
    assert params(unet) == 865_910_724  # SD 2.x's UNet
    assert unet.config.cross_attention_dim == 1024 and unet.config.sample_size * 8 == family.native
    # OpenCLIP-H without its last layer: SD 2.x conditions on the penultimate one.
    assert (text.config.hidden_size, text.config.num_hidden_layers, text.config.hidden_act) == (1024, 23, "gelu")
    scheduler = DDIMScheduler.load_config(folder / "scheduler")
    assert scheduler["prediction_type"] == ("v_prediction" if family is Family.SD2 else "epsilon")


def test_shipped_sdxl_configs() -> None:
    folder = FAMILY_CONFIGS[Family.SDXL]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder", local_files_only=True))
        text_2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(folder / "text_encoder_2", local_files_only=True)
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    assert params(unet) == 2_567_463_684  # SDXL base's UNet
    assert params(text) == 123_060_480  # CLIP ViT-L
    assert params(text_2) == 694_659_840  # OpenCLIP ViT-bigG with its projection
    assert vae.config.scaling_factor == 0.13025 and vae.config.force_upcast
    assert StableDiffusionXLPipeline.load_config(folder)["_class_name"] == "StableDiffusionXLPipeline"


@pytest.mark.parametrize(
    ("family", "subfolder", "pad"),
    [
        (Family.SD1, "tokenizer", 49407),
        (Family.SD2, "tokenizer", 0),
        (Family.SD2_BASE, "tokenizer", 0),
        (Family.SDXL, "tokenizer", 49407),
        (Family.SDXL, "tokenizer_2", 0),
    ],
)
def test_shipped_tokenizers_share_the_clip_vocabulary_and_pad_as_released(
    family: Family, subfolder: str, pad: int
) -> None:
    """OpenCLIP's tokenizers pad with "!" (id 0), CLIP-L's with the end token: as diffusers' released repos do."""
    tokenizer = CLIPTokenizer.from_pretrained(FAMILY_CONFIGS[family] / subfolder, local_files_only=True)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer("a photo", padding="max_length", max_length=77).input_ids
    assert padded[:4] == [49406, 320, 1125, 49407] and set(padded[4:]) == {pad}
    vocab = (FAMILY_CONFIGS[Family.SD1] / "tokenizer" / "vocab.json").read_bytes()
    assert (FAMILY_CONFIGS[family] / subfolder / "vocab.json").read_bytes() == vocab


@pytest.mark.parametrize(
    ("keys", "family", "pipeline"),
    [
        (SD1_KEYS, Family.SD1, StableDiffusionPipeline),
        (SD2_KEYS, Family.SD2, StableDiffusionPipeline),
        (SDXL_KEYS, Family.SDXL, StableDiffusionXLPipeline),
    ],
)
def test_each_family_gets_its_pipeline(tmp_path: Path, keys: dict, family: Family, pipeline: type) -> None:
    path = write_header_only(tmp_path / "model.safetensors", keys)
    assert file_family(path) is family
    assert pipeline_class_for(family) is pipeline


def test_sdxl_inpainting_checkpoints_are_refused_with_a_line(sdxl_dir: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model(parse_source(str(sdxl_dir)), CPU, inpainting=True, setting="SDBOT_INPAINT_MODEL")
    assert str(caught.value) == (
        f"SDBOT_INPAINT_MODEL: could not load {sdxl_dir}: an SDXL inpainting checkpoint is not supported:"
        " use an SD 1.x inpainting model"
    )


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sdxl(tmp_path_factory.mktemp("xl") / "models" / "tiny-xl")


@pytest.fixture(scope="module")
def sdxl(sdxl_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(sdxl_dir)), CPU)


def test_a_tiny_sdxl_folder_is_detected_and_loaded_with_the_sdxl_pipeline(sdxl: LoadedModel, sdxl_dir: Path) -> None:
    assert sdxl.family is Family.SDXL and isinstance(sdxl.pipe, StableDiffusionXLPipeline)
    assert sdxl.native_size == NATIVE_SIZE
    entry = scan(sdxl_dir.parent).entries["tiny-xl"]
    assert entry.family is Family.SDXL and entry.native == NATIVE_SIZE


def test_a_tiny_sdxl_draws_through_the_painter_with_sdxl_derived_pipelines(sdxl: LoadedModel) -> None:
    painter = Painter(sdxl)
    (image,) = painter.paint(FOX)
    assert Image.open(io.BytesIO(image.png)).size == (64, 64)
    assert image.infotext.endswith(f"Model hash: {sdxl.info.hash}, Model: tiny-xl")
    assert painter.paint(FOX)[0].png == image.png  # seeded
    (varied,) = painter.paint(FOX.variation((64, 64), "subtle", 5), source=image.png)
    assert isinstance(painter.img2img, StableDiffusionXLImg2ImgPipeline)
    (zoomed,) = painter.paint(FOX.zoomed_out((64, 64), 2.0, 5), source=image.png)
    assert isinstance(painter.inpaint, StableDiffusionXLInpaintPipeline)
    assert varied.png != image.png and Image.open(io.BytesIO(zoomed.png)).size == (64, 64)


def vae_casts(model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """The whole pipeline in fp16, as on CUDA; returns the list its VAE's dtype casts are written to."""
    model.pipe.to(torch.float16)
    vae = model.pipe.vae
    assert vae.config.force_upcast, "every AutoencoderKL config asks for it, SD 1.x's too"
    casts: list[torch.dtype] = []
    cast = vae.to

    def counted(dtype: torch.dtype) -> object:
        casts.append(dtype)
        return cast(dtype)

    monkeypatch.setattr(vae, "to", counted)
    return casts


def test_an_sdxl_vae_in_fp16_decodes_a_batch_in_fp32_casting_once(
    sdxl_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_model(parse_source(str(sdxl_dir)), CPU)
    casts = vae_casts(model, monkeypatch)
    drawn = Painter(replace(model, dtype=torch.float16)).draw([BatchJob(replace(FOX, count=3))])
    assert casts == [torch.float32, torch.float16], "up once for the three images, and back"
    assert model.pipe.vae.dtype == torch.float16
    for _seed, image in drawn[0].images:
        assert np.asarray(image).std() > 0, "not a flat (overflowed) image"


def test_an_sd1_vae_in_fp16_decodes_in_fp16(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(parse_source(str(tiny_model_dir)), CPU)
    casts = vae_casts(model, monkeypatch)
    drawn = Painter(replace(model, dtype=torch.float16)).draw([BatchJob(replace(FOX, count=2))])
    assert casts == [] and len(drawn[0].images) == 2, "only SDXL's VAE overflows in fp16"


def test_switching_between_sd1_and_sdxl(sdxl: LoadedModel, sdxl_dir: Path, tiny_model_dir: Path) -> None:
    default = load_model(parse_source(str(tiny_model_dir)), CPU)
    shelf = ModelShelf(
        default, parse_source(str(tiny_model_dir)), scan(sdxl_dir.parent), loader=catalog_loader(CPU, False)
    )
    xl = shelf.painter("tiny-xl")
    assert isinstance(xl.model.pipe, StableDiffusionXLPipeline) and xl.paint(FOX)
    assert isinstance(shelf.painter("").model.pipe, StableDiffusionPipeline)
    assert shelf.painter("tiny-xl") is xl


@pytest.fixture(scope="module")
def sdxl_file(sdxl_dir: Path) -> Path:
    """The tiny SDXL as a civitai-style single file, beside its folder in the models folder."""
    out = sdxl_dir.parent / "tiny-xl-file.safetensors"
    write_sdxl_checkpoint(sdxl_dir, out)
    return out


@pytest.fixture(scope="module")
def sdxl_configs(sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL's configs and tokenizers, standing in for the shipped SDXL ones (same layout, tiny shapes)."""
    folder = tmp_path_factory.mktemp("xl-configs") / "sdxl"
    shutil.copytree(sdxl_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder


def test_a_tiny_sdxl_single_file_loads_offline_with_the_same_weights_and_image(
    sdxl: LoadedModel, sdxl_file: Path, sdxl_configs: Path, tiny_model_dir: Path
) -> None:
    entry = scan(sdxl_file.parent).entries["tiny-xl-file"]
    assert entry.family is Family.SDXL and entry.native == Family.SDXL.native
    default = load_model(parse_source(str(tiny_model_dir)), CPU)
    loader = catalog_loader(CPU, False, {Family.SDXL: sdxl_configs})
    shelf = ModelShelf(default, parse_source(str(tiny_model_dir)), scan(sdxl_file.parent), loader=loader)
    painter = shelf.painter("tiny-xl-file")
    assert isinstance(painter.model.pipe, StableDiffusionXLPipeline)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        loaded, original = getattr(painter.model.pipe, name).state_dict(), getattr(sdxl.pipe, name).state_dict()
        assert loaded.keys() == original.keys(), name
        assert all(torch.equal(loaded[k], t) for k, t in original.items()), name
    (from_file,) = painter.paint(FOX)
    (from_folder,) = Painter(sdxl).paint(FOX)
    assert np.array_equal(pixels(from_file.png), pixels(from_folder.png))
    assert from_file.infotext.endswith("Model: tiny-xl-file")


@pytest.fixture(scope="module")
def sd2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as SD 2.x is: v-prediction (its text encoder goes to OpenCLIP's layout in the file)."""
    folder = save_tiny_model(tmp_path_factory.mktemp("sd2") / "tiny-sd2-folder", seed=2)
    scheduler = folder / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "v_prediction"}))
    return folder


def test_a_tiny_sd2_single_file_loads_as_v_prediction_with_the_same_weights_and_image(
    sd2_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    write_sd2_checkpoint(sd2_dir, tmp_path / "models" / "tiny-sd2.safetensors")
    entry = scan(tmp_path / "models").entries["tiny-sd2"]
    assert entry.family is Family.SD2 and entry.native == 768
    configs = tmp_path / "configs"
    shutil.copytree(sd2_dir, configs, ignore=shutil.ignore_patterns("*.safetensors"))
    default = load_model(parse_source(str(tiny_model_dir)), CPU)
    loader = catalog_loader(CPU, False, {Family.SD2: configs})
    painter = ModelShelf(default, parse_source(str(tiny_model_dir)), scan(tmp_path / "models"), loader=loader).painter(
        "tiny-sd2"
    )
    folder = load_model(parse_source(str(sd2_dir)), CPU)
    for name in ("unet", "vae", "text_encoder"):
        loaded, original = getattr(painter.model.pipe, name).state_dict(), getattr(folder.pipe, name).state_dict()
        assert loaded.keys() == original.keys(), name
        assert all(torch.equal(loaded[k], t) for k, t in original.items()), name
    # Every sampler keeps the checkpoint's v-prediction: drawn as epsilon, SD 2.x-v images are noise.
    for sampler in SAMPLERS:
        assert make_scheduler(sampler, painter.model.pipe.scheduler.config).config.prediction_type == "v_prediction"
    assert np.array_equal(pixels(painter.paint(FOX)[0].png), pixels(Painter(folder).paint(FOX)[0].png))
