"""A random-weight pipeline in Stable Diffusion 1.5's exact shapes, for benchmarks that must not download."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from engine.loading import SD15_CONFIG


def save_sd15_shaped(folder: Path, device: torch.device) -> Path:
    """Build SD 1.5's UNet, CLIP-L text encoder and VAE with random weights on `device`, save them in fp16."""
    torch.manual_seed(0)
    # Initialising 860M parameters on the CPU takes minutes; on the GPU, seconds.
    with device:
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=768,
                num_hidden_layers=12,
                num_attention_heads=12,
                intermediate_size=3072,
                hidden_act="quick_gelu",
                vocab_size=49408,
                max_position_embeddings=77,
                projection_dim=768,
            )
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(SD15_CONFIG / "tokenizer"),
        unet=unet,
        scheduler=DPMSolverMultistepScheduler.from_pretrained(SD15_CONFIG / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    return folder
