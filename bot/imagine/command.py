"""/imagine: options constrained on Discord's side, checked again here, then stored, acknowledged, queued."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import discord
from discord import app_commands

from bot.imagine.attachments import AttachmentInfo, check_image, fetch_image
from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import Caller, Responder
from bot.member_settings.applicable import still_applicable
from bot.member_settings.store import MemberSettingsStore
from bot.models.picker import ModelPick, Models
from bot.pipeline.images import ImageStore
from bot.pipeline.intake import Intake, check_channel, check_fits, ready_engine
from bot.pipeline.model_files import ModelFiles
from bot.styles.commands import style_choices
from bot.styles.store import Styles
from core.aspect import CHOICES as ASPECT_CHOICES
from core.aspect import AspectRatio
from core.jobs import Job, new_job_id
from core.member_settings import MemberSettings, Setting
from core.params import (
    DEFAULT_CFG,
    DEFAULT_HIRES_STRENGTH,
    DEFAULT_HIRES_UPSCALER,
    DEFAULT_IMAGE_STRENGTH,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    HIRES_CHOICES,
    MAX_CFG,
    MAX_CLIP_SKIP,
    MAX_COUNT,
    MAX_IMAGE_STRENGTH,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    MIN_CFG,
    MIN_COUNT,
    MIN_IMAGE_STRENGTH,
    MIN_SIZE,
    MIN_STEPS,
    SAMPLERS,
    GenerationParams,
    InvalidParams,
    JobMode,
    fit_aspect,
)
from core.styles import apply_styles
from core.wire import EngineReady

log = logging.getLogger(__name__)


# The member's settings /imagine's options of the same names take; the size (ar, or width and height) goes as a whole.
_FILLED = (
    Setting.MODEL,
    Setting.STEPS,
    Setting.CFG,
    Setting.SAMPLER,
    Setting.NEGATIVE_PROMPT,
    Setting.STYLE,
    Setting.HIRES,
    Setting.HIRES_STRENGTH,
    Setting.HIRES_STEPS,
    Setting.HIRES_UPSCALER,
    Setting.FACE_FIX,
)


@dataclass(frozen=True)
class ImagineOptions:
    """The options as Discord delivered them; None where the member left one out."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    seed: int | None = None
    count: int | None = None
    sampler: str | None = None
    clip_skip: int | None = None
    model: str | None = None
    strength: float | None = None
    ar: str | None = None
    style: str | None = None  # style names, comma-separated
    hires: float | None = None  # 0: off
    # Only from the member's settings (/imagine offers the scale alone); else the model's sidecar, else the defaults.
    hires_strength: float | None = None
    hires_steps: int | None = None
    hires_upscaler: str | None = None
    face_fix: bool | None = None  # only from the member's settings

    def left_to(self, member: MemberSettings, *, image: bool) -> MemberSettings:
        """The member's settings for what these options leave out. A size goes as a whole: a ratio, width or height
        given (or an image prompt, which keeps its image's shape) leaves the member's size out."""
        given = [s for s in _FILLED if getattr(self, s.value) is not None]
        if image or self.ar or self.width or self.height:
            given.append(Setting.AR)
        if image or self.hires == 0:
            # No hires fix over an image, nor when asked for none: its settings do not apply.
            given += [Setting.HIRES, Setting.HIRES_STRENGTH, Setting.HIRES_STEPS, Setting.HIRES_UPSCALER]
        return member.without(*given)

    def with_member(self, member: MemberSettings) -> ImagineOptions:
        """These options with the member's settings where they left one out."""
        filled: dict[str, Any] = {}
        if not (self.ar or self.width or self.height):
            filled.update(ar=member.ar, width=member.width, height=member.height)
        for setting in _FILLED:
            if getattr(self, setting.value) is None:
                filled[setting.value] = member.value(setting)
        return replace(self, **{name: value for name, value in filled.items() if value is not None})

    def to_params(
        self,
        engine: EngineReady,
        seed_source: random.Random,
        model: ModelPick | None = None,
        source: tuple[int, int] | None = None,
        max_side: int = MAX_SIZE,
        hires_upscaler: str = DEFAULT_HIRES_UPSCALER,
    ) -> GenerationParams:
        """Fill the defaults (the model's sidecar, else its native size and the bot's defaults, `hires_upscaler` the
        server's; a random seed) and check what Discord cannot.

        With a `source` image (an image prompt) the size keeps its aspect at about the native pixel count,
        within the width and height asked for and the member's largest side.
        """
        model = model or ModelPick()
        wanted = model.defaults
        native_width, native_height = model.native_size(engine)
        width, height = self.width or wanted.width or native_width, self.height or wanted.height or native_height
        if self.ar is not None:
            if self.width or self.height:
                raise InvalidParams("Give an aspect ratio or a width and height, not both: leave one of them out.")
            if source is not None:
                raise InvalidParams("An image prompt keeps its image's shape: leave the aspect ratio out.")
            width, height = AspectRatio.parse(self.ar).size(native_width * native_height, max_side)
        mode, strength = JobMode.TXT2IMG, 1.0
        if source is not None:
            box = (min(self.width or max_side, max_side), min(self.height or max_side, max_side))
            width, height = fit_aspect(source, native_width * native_height, box)
            mode, strength = JobMode.IMG2IMG, self.strength if self.strength is not None else DEFAULT_IMAGE_STRENGTH
        elif self.strength is not None:
            raise InvalidParams("Strength only applies to an image prompt: attach an image, or leave strength out.")
        cfg = self.cfg if self.cfg is not None else wanted.cfg
        params = GenerationParams(
            prompt=self.prompt.strip(),
            negative_prompt=(self.negative_prompt or wanted.negative_prompt or "").strip(),
            width=width,
            height=height,
            mode=mode,
            strength=strength,
            steps=self.steps or wanted.steps or DEFAULT_STEPS,
            cfg=cfg if cfg is not None else DEFAULT_CFG,
            sampler=self.sampler or wanted.sampler or DEFAULT_SAMPLER,
            seed=self.seed if self.seed is not None else seed_source.randrange(MAX_SEED + 1),
            count=self.count or 1,
            clip_skip=self.clip_skip or wanted.clip_skip or 0,
            model=model.name,
            hires=self.hires or 0.0,
            hires_strength=first(self.hires_strength, wanted.hires_strength, default=DEFAULT_HIRES_STRENGTH),
            hires_steps=self.hires_steps or wanted.hires_steps or 0,
            hires_upscaler=self.hires_upscaler or wanted.hires_upscaler or hires_upscaler,
            face_fix=bool(self.face_fix),
        ).validate()
        check_fits(params, engine, model.family)
        return params


def first(*values: float | None, default: float) -> float:
    """The first value given (0 counts as given), else `default`."""
    return next((value for value in values if value is not None), default)


class ImagineService:
    """Turns a member's /imagine into a stored, acknowledged, queued job."""

    def __init__(
        self,
        *,
        intake: Intake,
        engine_ready: Callable[[], EngineReady | None],
        models: Models | None = None,
        images: ImageStore,
        seed_source: random.Random | None = None,
        styles: Styles | None = None,
        member_settings: MemberSettingsStore | None = None,
        vae_for: Callable[[ModelPick, int | None], str] = lambda model, guild_id: "",
        hires_upscaler_for: Callable[[int | None], str] = lambda guild_id: DEFAULT_HIRES_UPSCALER,
        files: ModelFiles | None = None,
    ) -> None:
        self.files = files or ModelFiles()
        # The VAE a job on this model decodes with in this server (the model's own choice, else the server's).
        self.vae_for = vae_for
        # The hires fix's upscaler where neither the member nor the model names one.
        self.hires_upscaler_for = hires_upscaler_for
        self.intake = intake
        self.styles = styles
        self.member_settings = member_settings
        self.engine_ready = engine_ready
        self.models = models or Models()
        self.images = images
        self.seed_source = seed_source or random.SystemRandom()

    def check(
        self,
        caller: Caller,
        options: ImagineOptions,
        source: tuple[int, int] | None = None,
        max_side: int = MAX_SIZE,
    ) -> tuple[int, GenerationParams]:
        """The channel and the job's parameters, or InvalidParams with the sentence saying what to change."""
        ready = ready_engine(self.engine_ready)
        channel_id = check_channel(caller)
        model = self.models.pick(options.model, channel_id)
        upscaler = self.hires_upscaler_for(caller.guild_id)
        params = replace(
            options.to_params(ready, self.seed_source, model, source, max_side, upscaler),
            vae=self.vae_for(model, caller.guild_id),
        )
        if options.style and options.style.strip() and self.styles is not None:
            # As A1111 does, the job keeps the prompts as expanded: its infotext and Remix show what was drawn.
            picked = self.styles.pick(caller.guild_id, options.style)
            prompt, negative = apply_styles(params.prompt, params.negative_prompt, picked)
            params = replace(params, prompt=prompt, negative_prompt=negative).validate()
        return channel_id, params

    async def submit(
        self, caller: Caller, responder: Responder, options: ImagineOptions, image: AttachmentInfo | None = None
    ) -> Job | None:
        """Refuse with an ephemeral sentence, or store, acknowledge and queue the job.

        An image prompt is checked from Discord's metadata (type, bytes, pixels) and the parameters it would
        make are checked before it is downloaded; the download is capped, and must decode.
        """
        job_id = new_job_id()
        limits = await self.intake.quota.limits(caller.guild_id, caller.user_id, caller.role_ids)
        # A ratio's size, and an image prompt's, keeps within the member's largest side.
        max_side = min(MAX_SIZE, limits.max_size or MAX_SIZE)
        member = self.member_settings.get(caller.user_id, caller.guild_id) if self.member_settings else MemberSettings()
        member, notes = still_applicable(
            options.left_to(member, image=image is not None),
            models=self.models,
            styles=self.styles,
            guild_id=caller.guild_id,
            limits=limits,
            upscalers=self.files.upscaler_names(),
        )
        hires_kept = member.hires is not None and options.hires is None
        options = options.with_member(member)
        try:
            if image is None:
                # The member's own hires fix falls back rather than fail a job they did not ask it of.
                fallback = None
                try:
                    channel_id, params = self.check(caller, options, max_side=max_side)
                    if hires_kept and max(params.output_size) > max_side:
                        width, height = params.output_size
                        fallback = f"would make {width}×{height}, over your largest side here ({max_side})"
                except InvalidParams as exc:
                    if not hires_kept:
                        raise
                    fallback = f"can't apply to this one ({str(exc).split(':')[0]})"
                if fallback is not None:
                    notes.append(f"Your hires fix {fallback}: this one is drawn without it.")
                    channel_id, params = self.check(caller, replace(options, hires=0.0), max_side=max_side)
            else:
                check_image(image)
                assert image.width is not None and image.height is not None
                channel_id, params = self.check(caller, options, (image.width, image.height), max_side)
                # Nothing is downloaded for a member who may not run the job (banned, over a limit, too soon).
                if not await self.intake.precheck(caller, responder, self.intake.new_job(caller, params, channel_id)):
                    return None
                # The download and decoding may take longer than the 3 s Discord allows for an answer.
                await responder.think(private=False)
                decoded = await fetch_image(image)
                channel_id, params = self.check(caller, options, decoded.size, max_side)
                # Kept as image 0 of the job itself, so rerolls and restarts find it like any button's source.
                await asyncio.to_thread(self.images.save_one, job_id, 0, decoded.png)
        except InvalidParams as exc:
            await responder.reply_privately(str(exc))
            return None
        job = self.intake.new_job(caller, params, channel_id, job_id)
        if image is None:
            accepted = await self.intake.accept(caller, responder, job)
        else:
            accepted = await self.intake.accept(caller, responder, replace(job, parent_id=job_id, source_index=0))
            if accepted is None:
                # Refused after all (another command of the member's came first): keep nothing of it.
                await asyncio.to_thread(self.images.discard, job_id)
        if accepted is not None and notes:
            await responder.note_privately("\n".join(notes) + "\nChange your defaults with /settings.")
        return accepted


def build_imagine_command(service: ImagineService) -> app_commands.Command:  # type: ignore[type-arg]
    """The /imagine slash command, every option bounded and described for Discord's client."""

    @app_commands.command(name="imagine", description="Draw images from a text prompt with Stable Diffusion")
    @app_commands.describe(
        prompt="What to draw, e.g. 'a red fox in the snow, golden hour, detailed'",
        negative_prompt="What to keep out of the image, e.g. 'blurry, watermark'",
        width=f"Width in pixels, a multiple of 8 ({MIN_SIZE}–{MAX_SIZE}); default the model's native size",
        height=f"Height in pixels, a multiple of 8 ({MIN_SIZE}–{MAX_SIZE}); default the model's native size",
        steps=f"Denoising steps ({MIN_STEPS}–{MAX_STEPS}, default {DEFAULT_STEPS}): more is slower and finer",
        cfg=f"How closely to follow the prompt ({MIN_CFG:g}–{MAX_CFG:g}, default {DEFAULT_CFG:g})",
        seed=f"Seed (0–{MAX_SEED}); the same seed and options give the same image. Random if left out",
        count=f"How many images ({MIN_COUNT}–{MAX_COUNT}, default 1)",
        sampler=f"Sampler, as A1111 names them (default {DEFAULT_SAMPLER})",
        clip_skip=f"Text encoder layers to skip, as A1111 counts (1–{MAX_CLIP_SKIP}; 2 for anime models)",
        model="Which model draws it (default: this channel's, else the bot's); its own defaults apply",
        ar="Aspect ratio, width:height, at the model's native pixel count (instead of width and height)",
        style="This server's styles to apply, comma-separated (see /sdadmin styles list)",
        hires="Hires fix: draw at the base size, upscale, then redraw for detail (as A1111)",
        image="An image to start from (PNG, JPEG or WebP): the result keeps its aspect",
        strength=(
            f"With an image: how much of it to redraw ({MIN_IMAGE_STRENGTH:g}–{MAX_IMAGE_STRENGTH:g},"
            f" default {DEFAULT_IMAGE_STRENGTH:g})"
        ),
    )
    @app_commands.choices(
        sampler=[app_commands.Choice(name=s, value=s) for s in SAMPLERS],
        ar=[app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_CHOICES],
        hires=[app_commands.Choice(name=name, value=name) for name in HIRES_CHOICES],
    )
    async def imagine(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        negative_prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS] | None = None,
        width: app_commands.Range[int, MIN_SIZE, MAX_SIZE] | None = None,
        height: app_commands.Range[int, MIN_SIZE, MAX_SIZE] | None = None,
        steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, MIN_CFG, MAX_CFG] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        count: app_commands.Range[int, MIN_COUNT, MAX_COUNT] | None = None,
        sampler: app_commands.Choice[str] | None = None,
        clip_skip: app_commands.Range[int, 1, MAX_CLIP_SKIP] | None = None,
        model: app_commands.Range[str, 1, 100] | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, MIN_IMAGE_STRENGTH, MAX_IMAGE_STRENGTH] | None = None,
        ar: app_commands.Choice[str] | None = None,
        style: app_commands.Range[str, 1, 200] | None = None,
        hires: app_commands.Choice[str] | None = None,
    ) -> None:
        options = ImagineOptions(
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            steps=steps,
            cfg=cfg,
            seed=seed,
            count=count,
            sampler=sampler.value if sampler else None,
            clip_skip=clip_skip,
            model=model,
            strength=strength,
            ar=ar.value if ar else None,
            style=style,
            hires=HIRES_CHOICES[hires.value] if hires else None,
        )
        caller, responder = caller_and_responder(interaction)
        await service.submit(caller, responder, options, AttachmentInfo.of(image) if image is not None else None)

    @imagine.autocomplete("style")
    async def style_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return style_choices(service.styles, interaction.guild_id, current) if service.styles else []

    @imagine.autocomplete("model")
    async def model_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return service.models.choices(current)

    return imagine
