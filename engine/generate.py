"""Drawing one job on the loaded pipeline: seeded per image, sampler per job, progress per step.

txt2img draws from noise; variations and upscales are img2img passes over a source image; zoom and pan
outpaint around it with the inpainting pipeline built over the same weights (or a dedicated one).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
from PIL import Image, UnidentifiedImageError

from engine.infotext import format_infotext
from engine.loading import LoadedModel
from engine.outpaint import generation_mask, pan_placement, paste_back, prefill, zoom_placement
from engine.params import GenerationParams, InvalidParams
from engine.pngmeta import encode_png
from engine.samplers import make_scheduler
from engine.wire import GeneratedImage

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]
Finish = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class Plan:
    """One diffusers call: which pipeline, its mode-specific arguments, and what to do with each image after."""

    pipe: Any
    arguments: dict[str, Any]
    finish: Finish = field(default=lambda image: image)
    tiled_vae: bool = False


def open_source(source: bytes | None) -> Image.Image:
    """The job's source image as RGB, or InvalidParams when it is missing or unreadable."""
    if source is None:
        raise InvalidParams("The image this works from is missing: press the button on the result again.")
    try:
        return Image.open(io.BytesIO(source)).convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise InvalidParams("The image this works from could not be read as a picture.") from None


def _free_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def derived_pipeline(pipeline_class: Any, base: Any) -> Any:
    """`from_pipe` over loaded weights, quiet: it re-applies the dtype the weights already have and warns."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        pipe = pipeline_class.from_pipe(base)
    finally:
        logger.setLevel(previous)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Painter:
    """Runs jobs on one loaded model; not thread-safe (the engine process runs one job at a time)."""

    def __init__(self, model: LoadedModel, inpaint_model: LoadedModel | None = None) -> None:
        self.model = model
        self.inpaint_model = inpaint_model
        # Each job gets a fresh scheduler built over the checkpoint's own noise schedule.
        self._base_scheduler_config = model.pipe.scheduler.config
        self._img2img: Any = None
        self._inpaint: Any = None

    @property
    def img2img(self) -> Any:
        """img2img over the already-loaded weights, built on first use."""
        if self._img2img is None:
            self._img2img = derived_pipeline(StableDiffusionImg2ImgPipeline, self.model.pipe)
        return self._img2img

    @property
    def inpaint(self) -> Any:
        """The owner's inpainting checkpoint when configured (better seams), else inpainting over the loaded weights."""
        if self._inpaint is None:
            base = self.inpaint_model.pipe if self.inpaint_model is not None else self.model.pipe
            self._inpaint = derived_pipeline(StableDiffusionInpaintPipeline, base)
        return self._inpaint

    def _plan(self, params: GenerationParams, source: bytes | None) -> Plan:
        size = (params.width, params.height)
        if params.mode == "txt2img":
            return Plan(self.model.pipe, {"width": params.width, "height": params.height})
        image = open_source(source)
        if params.mode in ("vary", "upscale", "img2img"):
            resized = image.resize(size, Image.Resampling.LANCZOS) if image.size != size else image
            arguments = {"image": resized, "strength": params.strength}
            return Plan(self.img2img, arguments, tiled_vae=params.mode == "upscale")
        if params.mode == "zoom":
            placement = zoom_placement(size, params.zoom)
        else:
            placement = pan_placement(image.size, params.pan)
            if placement.canvas_size != size:
                raise InvalidParams("The image this works from has another size than the job expects.")
        arguments = {
            "image": prefill(image, placement),
            "mask_image": generation_mask(placement),
            "strength": params.strength,
            "width": params.width,
            "height": params.height,
        }
        return Plan(self.inpaint, arguments, finish=lambda drawn: paste_back(drawn, image, placement))

    def paint(
        self, params: GenerationParams, on_step: StepCallback | None = None, source: bytes | None = None
    ) -> tuple[GeneratedImage, ...]:
        """Draw every image of `params` and return them as PNGs with infotext, in seed order.

        Out of GPU memory, the batch is split in halves and drawn with tiled VAE decoding; the same seeds
        give the same images, so the member only hears of it if a single image still does not fit.
        """
        params.validate()
        try:
            return self._paint(params, on_step, source, tiled=False)
        except torch.cuda.OutOfMemoryError:
            log.warning("out of memory drawing %d×%d × %d; splitting", params.width, params.height, params.count)
            _free_cache()
            return self._paint_split(params, on_step, source)

    def _paint_split(
        self, params: GenerationParams, on_step: StepCallback | None, source: bytes | None
    ) -> tuple[GeneratedImage, ...]:
        if params.count == 1:
            return self._paint(params, on_step, source, tiled=True)
        first = params.count // 2
        halves = (replace(params, count=first), replace(params, seed=params.seeds()[first], count=params.count - first))
        images: list[GeneratedImage] = []
        for half in halves:
            try:
                images += self._paint(half, on_step, source, tiled=True)
            except torch.cuda.OutOfMemoryError:
                _free_cache()
                images += self._paint_split(half, on_step, source)
        return tuple(images)

    def _paint(
        self, params: GenerationParams, on_step: StepCallback | None, source: bytes | None, tiled: bool
    ) -> tuple[GeneratedImage, ...]:
        plan = self._plan(params, source)
        plan.pipe.scheduler = make_scheduler(params.sampler, self._base_scheduler_config)
        seeds = params.seeds()
        # One CPU generator per image: the same seed gives the same noise on any device and in any batch.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

        def step_end(pipeline: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(index + 1, pipeline.num_timesteps)
            return tensors

        vae = plan.pipe.vae
        tiled = tiled or plan.tiled_vae
        if tiled:
            vae.enable_tiling()
        try:
            with torch.inference_mode():
                latents = plan.pipe(
                    prompt=params.prompt,
                    negative_prompt=params.negative_prompt or None,
                    num_inference_steps=params.steps,
                    guidance_scale=params.cfg,
                    num_images_per_prompt=params.count,
                    generator=generators,
                    output_type="latent",
                    callback_on_step_end=step_end,
                    **plan.arguments,
                ).images
                images = [plan.finish(self._decode(plan.pipe, latents[i : i + 1])) for i in range(len(seeds))]
        finally:
            if tiled:
                vae.disable_tiling()
        results = []
        for seed, image in zip(seeds, images, strict=True):
            infotext = format_infotext(params, seed, self.model.info)
            results.append(GeneratedImage(seed=seed, infotext=infotext, png=encode_png(image, infotext)))
        return tuple(results)

    @staticmethod
    def _decode(pipe: Any, latent: torch.Tensor) -> Image.Image:
        """Decode one image at a time so a 4-image job needs no more VAE memory than one."""
        vae = pipe.vae
        decoded = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0]
        image: Image.Image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
        return image
