"""Write a diffusers SDXL pipeline folder as one original-layout (Stability's `sgm`) `.safetensors` file.

The UNet and VAE take SD1.x's LDM names (plus `label_emb` for SDXL's added size/pooled-text conditioning);
the CLIP-L text encoder goes under `conditioner.embedders.0.transformer.`, the OpenCLIP-G one under
`conditioner.embedders.1.model.` in OpenCLIP's own layout (fused q/k/v, `resblocks`, a transposed projection),
the inverse of diffusers' `convert_open_clip_checkpoint`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.support.ldm_checkpoint import (
    UNET_PREFIX,
    VAE_PREFIX,
    _read_config,
    _read_weights,
    _unet_key,
    _vae_key,
    _vae_tensor,
)

CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
_ADD_EMBEDDING = {"add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."}
_OPEN_CLIP_LAYER = {
    "self_attn.out_proj.": "attn.out_proj.",
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
}
_OPEN_CLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def open_clip_state_dict(text: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection weights in OpenCLIP's layout."""
    state: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in text.items():
        short = key.removeprefix("text_model.")
        if short.endswith("position_ids"):
            continue
        if short == "text_projection.weight":
            state["text_projection"] = tensor.T.contiguous()
        elif short in _OPEN_CLIP_TOP:
            state[_OPEN_CLIP_TOP[short]] = tensor
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", short):
            fused.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = tensor
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.*)", short):
            rest = m[2]
            for old, new in _OPEN_CLIP_LAYER.items():
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
            state[f"transformer.resblocks.{m[1]}.{rest}"] = tensor
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {key!r}")
    for name, parts in fused.items():
        state[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return state


def write_sdxl_checkpoint(pipeline_folder: Path, out_file: Path) -> None:
    """Convert a diffusers SDXL folder's UNet, VAE and both text encoders into one single-file checkpoint."""
    folder = Path(pipeline_folder)
    state: dict[str, torch.Tensor] = {}
    unet, unet_config = _read_weights(folder / "unet"), _read_config(folder / "unet")
    for key, tensor in unet.items():
        added = next((new + key[len(old) :] for old, new in _ADD_EMBEDDING.items() if key.startswith(old)), None)
        state[UNET_PREFIX + (added or _unet_key(key, unet_config))] = tensor
    vae, vae_config = _read_weights(folder / "vae"), _read_config(folder / "vae")
    for key, tensor in vae.items():
        ldm_key = VAE_PREFIX + _vae_key(key, vae_config)
        state[ldm_key] = _vae_tensor(ldm_key, tensor)
    for key, tensor in _read_weights(folder / "text_encoder").items():
        if not key.endswith("position_ids"):
            state[CLIP_L_PREFIX + key.removeprefix("text_model.")] = tensor
    for key, tensor in open_clip_state_dict(_read_weights(folder / "text_encoder_2")).items():
        state[OPEN_CLIP_PREFIX + key] = tensor
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_file))
