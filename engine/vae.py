"""Loading an external VAE file (A1111's models/VAE, or `<checkpoint>.vae.safetensors`) and putting it on a pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors import SafetensorError
from safetensors.torch import load_file

from core.checkpoint_header import Header
from core.errors import first_line
from core.vae_files import CHECKPOINT_VAE_PREFIX, VaeError, is_pickle_vae, vae_family

log = logging.getLogger(__name__)

# The same top-level names in the original (LDM) layout and in diffusers'.
_AUTOENCODER_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # weights_only refuses anything but tensors and plain containers: such a file is not loaded at all.
        raise VaeError(f"{path}: cannot be read as plain weights ({first_line(exc)})") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else {}
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _read_state(path: Path, *, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """A VAE file's weights on the CPU, in its own key layout, once its header shows a 4-channel VAE."""
    if is_pickle_vae(path):
        if not allow_pickle:
            raise VaeError(
                f"{path}: a pickle VAE (.pt/.ckpt), which can run code when loaded: convert it to .safetensors,"
                " or set SDBOT_ALLOW_PICKLE=1 if you trust it"
            )
        state = _read_pickle(path)
        vae_family(path, Header(shapes={k: tuple(v.shape) for k, v in state.items()}, metadata={}))
        return state
    vae_family(path)  # the header alone: refuses what is no 4-channel VAE before reading hundreds of MB
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise VaeError(f"{path}: {first_line(exc)}") from None


def _vae_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the autoencoder's own weights: a whole checkpoint's without its prefix, and without the training
    leftovers some VAE files carry (`loss.*` discriminator and LPIPS weights, `model_ema.*`), as A1111 drops them."""
    if any(k.startswith(CHECKPOINT_VAE_PREFIX) for k in state):
        state = {k.removeprefix(CHECKPOINT_VAE_PREFIX): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k.startswith(_AUTOENCODER_PARTS)}


def _to_diffusers(path: Path, state: dict[str, torch.Tensor], config: Mapping[str, Any]) -> AutoencoderKL:
    """The weights in an AutoencoderKL of the config's shapes, converted by diffusers' own single-file mapping.

    Loaded by hand rather than through `from_single_file`, which fails on a missing weight with a message about
    meta tensors: here every missing or misshapen tensor is named.
    """
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(dict(config))
    expected = vae.state_dict()
    # A diffusers-layout file (a renamed diffusion_pytorch_model.safetensors) already has the keys.
    if not expected.keys() <= state.keys():
        state = convert_ldm_vae_checkpoint(state, vae.config)
    # Shapes first: another family's VAE (or a config of other shapes) also lacks blocks, but that is not the news.
    for key, tensor in expected.items():
        if key in state and state[key].shape != tensor.shape:
            raise VaeError(
                f"{path}: not this model's VAE ({key} is {tuple(state[key].shape)}, the model's {tuple(tensor.shape)})"
            )
    if missing := sorted(expected.keys() - state.keys()):
        raise VaeError(f"{path}: not a whole VAE ({len(missing)} of its tensors are missing, {missing[0]} first)")
    vae.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    return vae


def load_vae(
    path: Path, *, allow_pickle: bool, dtype: torch.dtype, device: torch.device, config: Mapping[str, Any]
) -> AutoencoderKL:
    """An external VAE file as a diffusers AutoencoderKL in `dtype` on `device`, with SDPA attention.

    `config` is the model's own VAE config: the external VAE takes its shapes and scaling factor; the original (LDM)
    keys are converted offline, a whole checkpoint's prefix dropped.
    """
    state = _vae_keys(_read_state(path, allow_pickle=allow_pickle))
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    try:
        vae = _to_diffusers(path, state, config)
    except VaeError:
        raise
    except Exception as exc:
        # A config folder without a VAE config, a conversion diffusers cannot make: the operator needs one line.
        log.debug("loading the VAE %s failed", path, exc_info=True)
        raise VaeError(f"{path}: cannot be loaded as this model's VAE ({first_line(exc)})") from exc
    vae.set_attn_processor(AttnProcessor2_0())
    return vae.eval().to(device)


def swap_vae(pipe: Any, vae: AutoencoderKL) -> AutoencoderKL:
    """Put `vae` on the pipeline, on its VAE's device and in its dtype; returns the VAE it replaced, to restore."""
    previous: AutoencoderKL = pipe.vae
    vae.to(previous.device)
    if vae.dtype != previous.dtype:
        vae.to(dtype=previous.dtype)
    pipe.register_modules(vae=vae)
    return previous
