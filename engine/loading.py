"""Loading a model: device choice, dtype, family and offline single-file configs, pickle policy, name and hash."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor2_0

from core.checkpoint_header import CONFIGS, Family, Header, HeaderError, detect_family, family_of_folder, read_header
from core.devices import InvalidDevices, check_device
from core.errors import first_line
from core.infotext import ModelInfo
from core.network_files import short_hash
from core.source import PICKLE_SUFFIXES, ModelSource, SourceKind

log = logging.getLogger(__name__)

# The configs and CLIP tokenizers that ship in core/configs, per family, so single files load offline.
SD15_CONFIG = CONFIGS / "sd15"
FAMILY_CONFIGS = {
    Family.SD1: SD15_CONFIG,
    Family.SD2: CONFIGS / "sd2",
    Family.SD2_BASE: CONFIGS / "sd2-base",
    Family.SDXL: CONFIGS / "sdxl",
}


class ModelLoadError(RuntimeError):
    """The engine cannot start; the message is one line for the operator naming the setting at fault."""


@dataclass(frozen=True)
class LoadedModel:
    """A ready pipeline on its device, and how infotext names it."""

    pipe: Any  # a StableDiffusionPipeline or StableDiffusionXLPipeline, or an inpainting sibling
    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    family: Family = Family.SD1

    @property
    def native_size(self) -> int:
        """The side the model was trained at (512 for SD 1.x): the default width and height."""
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)


def resolve_device(setting: str) -> torch.device:
    """`auto` takes CUDA when torch sees a GPU, else the CPU; `cuda:N` must be a GPU torch sees."""
    try:
        check_device(setting)
    except InvalidDevices as exc:
        raise ModelLoadError(f"SDBOT_DEVICE {exc}") from None
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"SDBOT_DEVICE is {setting} but torch {torch.__version__} sees no CUDA GPU: check the driver, "
            "install a CUDA build of torch, or set SDBOT_DEVICE=cpu"
        )
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.index is not None and device.index >= count:
        raise ModelLoadError(
            f"SDBOT_DEVICE names {setting}, but torch sees {count} CUDA GPU{'s' if count != 1 else ''}"
            f" (cuda:0 to cuda:{count - 1}): name one of those, or all"
        )
    return device


def file_hash(path: Path) -> str:
    """A1111's model hash: the first ten hex digits of the file's sha256."""
    return short_hash(path)


def _weights_file(folder: Path) -> Path | None:
    """The UNet weights of a diffusers folder (what makes one fine-tune differ from another), as loaded."""
    loaded = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if loaded.is_file():
        return loaded
    candidates = sorted((folder / "unet").glob("diffusion_pytorch_model*.safetensors"))
    return candidates[0] if candidates else None


def _inpainting_unet(file: str, single_file_config: Path, dtype: torch.dtype) -> Any:
    """An inpainting checkpoint's UNet: the base config with 9 input channels (latents, mask, masked image)."""
    config = json.loads((single_file_config / "unet" / "config.json").read_text())
    config["in_channels"] = 9
    with tempfile.TemporaryDirectory(prefix="sdbot-inpaint-config-") as folder:
        (Path(folder) / "unet").mkdir()
        (Path(folder) / "unet" / "config.json").write_text(json.dumps(config))
        return UNet2DConditionModel.from_single_file(
            file, config=folder, subfolder="unet", local_files_only=True, torch_dtype=dtype
        )


def is_pickle(location: str) -> bool:
    """Whether a checkpoint file is a pickle (.ckpt, .pt, ...), which can run code when loaded."""
    return location.lower().endswith(PICKLE_SUFFIXES)


def pickle_header(path: Path) -> Header:
    """The tensor shapes of a pickle checkpoint, read with torch's weights-only unpickler (no code runs)."""
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            # Files saved before torch's zip format cannot be memory-mapped.
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # weights_only refuses anything but tensors and plain containers: such a file is not loaded at all.
        raise HeaderError(f"cannot be read as plain weights ({first_line(exc)})") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else {}
    return Header(shapes={k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}, metadata={})


def file_family(path: Path) -> Family:
    """A single-file checkpoint's family, from its safetensors header (or a pickle's weights-only load)."""
    return detect_family(pickle_header(path) if is_pickle(str(path)) else read_header(path))


def pipeline_class_for(family: Family, inpainting: bool = False) -> Any:
    """SDXL checkpoints need the SDXL pipeline; SD 1.x and 2.x share the Stable Diffusion one."""
    if family is Family.SDXL:
        if inpainting:
            raise ValueError("an SDXL inpainting checkpoint is not supported: use an SD 1.x inpainting model")
        return StableDiffusionXLPipeline
    return StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline


def _load_pipeline(
    source: ModelSource,
    dtype: torch.dtype,
    single_file_config: Path | None,
    inpainting: bool,
    setting: str,
    family: Family | None,
) -> tuple[Any, Path | None, Family]:
    common: dict[str, Any] = {"dtype": dtype}
    if source.kind is SourceKind.FILE:
        path = Path(source.location)
        family = family or file_family(path)
        config = single_file_config or FAMILY_CONFIGS[family]
        pipeline_class = pipeline_class_for(family, inpainting)
        if family is not Family.SDXL:
            common |= {"safety_checker": None, "requires_safety_checker": False}
        if inpainting:
            common["unet"] = _inpainting_unet(source.location, config, dtype)
        # A local config folder keeps from_single_file off the hub; it supplies the tokenizers and scheduler.
        pipe = pipeline_class.from_single_file(source.location, config=str(config), local_files_only=True, **common)
        return pipe, path, family
    if source.kind is SourceKind.HUB:
        try:
            folder = Path(StableDiffusionPipeline.download(source.location, use_safetensors=True))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{setting}: {source.location} could not be downloaded from the Hugging Face hub nor found in its"
                " local cache: check the id and the internet connection, or give a local folder or .safetensors file"
            ) from exc
    else:
        folder = Path(source.location)
    family = family or family_of_folder(folder)
    pipeline_class = pipeline_class_for(family, inpainting)
    if family is not Family.SDXL:
        common |= {"safety_checker": None, "requires_safety_checker": False}
    pipe = pipeline_class.from_pretrained(folder, local_files_only=True, use_safetensors=True, **common)
    return pipe, _weights_file(folder), family


def load_model(
    source: ModelSource,
    device: torch.device,
    single_file_config: Path | None = None,
    *,
    inpainting: bool = False,
    setting: str = "SDBOT_MODEL",
    family: Family | None = None,
    name: str | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load a pipeline: fp16 on CUDA, fp32 on the CPU, SDPA attention, no progress bars.

    The family (and so the pipeline class and shipped configs) is detected unless given; `single_file_config`
    overrides the shipped configs. `inpainting` loads an inpainting checkpoint; `setting` names the variable
    that chose it, for errors; `name` is the catalog name infotext gives it. Pickles load only with
    `allow_pickle` (SDBOT_ALLOW_PICKLE=1).
    """
    if source.kind is SourceKind.FILE and is_pickle(source.location) and not allow_pickle:
        raise ModelLoadError(
            f"{setting}: {source.location} is a pickle checkpoint, which can run code when loaded: convert it to"
            " .safetensors, or set SDBOT_ALLOW_PICKLE=1 if you trust it"
        )
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        pipe, hashed, family = _load_pipeline(source, dtype, single_file_config, inpainting, setting, family)
    except ModelLoadError:
        raise
    except HeaderError as exc:
        raise ModelLoadError(f"{setting}: could not load {source.location}: {exc}") from None
    except Exception as exc:
        # diffusers fails in many ways (bad header, wrong shapes, missing parts); the operator needs one line.
        log.debug("loading %s failed", source.location, exc_info=True)
        raise ModelLoadError(f"{setting}: could not load {source.location}: {first_line(exc)}") from exc
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    info = ModelInfo(name=name or source.name, hash=file_hash(hashed) if hashed else "")
    log.info("loaded %s (%s, %s) on %s as %s", info.name, family.value, info.hash or "no hash", device, dtype)
    return LoadedModel(pipe=pipe, info=info, device=device, dtype=dtype, family=family)


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# Peak memory per output pixel of one denoising batch with SDPA attention (UNet activations with CFG
# plus one VAE decode at a time); deliberately generous, since running out of memory costs a job.
_BYTES_PER_PIXEL = {torch.float16: 4096, torch.float32: 8192}
# Roughly the parameters each family puts on the device (UNet, text encoders, VAE), for the memory a model
# switched to later leaves: SD 1.x 0.86 B + CLIP-L 0.12 B; SD 2.x 0.87 B + OpenCLIP-H 0.34 B; SDXL 2.57 B +
# CLIP-L + OpenCLIP-bigG 0.69 B; each with the 0.08 B VAE.
_FAMILY_PARAMETERS = {
    Family.SD1: 1_066_000_000,
    Family.SD2: 1_290_000_000,
    Family.SD2_BASE: 1_290_000_000,
    Family.SDXL: 3_469_000_000,
}
_PIPELINE_PARTS = ("unet", "text_encoder", "text_encoder_2", "vae")


def weight_bytes(model: LoadedModel) -> int:
    """What the model's UNet, text encoders and VAE weigh on its device."""
    parts = [getattr(model.pipe, name, None) for name in _PIPELINE_PARTS]
    return sum(p.numel() * p.element_size() for part in parts if part is not None for p in part.parameters())


def pixel_budgets(model: LoadedModel, cap_megapixels: float | None, reserved: int = 0) -> dict[Family, int]:
    """How many pixels (width × height × count) one job or batch may draw with each family's model on the
    device: what memory is free with `model` loaded, less `reserved` bytes (the upscaler models' weights) and what
    a bigger model weighs more; or the cap."""
    if cap_megapixels is not None:
        return dict.fromkeys(Family, int(cap_megapixels * 1_000_000))
    free = _free_bytes(model.device) - reserved
    loaded = weight_bytes(model)
    itemsize = torch.tensor([], dtype=model.dtype).element_size()
    budgets = {}
    for family, parameters in _FAMILY_PARAMETERS.items():
        # The loaded model's own family is measured; another one's weights are estimated.
        left = free if family is model.family else free + loaded - parameters * itemsize
        budgets[family] = max(0, int(left * 0.85)) // _BYTES_PER_PIXEL[model.dtype]
    return budgets
