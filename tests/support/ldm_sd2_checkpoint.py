"""Write a diffusers SD 2.x pipeline folder as one original-layout `.safetensors` file: SD 1.x's UNet and VAE
names, and the text encoder as OpenCLIP under `cond_stage_model.model.` (what makes a checkpoint SD 2.x)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from tests.support.ldm_checkpoint import CLIP_PREFIX, _read_config, _read_weights, to_ldm_state_dict
from tests.support.ldm_sdxl_checkpoint import open_clip_state_dict

OPEN_CLIP_PREFIX = "cond_stage_model.model."


def write_sd2_checkpoint(pipeline_folder: Path, out_file: Path) -> None:
    """Convert an SD 2.x-style diffusers folder (UNet, VAE, CLIPTextModel) into one single-file checkpoint."""
    folder = Path(pipeline_folder)
    parts = {name: (_read_weights(folder / name), _read_config(folder / name)) for name in ("unet", "vae")}
    text = _read_weights(folder / "text_encoder")
    state = to_ldm_state_dict(*parts["unet"], *parts["vae"], text, _read_config(folder / "text_encoder"))
    state = {k: v for k, v in state.items() if not k.startswith(CLIP_PREFIX)}
    state |= {OPEN_CLIP_PREFIX + k: v for k, v in open_clip_state_dict(text).items()}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_file))
