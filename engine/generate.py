"""Drawing one job on the loaded pipeline: seeded per image, sampler per job, progress per step.

txt2img draws from noise; variations and upscales are img2img passes over a source image; zoom and pan
outpaint around it with the inpainting pipeline built over the same weights (or a dedicated one).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
from PIL import Image, UnidentifiedImageError

from core.batching import compatible
from core.chunking import check_chunk_count
from core.infotext import ModelInfo, format_infotext
from core.network_files import NetworkFolder, hash_list
from core.params import FACE_FIX_STRENGTH, LATENT, GenerationParams, InvalidParams, JobMode
from core.pngmeta import encode_png
from core.prompt_syntax import check_lora_names, split_loras
from core.upscaler_files import UpscalerFolder
from core.vae_files import VaeFamily
from core.wire import GeneratedImage
from engine.conditioning import ChunkCache
from engine.embeddings import Embeddings
from engine.loading import LoadedModel
from engine.loras import LoraLoader
from engine.outpaint import generation_mask, pan_placement, paste_back, prefill, zoom_placement
from engine.samplers import make_scheduler
from engine.scheduled_conditioning import (
    StepConditioning,
    encode_schedules,
    scheduled_chunk_count,
    swap_in,
    swapped_tensors,
)
from engine.upscaler_shelf import UpscalerShelf
from engine.vae_switch import VaeFiles, VaeSwitch

if TYPE_CHECKING:
    # Imported where first used: OpenCV loads only in an engine whose jobs fix faces.
    from engine.face_fix import FaceDetector

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]
# Called after every step with the job index of each image and the batch's latents, for previews.
LatentsCallback = Callable[[Sequence[int], Any], None]
Finish = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class BatchJob:
    """One job of a batch: what to draw, and the image it works from (for the modes that need one)."""

    params: GenerationParams
    source: bytes | None = None


@dataclass(frozen=True)
class Row:
    """One image of a batch: the job it belongs to and its seed."""

    job: int
    seed: int


@dataclass(frozen=True)
class Drawn:
    """A job's images as drawn, with their seeds, before PNG encoding."""

    params: GenerationParams
    images: tuple[tuple[int, Image.Image], ...]
    extras: tuple[tuple[str, str], ...] = ()  # A1111's `Lora hashes` and `TI hashes` for the infotext
    vae: ModelInfo | None = None  # the external VAE it was decoded with


_PER_IMAGE_GUIDANCE: dict[type, type] = {}


def per_image_guidance(pipeline_class: type) -> type:
    """A subclass whose guidance scale may be a tensor with one cfg per image.

    diffusers computes `uncond + scale * (text - uncond)`, which broadcasts a (batch, 1, 1, 1) scale; only
    its "is guidance on" test compares the scale with 1, so that test is answered here (cfg ≥ 1 always).
    """
    if pipeline_class not in _PER_IMAGE_GUIDANCE:
        members = {"do_classifier_free_guidance": property(lambda self: True)}
        _PER_IMAGE_GUIDANCE[pipeline_class] = type(
            f"PerImageGuidance{pipeline_class.__name__}", (pipeline_class,), members
        )
    return _PER_IMAGE_GUIDANCE[pipeline_class]


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
    """`from_pipe` over loaded weights, in their dtype, quiet (it re-applies that dtype and warns)."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        # Named: DiffusionPipeline.from_pipe casts the modules it shares with `base` to float32 by default, which
        # would leave a GPU engine's fp16 weights in fp32 for good (half the speed, twice the memory).
        pipe = pipeline_class.from_pipe(base, dtype=base.dtype)
    finally:
        logger.setLevel(previous)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def img2img_steps(steps: int, strength: float) -> int:
    """The `num_inference_steps` that makes diffusers' img2img run exactly `steps` steps at `strength` (it runs
    int(n × strength)), as A1111's hires pass runs its hires steps whatever the strength."""
    total = max(steps, math.ceil(steps / strength))
    while int(total * strength) > steps:
        total -= 1
    while int(total * strength) < steps:
        total += 1
    return total


@dataclass
class _Loop:
    """Where a batch's denoising stands, for the step-end callback: this pass's steps (as its prompt schedule counts
    them) and conditioning, and for progress the loop iterations of the passes before it and the steps after it."""

    steps: int
    later: int
    done: int = 0
    ran: int = 0
    scheduled: StepConditioning | None = None

    def next_pass(self, steps: int) -> None:
        self.done += self.ran
        self.ran = 0
        self.steps = steps
        self.later -= steps


class Painter:
    """Runs jobs on one loaded model; not thread-safe (the engine process runs one job at a time)."""

    def __init__(
        self,
        model: LoadedModel,
        inpaint_model: LoadedModel | None = None,
        *,
        loras: LoraLoader | None = None,
        embeddings: Embeddings | None = None,
        upscalers: UpscalerShelf | None = None,
        vaes: VaeFiles | None = None,
        face_model: Path | None = None,
        inpaint_vae: VaeSwitch | None = None,
    ) -> None:
        # A YuNet or YOLOv8 face detector the owner installed (SDBOT_FACE_MODEL); None: OpenCV's Haar cascade.
        self.face_model = face_model
        self._faces: FaceDetector | None = None
        self.model = model
        self.vae = VaeSwitch(model, vaes or VaeFiles())
        # The inpainting checkpoint decodes with the job's VAE too, as A1111 applies its VAE to any checkpoint. Its
        # switch is the worker's one for that model (painters made again over it share it), or one of its own.
        self.inpaint_vae = inpaint_vae or (VaeSwitch(inpaint_model, vaes or VaeFiles()) if inpaint_model else None)
        self.upscalers = upscalers or UpscalerShelf(
            UpscalerFolder(None), allow_pickle=False, device=model.device, dtype=model.dtype
        )
        self.inpaint_model = inpaint_model
        self.loras = loras or LoraLoader(NetworkFolder(None))
        self.embeddings = embeddings or Embeddings()
        self._per_image_guidance: dict[type, Any] = {}
        self._chunks = ChunkCache()
        # Each job gets a fresh scheduler built over the checkpoint's own noise schedule.
        self._base_scheduler_config = model.pipe.scheduler.config
        self._img2img: Any = None
        self._inpaint: Any = None

    def prepare(self, params: GenerationParams, source: bytes | None = None) -> int:
        """Check one job's prompts, LoRA names and source image, or raise InvalidParams with a sentence; return how
        many 75-token chunks its loop needs (every row of a loop is padded to the longest, which would change a
        shorter prompt's image, so only jobs of one length share a loop)."""
        check_lora_names(split_loras(params.prompt)[1], self.loras.folder.names())
        if params.needs_source:
            # Here, one job at a time, so an unreadable source fails its own job and not the batch it shares.
            open_source(source)
        return self._chunk_length(params, check=True)

    def _chunk_length(self, params: GenerationParams, check: bool = False) -> int:
        """The chunks of the job's longest text, prompt or negative, at any step of any pass (a prompt-editing
        schedule is as long as its longest text); with `check`, InvalidParams past the bound."""
        counts = []
        # Counted again here, though the bot counted them: embeddings add vectors only the engine's tokenizer knows.
        for what, words in (("prompt", split_loras(params.prompt)[0]), ("negative prompt", params.negative_prompt)):
            counts.append(scheduled_chunk_count(self.model.pipe, words, params.steps, params.second_pass_steps))
            if check:
                check_chunk_count(what, counts[-1])
        return max(counts)

    def release_caches(self) -> None:
        """Let go of the device memory kept for speed (the model itself is moved by its owner)."""
        self._chunks.clear()
        self._per_image_guidance = {}
        self.upscalers.release()

    @property
    def img2img(self) -> Any:
        """img2img over the already-loaded weights, built on first use."""
        if self._img2img is None:
            # The Auto classes pick the family's own pipeline: SDXL gets StableDiffusionXLImg2ImgPipeline.
            self._img2img = derived_pipeline(AutoPipelineForImage2Image, self.model.pipe)
        return self._img2img

    def _inpaint_vae_name(self, name: str) -> str:
        """The VAE the inpainting checkpoint decodes with for a job naming `name`: the same, where it is of the
        loaded model's family (so of the job's VAE's), else its own."""
        inpaint = self.inpaint_model
        same = inpaint is not None and VaeFamily.of_model(inpaint.family) is VaeFamily.of_model(self.model.family)
        return name if same else ""

    @property
    def inpaint(self) -> Any:
        """The owner's inpainting checkpoint when configured (better seams), else inpainting over the loaded weights."""
        if self._inpaint is None:
            base = self.inpaint_model.pipe if self.inpaint_model is not None else self.model.pipe
            self._inpaint = derived_pipeline(AutoPipelineForInpainting, base)
        return self._inpaint

    def _plan(self, params: GenerationParams, source: bytes | None) -> Plan:
        size = (params.width, params.height)
        if params.mode is JobMode.TXT2IMG:
            return Plan(self.model.pipe, {"width": params.width, "height": params.height})
        image = open_source(source)
        if params.mode in (JobMode.VARY, JobMode.UPSCALE, JobMode.IMG2IMG):
            if params.mode is JobMode.UPSCALE:
                resized = self.upscalers.enlarge(image, size, params.upscaler)
            else:
                resized = image.resize(size, Image.Resampling.LANCZOS) if image.size != size else image
            arguments = {"image": resized, "strength": params.strength}
            return Plan(self.img2img, arguments, tiled_vae=params.mode is JobMode.UPSCALE)
        if params.mode is JobMode.ZOOM:
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
        """Draw every image of one job and return them as PNGs with infotext, in seed order."""
        (drawn,) = self.draw([BatchJob(params, source)], on_step)
        return self.finish(drawn)

    def draw(
        self, jobs: Sequence[BatchJob], on_step: StepCallback | None = None, on_latents: LatentsCallback | None = None
    ) -> list[Drawn]:
        """Denoise the images of several compatible jobs in one loop; return them per job, not yet encoded.

        Out of GPU memory, the batch is split in halves and drawn with tiled VAE decoding; the same seeds
        give the same images, so the member only hears of it if a single image still does not fit.
        """
        for job in jobs:
            job.params.validate()
        if len(jobs) > 1 and not all(compatible(jobs[0].params, job.params) for job in jobs[1:]):
            raise ValueError("jobs that cannot share a denoising loop were batched together")
        if self.vae.use(jobs[0].params.vae):
            # Pipelines built over the weights hold the VAE they were built with.
            self._img2img = self._inpaint = None
            self._per_image_guidance = {}
        if self.inpaint_vae is not None and self.inpaint_vae.use(self._inpaint_vae_name(jobs[0].params.vae)):
            self._inpaint = None
        rows = [Row(index, seed) for index, job in enumerate(jobs) for seed in job.params.seeds()]
        # Each job's own pass over its source (an upscale's enlarging included), once, whatever splits follow.
        plans = [] if jobs[0].params.mode is JobMode.FACES else [self._plan(job.params, job.source) for job in jobs]
        out_of_memory = False
        try:
            images, lora_hashes = self._draw(jobs, plans, rows, on_step, on_latents, tiled=False)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True
        if out_of_memory:
            # Outside the except block: its traceback would keep the failed call's tensors on the GPU.
            log.warning("out of memory drawing %d images of %d×%d; splitting", len(rows), *self._size(jobs))
            _free_cache()
            images, lora_hashes = self._draw_split(jobs, plans, rows, on_step, on_latents)
        drawn = []
        for index, job in enumerate(jobs):
            mine = tuple((row.seed, image) for row, image in zip(rows, images, strict=True) if row.job == index)
            texts = (split_loras(job.params.prompt)[0], job.params.negative_prompt)
            extras = self._extras(lora_hashes, texts) + self._face_extras(job.params)
            drawn.append(Drawn(job.params, mine, tuple(extras), self.vae.info))
        return drawn

    def finish(self, drawn: Drawn) -> tuple[GeneratedImage, ...]:
        """Encode a job's images as PNGs carrying their infotext (CPU work, kept off the denoising loop)."""
        results = []
        for seed, image in drawn.images:
            infotext = format_infotext(drawn.params, seed, self.model.info, drawn.extras, drawn.vae)
            results.append(GeneratedImage(seed=seed, infotext=infotext, png=encode_png(image, infotext)))
        return tuple(results)

    @staticmethod
    def _size(jobs: Sequence[BatchJob]) -> tuple[int, int]:
        return jobs[0].params.width, jobs[0].params.height

    def _draw_split(
        self,
        jobs: Sequence[BatchJob],
        plans: Sequence[Plan],
        rows: Sequence[Row],
        on_step: StepCallback | None,
        on_latents: LatentsCallback | None,
    ) -> tuple[list[Image.Image], dict[str, str]]:
        if len(rows) == 1:
            return self._draw(jobs, plans, rows, on_step, on_latents, tiled=True)
        images: list[Image.Image] = []
        lora_hashes: dict[str, str] = {}
        for half in (rows[: len(rows) // 2], rows[len(rows) // 2 :]):
            out_of_memory = False
            try:
                drawn, lora_hashes = self._draw(jobs, plans, half, on_step, on_latents, tiled=True)
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True
            if out_of_memory:
                _free_cache()
                drawn, lora_hashes = self._draw_split(jobs, plans, half, on_step, on_latents)
            images += drawn
        return images, lora_hashes

    def _guidance(self, jobs: Sequence[BatchJob], rows: Sequence[Row], pipe: Any) -> tuple[Any, Any]:
        """The pipeline (`pipe`, or its per-image-guidance twin) and guidance scale for these rows: one cfg for all,
        or a (rows, 1, 1, 1) tensor of them."""
        # CFG in the weights' precision either way (7.3 is 7.30078 in fp16), so an image does not depend on
        # whether its batch partners asked for the same CFG.
        scales = [float(torch.tensor(jobs[row.job].params.cfg, dtype=self.model.dtype)) for row in rows]
        if len(set(scales)) == 1:
            return pipe, scales[0]
        kind = type(pipe)
        if kind not in self._per_image_guidance:
            self._per_image_guidance[kind] = derived_pipeline(per_image_guidance(kind), pipe)
        tensor = torch.tensor(scales, device=self.model.device, dtype=self.model.dtype).view(-1, 1, 1, 1)
        return self._per_image_guidance[kind], tensor

    def _draw(
        self,
        jobs: Sequence[BatchJob],
        plans: Sequence[Plan],
        rows: Sequence[Row],
        on_step: StepCallback | None,
        on_latents: LatentsCallback | None,
        tiled: bool,
    ) -> tuple[list[Image.Image], dict[str, str]]:
        """The images of `rows`, and the hashes of the LoRAs they were drawn with."""
        first = jobs[0]
        if first.params.mode is JobMode.FACES:
            # A job of its own (it needs a source image): the faces of that image, redrawn.
            return [self._fix_faces(open_source(first.source), first.params, rows[0].seed, required=True)], {}
        plan = plans[0]
        arguments = plan.arguments
        if len(jobs) > 1 and "image" in arguments:
            # img2img jobs of one size: each row starts from its own job's source (diffusers encodes each image of
            # the list with that row's generator, as it does a lone job's one image).
            arguments = {**arguments, "image": [plans[row.job].arguments["image"] for row in rows]}
        pipe, guidance = self._guidance(jobs, rows, plan.pipe)
        # One CPU generator per image: the same seed gives the same noise on any device and in any batch (the
        # hires pass draws its noise from the same generators, as A1111 does).
        generators = [torch.Generator("cpu").manual_seed(row.seed) for row in rows]
        loop = _Loop(first.params.steps, later=first.params.second_pass_steps)
        owners = [row.job for row in rows]

        def step_end(pipeline: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_latents is not None:
                on_latents(owners, tensors["latents"])
            loop.ran = index + 1
            if on_step is not None:
                on_step(loop.done + loop.ran, loop.done + pipeline.num_timesteps + loop.later)
            if loop.scheduled is not None and loop.scheduled.changes:
                # The next step's texts. A second-order sampler calls the UNet about twice per step, and its loop
                # runs about twice as long: the schedule is spread over it.
                loops = pipeline.num_timesteps
                following = index + 1 if loops <= loop.steps else (index + 1) * loop.steps // loops
                swap_in(pipeline, tensors, loop.scheduled.at(following))
            return tensors

        # The member's text stays in the infotext as written, LoRA tags included, as A1111 keeps it; jobs of
        # one batch name the same LoRAs (see core.batching).
        texts = [split_loras(jobs[row.job].params.prompt)[0] for row in rows]
        negatives = [jobs[row.job].params.negative_prompt for row in rows]
        _text, loras = split_loras(first.params.prompt)
        vae = pipe.vae
        tiled = tiled or plan.tiled_vae
        if tiled:
            vae.enable_tiling()
        try:
            # LoRA layers are made outside inference mode: they are modules, not results.
            with self.loras.applied(plan.pipe, loras) as lora_hashes, torch.inference_mode():
                # Encoded after the LoRAs are in: they change the text encoder, so its cache is not used then.
                cache = None if loras else self._chunks
                # Every pass padded to the chunks of the job's longest text in any pass (what `prepare` counted, without
                # listing the LoRA folder again), so a job's pixels do not depend on its batch partners.
                chunks = max(self._chunk_length(job.params) for job in jobs)
                loop.scheduled = encode_schedules(
                    pipe, texts, negatives, loop.steps, first.params.clip_skip, cache, min_chunks=chunks
                )
                pipe.scheduler = make_scheduler(first.params.sampler, self._base_scheduler_config)
                latents = pipe(
                    **loop.scheduled.first.arguments(),
                    num_inference_steps=loop.steps,
                    guidance_scale=guidance,
                    generator=generators,
                    output_type="latent",
                    callback_on_step_end=step_end,
                    callback_on_step_end_tensor_inputs=swapped_tensors(pipe) if loop.scheduled.changes else ["latents"],
                    **arguments,
                ).images
                if first.params.hires:
                    loop.next_pass(first.params.second_pass_steps)
                    hires = self._guidance(jobs, rows, self.img2img)[0]
                    # A1111's hires schedule: step numbers run on from the first pass's, fractions from 1.
                    loop.scheduled = encode_schedules(
                        hires, texts, negatives, loop.steps, first.params.clip_skip, cache, chunks, first.params.steps
                    )
                    hires.scheduler = make_scheduler(first.params.sampler, self._base_scheduler_config)
                    params = first.params
                    latents = hires(
                        **loop.scheduled.first.arguments(),
                        image=self._upscaled(pipe, latents, params),
                        strength=params.hires_strength,
                        num_inference_steps=img2img_steps(loop.steps, params.hires_strength),
                        guidance_scale=guidance,
                        generator=generators,
                        output_type="latent",
                        callback_on_step_end=step_end,
                        callback_on_step_end_tensor_inputs=swapped_tensors(hires)
                        if loop.scheduled.changes
                        else ["latents"],
                    ).images
                decoded = self._decode(pipe, latents)
                images = [plans[row.job].finish(image) for image, row in zip(decoded, rows, strict=True)]
        finally:
            if tiled:
                vae.disable_tiling()
        if first.params.face_fix:
            # The members keep the face fix on: each image's faces redrawn with its own job's prompt and its own seed,
            # none found left be.
            images = [
                self._fix_faces(image, jobs[row.job].params, row.seed) for image, row in zip(images, rows, strict=True)
            ]
        return images, lora_hashes

    @property
    def faces(self) -> FaceDetector:
        """The face detector, made when a job first needs it (OpenCV's Haar cascade unless the owner set one)."""
        if self._faces is None:
            from engine.face_fix import FaceDetector

            self._faces = FaceDetector(self.face_model)
        return self._faces

    def _fix_faces(
        self, image: Image.Image, params: GenerationParams, seed: int, required: bool = False
    ) -> Image.Image:
        """`image` with each face found redrawn at the model's native size by the inpainting pipeline, with the job's
        prompt and `seed`, at FACE_FIX_STRENGTH (ADetailer's approach); InvalidParams when `required` and none is."""
        from engine.face_fix import NO_FACE, fix_faces

        faces = self.faces.detect(image)
        if not faces:
            if required:
                raise InvalidParams(NO_FACE)
            return image
        text, loras = split_loras(params.prompt)
        pipe = self.inpaint
        pipe.scheduler = make_scheduler(params.sampler, self._base_scheduler_config)
        steps = max(params.steps, math.ceil(1 / FACE_FIX_STRENGTH))
        native = self.model.native_size
        with self.loras.applied(pipe, loras), torch.inference_mode():
            cache = None if loras else self._chunks
            scheduled = encode_schedules(pipe, [text], [params.negative_prompt], steps, params.clip_skip, cache)

            def redraw(crop: Image.Image, mask: Image.Image) -> Image.Image:
                return pipe(
                    **scheduled.first.arguments(),
                    image=crop,
                    mask_image=mask,
                    strength=FACE_FIX_STRENGTH,
                    num_inference_steps=steps,
                    guidance_scale=params.cfg,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    width=native,
                    height=native,
                ).images[0]

            return fix_faces(image, faces, redraw, native)

    def _upscaled(self, pipe: Any, latents: torch.Tensor, params: GenerationParams) -> Any:
        """The first pass's images at the output size, as the hires pass takes them: latents upscaled bilinearly
        as A1111's "Latent" does, or the decoded images enlarged by Lanczos or an upscaler model."""
        width, height = params.output_size
        if params.hires_upscaler == LATENT:
            factor = pipe.vae_scale_factor
            return torch.nn.functional.interpolate(latents, size=(height // factor, width // factor), mode="bilinear")
        decoded = self._decode(pipe, latents)
        return [self.upscalers.enlarge(image, (width, height), params.hires_upscaler) for image in decoded]

    def _extras(self, lora_hashes: dict[str, str], texts: tuple[str, str]) -> list[tuple[str, str]]:
        """A1111's `Lora hashes` and `TI hashes` for what the job used."""
        extras = []
        if lora_hashes:
            extras.append(("Lora hashes", hash_list(lora_hashes)))
        used = self.embeddings.used_in(texts)
        if used:
            extras.append(("TI hashes", hash_list(used)))
        return extras

    def _face_extras(self, params: GenerationParams) -> list[tuple[str, str]]:
        """ADetailer's keys for a face fix, as civitai reads them: the detector and the denoising strength."""
        if params.mode is not JobMode.FACES and not params.face_fix:
            return []
        detector = self.face_model.name if self.face_model is not None else "haarcascade_frontalface_default.xml"
        return [("ADetailer model", detector), ("ADetailer denoising strength", f"{FACE_FIX_STRENGTH:g}")]

    @staticmethod
    def _decode(pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """The batch's images; out of memory, decoded again in tiles, keeping the denoising already done."""
        try:
            return Painter._decode_each(pipe, latents)
        except torch.cuda.OutOfMemoryError:
            if pipe.vae.use_tiling:
                raise
        # Past the except block (only reached from it): its traceback would keep the failed tensors on the GPU.
        log.warning(
            "out of memory decoding %d images of %d×%d latents; decoding in tiles", len(latents), *latents.shape[-2:]
        )
        _free_cache()
        pipe.vae.enable_tiling()
        try:
            return Painter._decode_each(pipe, latents)
        finally:
            pipe.vae.disable_tiling()

    @staticmethod
    def _decode_each(pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """Decode one image at a time, so a 4-image job needs no more VAE memory than one."""
        vae = pipe.vae
        dtype = vae.dtype
        # SDXL's VAE overflows in fp16 (black images): it decodes in fp32 as diffusers' SDXL pipelines do, cast
        # once for the whole batch. Every AutoencoderKL config says force_upcast, so only SDXL pipes ask.
        sdxl = getattr(pipe, "text_encoder_2", None) is not None
        upcast = sdxl and dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        try:
            if upcast:
                vae.to(torch.float32)
            images = []
            for latent in latents.split(1):
                latent = latent.float() if upcast else latent
                decoded = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0]
                images.append(pipe.image_processor.postprocess(decoded, output_type="pil")[0])
            return images
        finally:
            if upcast:
                vae.to(dtype)
