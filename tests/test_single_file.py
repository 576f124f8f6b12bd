"""Single-file (civitai-style LDM `.safetensors`) checkpoints load offline through `from_single_file`."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    infer_diffusers_model_type,
)
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from core.checkpoint_header import CONFIGS
from core.source import parse_source
from engine.loading import LoadedModel, load_model
from tests.support.ldm_checkpoint import to_ldm_state_dict, write_ldm_checkpoint
from tests.support.tiny_model import NATIVE_SIZE

SD15_CONFIGS = CONFIGS / "sd15"
COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def tiny_folder(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="module")
def tiny_configs(tiny_folder: Path) -> Path:
    """The tiny pipeline's configs and tokenizer without its weights: the weights must come from the single file."""
    folder = tiny_folder.parent / "configs"
    shutil.copytree(tiny_folder, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return folder


@pytest.fixture(scope="module")
def tiny_file(tiny_folder: Path) -> Path:
    out = tiny_folder.parent / "tiny-ldm.safetensors"
    write_ldm_checkpoint(tiny_folder, out)
    return out


@pytest.fixture(scope="module")
def folder_pipe(tiny_folder: Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(tiny_folder, local_files_only=True)


@pytest.fixture(scope="module")
def single_file_model(tiny_file: Path, tiny_configs: Path) -> LoadedModel:
    """Loaded through the engine's own loader, as SDBOT_MODEL=<file>.safetensors would be."""
    return load_model(parse_source(str(tiny_file)), torch.device("cpu"), single_file_config=tiny_configs)


@pytest.fixture(scope="module")
def single_file_pipe(single_file_model: LoadedModel) -> StableDiffusionPipeline:
    return single_file_model.pipe


def test_single_file_is_named_and_hashed_as_a1111_does(single_file_model: LoadedModel, tiny_file: Path) -> None:
    assert single_file_model.info.name == "tiny-ldm"
    assert single_file_model.info.hash == hashlib.sha256(tiny_file.read_bytes()).hexdigest()[:10]


def test_written_file_has_the_original_layout(tiny_file: Path) -> None:
    with safe_open(str(tiny_file), framework="pt") as f:
        keys = set(f.keys())
        vae_q = f.get_slice("first_stage_model.decoder.mid.attn_1.q.weight").get_shape()
    prefixes = {"model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."}
    assert all(any(k.startswith(p) for p in prefixes) for k in keys)
    assert {
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.down.0.block.0.norm1.weight",
        "first_stage_model.decoder.up.1.upsample.conv.weight",
        "first_stage_model.post_quant_conv.weight",
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
    } <= keys
    assert len(vae_q) == 4 and vae_q[2:] == [1, 1]  # LDM's VAE attention is 1×1 convolutions


def test_single_file_loads_the_same_weights_offline(
    tiny_folder: Path, folder_pipe: StableDiffusionPipeline, single_file_pipe: StableDiffusionPipeline
) -> None:
    for name in COMPONENTS:
        loaded = getattr(single_file_pipe, name).state_dict()
        original = getattr(folder_pipe, name).state_dict()
        assert loaded.keys() == original.keys(), name
        for key, tensor in original.items():
            assert not loaded[key].is_meta, f"{name}.{key} was not in the file"
            assert torch.equal(loaded[key], tensor), f"{name}.{key}"
    assert type(single_file_pipe.scheduler) is type(folder_pipe.scheduler)
    assert single_file_pipe.tokenizer("a cat").input_ids == folder_pipe.tokenizer("a cat").input_ids


def test_single_file_draws_the_same_image(
    folder_pipe: StableDiffusionPipeline, single_file_pipe: StableDiffusionPipeline
) -> None:
    def draw(pipe: StableDiffusionPipeline):
        return pipe(
            "a cat in a hat",
            height=NATIVE_SIZE,
            width=NATIVE_SIZE,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(7),
            output_type="np",
        ).images

    assert (draw(single_file_pipe) == draw(folder_pipe)).all()


def test_shipped_tokenizer_is_clip_vit_l() -> None:
    tokenizer = CLIPTokenizer.from_pretrained(SD15_CONFIGS / "tokenizer", local_files_only=True)
    assert len(tokenizer) == 49408
    assert tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    assert tokenizer.model_max_length == 77
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("A Photo of a CAT").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # lower-cased
    assert tokenizer("masterpiece, best quality").input_ids == [49406, 12066, 267, 949, 3027, 49407]
    padded = tokenizer("a photo", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(padded) == 77 and padded[:4] == [49406, 320, 1125, 49407] and set(padded[3:]) == {49407}


def test_shipped_configs_are_sd15() -> None:
    unet = UNet2DConditionModel.load_config(SD15_CONFIGS / "unet")
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert unet["layers_per_block"] == 2 and unet["attention_head_dim"] == 8
    assert unet["cross_attention_dim"] == 768 and unet["sample_size"] == 64
    assert unet["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert unet["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    vae = AutoencoderKL.load_config(SD15_CONFIGS / "vae")
    assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["latent_channels"] == 4
    assert vae["scaling_factor"] == 0.18215 and vae["sample_size"] == 512
    text = CLIPTextConfig.from_pretrained(SD15_CONFIGS / "text_encoder", local_files_only=True)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (768, 12, 12)
    assert (text.intermediate_size, text.hidden_act, text.vocab_size) == (3072, "quick_gelu", 49408)
    assert text.max_position_embeddings == 77
    index = StableDiffusionPipeline.load_config(SD15_CONFIGS)
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]


def test_converter_matches_diffusers_for_sd15_shapes() -> None:
    """On meta tensors (no memory, no time): SD1.5-shaped weights survive LDM and back through diffusers' own code."""
    unet_config = UNet2DConditionModel.load_config(SD15_CONFIGS / "unet")
    vae_config = AutoencoderKL.load_config(SD15_CONFIGS / "vae")
    text_config = CLIPTextConfig.from_pretrained(SD15_CONFIGS / "text_encoder", local_files_only=True)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config).state_dict()
        vae = AutoencoderKL.from_config(vae_config).state_dict()
        text = CLIPTextModel(text_config).state_dict()
    assert sum(t.numel() for t in unet.values()) == 859_520_964  # SD1.5's UNet
    ldm = to_ldm_state_dict(unet, unet_config, vae, vae_config, text, text_config.to_dict())
    assert infer_diffusers_model_type(ldm) == "v1"

    back = convert_ldm_unet_checkpoint(ldm, unet_config)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in unet.items()}
    back = convert_ldm_vae_checkpoint(ldm, vae_config)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in vae.items()}
    back = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(ldm).items()}
    expected = {k: v.shape for k, v in text.items() if not k.endswith("position_ids")}
    assert {k: v.shape for k, v in back.items() if not k.endswith("position_ids")} == expected
