"""A tiny random-weight StableDiffusionSafetyChecker, built in code and saved as SDBOT_SAFETY_MODEL expects it.

Its verdicts are set through the concept thresholds, as in the real checker: a concept flags an image when
the cosine between them passes its threshold, and a cosine is never above 1 nor below -1.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

SIDE = 32
FLAG_ALL = -2.0  # every cosine passes
FLAG_NONE = 2.0  # none does


def tiny_safety_checker(threshold: float = FLAG_NONE) -> tuple[StableDiffusionSafetyChecker, CLIPImageProcessor]:
    """The checker (every concept at `threshold`) and its feature extractor."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": SIDE,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(FLAG_NONE)
    processor = CLIPImageProcessor(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE})
    return checker, processor


def save_tiny_safety_checker(
    folder: Path,
    threshold: float = FLAG_NONE,
    checker: StableDiffusionSafetyChecker | None = None,
) -> Path:
    """Save a checker (the tiny one at `threshold`, or `checker`) with its preprocessor_config.json in `folder`."""
    built, processor = tiny_safety_checker(threshold)
    (checker or built).save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder
