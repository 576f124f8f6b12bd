"""Drawing one job on the loaded pipeline: seeded per image, sampler per job, progress per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from engine.infotext import format_infotext
from engine.loading import LoadedModel
from engine.params import GenerationParams
from engine.pngmeta import encode_png
from engine.samplers import make_scheduler
from engine.wire import GeneratedImage

StepCallback = Callable[[int, int], None]


class Painter:
    """Runs jobs on one loaded model; not thread-safe (the engine process runs one job at a time)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        # Each job gets a fresh scheduler built over the checkpoint's own noise schedule.
        self._base_scheduler_config = model.pipe.scheduler.config

    def paint(self, params: GenerationParams, on_step: StepCallback | None = None) -> tuple[GeneratedImage, ...]:
        """Draw every image of `params` and return them as PNGs with infotext, in seed order."""
        params.validate()
        pipe = self.model.pipe
        pipe.scheduler = make_scheduler(params.sampler, self._base_scheduler_config)
        seeds = params.seeds()
        # One CPU generator per image: the same seed gives the same noise on any device and in any batch.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

        def step_end(pipeline: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(index + 1, pipeline.num_timesteps)
            return tensors

        with torch.inference_mode():
            latents = pipe(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt or None,
                width=params.width,
                height=params.height,
                num_inference_steps=params.steps,
                guidance_scale=params.cfg,
                num_images_per_prompt=params.count,
                generator=generators,
                output_type="latent",
                callback_on_step_end=step_end,
            ).images
            images = [self._decode(latents[i : i + 1]) for i in range(len(seeds))]
        results = []
        for seed, image in zip(seeds, images, strict=True):
            infotext = format_infotext(params, seed, self.model.info)
            results.append(GeneratedImage(seed=seed, infotext=infotext, png=encode_png(image, infotext)))
        return tuple(results)

    def _decode(self, latent: torch.Tensor) -> Any:
        """Decode one image at a time so a 4-image job needs no more VAE memory than one."""
        vae = self.model.pipe.vae
        decoded = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0]
        return self.model.pipe.image_processor.postprocess(decoded, output_type="pil")[0]
