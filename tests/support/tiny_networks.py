"""LoRA and embedding files for the tiny models, written in the formats civitai ships (kohya, A1111)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def _kohya_pairs(
    state: dict[str, torch.Tensor], prefix: str, model: Any, part: str, generator: torch.Generator
) -> None:
    rank = 4
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and part in name:
            key = prefix + name.replace(".", "_")
            state[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.5
            state[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.5
            state[f"{key}.alpha"] = torch.tensor(float(rank))


def write_kohya_lora(path: Path, pipe: Any, seed: int = 0) -> Path:
    """A kohya-format LoRA (`lora_unet_…`/`lora_te_…` with lora_down, lora_up, alpha) over the pipe's attention."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _kohya_pairs(state, "lora_unet_", pipe.unet, ".attn", generator)
    _kohya_pairs(state, "lora_te_", pipe.text_encoder, "self_attn", generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


def write_kohya_sdxl_lora(path: Path, pipe: Any, seed: int = 0) -> Path:
    """A kohya-format SDXL LoRA: the UNet's attention and both text encoders' (`lora_te1_…`, `lora_te2_…`)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _kohya_pairs(state, "lora_unet_", pipe.unet, ".attn", generator)
    _kohya_pairs(state, "lora_te1_", pipe.text_encoder, "self_attn", generator)
    _kohya_pairs(state, "lora_te2_", pipe.text_encoder_2, "self_attn", generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


def write_a1111_embedding(path: Path, width: int, vectors: int = 2, seed: int = 0) -> Path:
    """An A1111 textual-inversion file: `emb_params` holding `vectors` token vectors of `width` values."""
    generator = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(vectors, width, generator=generator)}, str(path))
    return path


def write_sdxl_embedding(path: Path, width_l: int, width_g: int, vectors: int = 2, seed: int = 0) -> Path:
    """An SDXL textual-inversion file: one tensor per text encoder, `clip_l` and `clip_g`."""
    generator = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "clip_l": torch.randn(vectors, width_l, generator=generator),
        "clip_g": torch.randn(vectors, width_g, generator=generator),
    }
    save_file(state, str(path))
    return path


def give_trained_text_mean(text_encoder: Any, seed: int = 0) -> None:
    """Random final layer-norm parameters, as a trained CLIP has: the freshly built one outputs a mean of zero,
    which A1111's mean restoration after weighting (a division by the new mean) cannot work with."""
    norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(norm.weight.shape, generator=generator))
        norm.bias.copy_(0.2 + 0.3 * torch.randn(norm.bias.shape, generator=generator))
