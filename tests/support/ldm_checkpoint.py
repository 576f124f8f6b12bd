"""Write a diffusers SD1.x pipeline folder as one original-layout ("LDM"/CompVis) `.safetensors` file.

The inverse of what diffusers' `from_single_file` does (`diffusers/loaders/single_file_utils.py`), ported from
diffusers' `scripts/convert_diffusers_to_original_stable_diffusion.py` but driven by each model's config, so it
handles the tiny test model (2 UNet blocks, 1 layer each) as well as the real SD1.5 shapes. The result has the
keys of a civitai-style checkpoint: `model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.transformer.text_model.*`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

# (diffusers, LDM) names that only differ at the top level of the UNet.
_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
# Inside a ResBlock; attention (SpatialTransformer) blocks use the same names in both layouts.
_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}
# Inside the VAE's mid-block attention: LDM uses 1×1 convolutions where diffusers uses linear layers.
_VAE_ATTENTION = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


def _read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        raise ValueError(f"expected exactly one .safetensors file in {folder}, found {[f.name for f in files]}")
    return load_file(files[0])


def _rename(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def _unet_key(key: str, config: dict) -> str:
    """Map one diffusers UNet2DConditionModel key to its LDM name (without the `model.diffusion_model.` prefix)."""
    per_block = config["layers_per_block"] + 1  # input/output blocks per resolution, counting the resampler slot
    for old, new in _UNET_TOP.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * per_block + layer
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_rename(rest, _UNET_RESNET)}"
        return f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per_block}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename(m[2], _UNET_RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * per_block + layer
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_rename(rest, _UNET_RESNET)}"
        return f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
        block = int(m[1])
        # The upsampler follows the last layer's ResBlock, and its attention block when the up block has one.
        slot = 2 if "CrossAttn" in config["up_block_types"][block] else 1
        return f"output_blocks.{block * per_block + per_block - 1}.{slot}.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {key!r}")


def _vae_key(key: str, config: dict) -> str:
    """Map one diffusers AutoencoderKL key to its LDM name (without the `first_stage_model.` prefix)."""
    blocks = len(config["block_out_channels"])
    if m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    # LDM numbers the decoder's up blocks from the lowest resolution's end: diffusers' up_blocks.0 is up.{n-1}.
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        block = blocks - 1 - int(m[1])
        return f"decoder.up.{block}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        return f"{m[1]}.mid.attn_1.{_rename(m[2], _VAE_ATTENTION)}"
    if re.match(r"(encoder|decoder)\.conv_(in|out)\.|(post_)?quant_conv\.", key):
        return key
    raise KeyError(f"no LDM name for VAE key {key!r}")


def _vae_tensor(ldm_key: str, tensor: torch.Tensor) -> torch.Tensor:
    """LDM's mid-block attention uses 1×1 convolutions: give its linear weights two trailing unit dimensions."""
    if re.search(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$", ldm_key) and tensor.ndim == 2:
        return tensor.reshape(*tensor.shape, 1, 1)
    return tensor


def to_ldm_state_dict(
    unet: dict[str, torch.Tensor],
    unet_config: dict,
    vae: dict[str, torch.Tensor],
    vae_config: dict,
    text_encoder: dict[str, torch.Tensor],
    text_encoder_config: dict,
) -> dict[str, torch.Tensor]:
    """Rename (and for the VAE attention, reshape) diffusers state dicts into one LDM-layout state dict."""
    state: dict[str, torch.Tensor] = {}

    def put(key: str, tensor: torch.Tensor) -> None:
        if key in state:
            raise AssertionError(f"two tensors map to the LDM key {key!r}")
        state[key] = tensor

    for key, tensor in unet.items():
        put(UNET_PREFIX + _unet_key(key, unet_config), tensor)
    for key, tensor in vae.items():
        ldm_key = VAE_PREFIX + _vae_key(key, vae_config)
        put(ldm_key, _vae_tensor(ldm_key, tensor))
    for key, tensor in text_encoder.items():
        if key.endswith("position_ids"):
            continue
        # transformers 5.6+ saves CLIPTextModel without the `text_model.` level; older versions keep it.
        put(CLIP_PREFIX + key.removeprefix("text_model."), tensor)
    # Real SD1.x checkpoints carry this buffer; the loader must tolerate it.
    positions = text_encoder_config["max_position_embeddings"]
    put(CLIP_PREFIX + "embeddings.position_ids", torch.arange(positions, dtype=torch.int64)[None])
    return state


def write_ldm_checkpoint(pipeline_folder: Path, out_file: Path, *, dtype: torch.dtype | None = None) -> None:
    """Convert a diffusers SD1.x pipeline folder's UNet, VAE and CLIP text encoder into one LDM-layout file."""
    folder = Path(pipeline_folder)
    parts = {
        name: (_read_weights(folder / name), _read_config(folder / name)) for name in ("unet", "vae", "text_encoder")
    }
    state = to_ldm_state_dict(*parts["unet"], *parts["vae"], *parts["text_encoder"])
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_file))
