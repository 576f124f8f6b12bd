"""A tiny random-weight SDXL pipeline (two text encoders, pooled and time conditioning), built in code."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from tests.support.tiny_model import NATIVE_SIZE, build_tiny_vae, write_tiny_tokenizer

_TIME_EMBED = 8
# The two text encoders differ in width, as CLIP-L (768) and OpenCLIP-G (1280) do: single-file loading tells
# their weights apart by it. The second one's pooled projection keeps its width.
HIDDEN_1 = 32
HIDDEN_2 = PROJECTION = 48


def _text_config(hidden: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=514,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=hidden,
    )


def build_tiny_sdxl_pipeline(folder: Path, seed: int = 0) -> StableDiffusionXLPipeline:
    """SDXL's shape in miniature, its tokenizers written to `folder`; the native size is the tiny model's.

    The second tokenizer pads with `!` after the end token, as SDXL's OpenCLIP tokenizer does.
    """
    write_tiny_tokenizer(folder / "tokenizer")
    write_tiny_tokenizer(folder / "tokenizer_2")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=NATIVE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=_TIME_EMBED,
        transformer_layers_per_block=(1, 2),
        # Six time ids (original size, crop, target size) and text_encoder_2's pooled projection.
        projection_class_embeddings_input_dim=6 * _TIME_EMBED + HIDDEN_2,
        cross_attention_dim=HIDDEN_1 + HIDDEN_2,  # both text encoders' hidden states side by side
        norm_num_groups=8,
    )
    vae = build_tiny_vae()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config(HIDDEN_1)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(HIDDEN_2)),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2", pad_token="!"),
        unet=unet,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """Save a tiny SDXL pipeline as a diffusers folder (safetensors)."""
    build_tiny_sdxl_pipeline(folder, seed).save_pretrained(folder, safe_serialization=True)
    return folder
