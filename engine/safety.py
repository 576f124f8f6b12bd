"""The optional safety checker (SDBOT_SAFETY_MODEL): diffusers' StableDiffusionSafetyChecker from a local folder.

It only marks images; what happens to a flagged one (spoiler, withhold) is the bot's policy, so unlike the
diffusers pipelines it never blacks an image out.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image
from transformers import CLIPImageProcessor

from core.errors import first_line
from core.wire import GeneratedImage
from engine.loading import ModelLoadError

log = logging.getLogger(__name__)

SETTING = "SDBOT_SAFETY_MODEL"


def _folders(folder: Path) -> tuple[Path, Path]:
    """The checker's folder and its feature extractor's: one folder, or a diffusers Stable Diffusion folder."""
    if (folder / "safety_checker" / "config.json").is_file():
        return folder / "safety_checker", folder / "feature_extractor"
    return folder, folder


class SafetyChecker:
    """Says which images the checker's concepts flag."""

    def __init__(self, model: Any, processor: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype

    def flags(self, images: Sequence[Image.Image]) -> list[bool]:
        """One verdict per image, True where the checker flags it."""
        clip_input = self.processor(list(images), return_tensors="pt").pixel_values.to(self.device, self.dtype)
        # The checker blacks out what it flags in the images it is given: give it placeholders, keep the pictures.
        placeholders = [torch.zeros(1) for _ in images]
        checker_log = logging.getLogger("diffusers.pipelines.stable_diffusion.safety_checker")
        previous = checker_log.level
        checker_log.setLevel(logging.ERROR)  # its warning speaks of black images, which it does not make here
        try:
            with torch.inference_mode():
                _, verdicts = self.model(clip_input=clip_input, images=placeholders)
        finally:
            checker_log.setLevel(previous)
        return [bool(v) for v in verdicts]

    def check(self, images: Sequence[GeneratedImage]) -> tuple[GeneratedImage, ...]:
        """The same images, those the checker flags marked `flagged`."""
        pictures = [Image.open(io.BytesIO(image.png)).convert("RGB") for image in images]
        verdicts = self.flags(pictures)
        return tuple(replace(image, flagged=v) for image, v in zip(images, verdicts, strict=True))


def load_safety_checker(folder: Path, device: torch.device) -> SafetyChecker:
    """Load the checker and its feature extractor offline, from safetensors only; ModelLoadError naming the setting."""
    if not folder.is_dir():
        raise ModelLoadError(f"{SETTING}: {folder} is not a folder")
    checker_folder, extractor_folder = _folders(folder)
    if not (extractor_folder / "preprocessor_config.json").is_file():
        raise ModelLoadError(
            f"{SETTING}: {extractor_folder} has no preprocessor_config.json (the checker's feature extractor config)"
        )
    if not any(checker_folder.glob("*.safetensors")):
        raise ModelLoadError(f"{SETTING}: {checker_folder} has no .safetensors weights (pickle files are not loaded)")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        model = StableDiffusionSafetyChecker.from_pretrained(
            checker_folder, local_files_only=True, use_safetensors=True, dtype=dtype
        )
        processor = CLIPImageProcessor.from_pretrained(extractor_folder, local_files_only=True)
    except Exception as exc:
        log.debug("loading the safety checker from %s failed", folder, exc_info=True)
        raise ModelLoadError(f"{SETTING}: could not load {folder}: {first_line(exc)}") from exc
    model.to(device).eval()
    log.info("loaded the safety checker from %s on %s", folder, device)
    return SafetyChecker(model, processor, device, dtype)
