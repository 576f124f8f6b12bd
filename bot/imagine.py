"""/imagine: options constrained on Discord's side, checked again here, then stored, acknowledged, queued."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import discord
from discord import app_commands

from bot.intake import Intake, check_channel, check_fits
from bot.jobs import Job, new_job_id
from bot.models import ModelPick, Models
from engine.network_files import NetworkFolder
from engine.params import (
    DEFAULT_CFG,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MAX_CFG,
    MAX_CLIP_SKIP,
    MAX_COUNT,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    MIN_CFG,
    MIN_COUNT,
    MIN_SIZE,
    MIN_STEPS,
    SAMPLERS,
    GenerationParams,
    InvalidParams,
)
from engine.prompt_syntax import check_lora_names, split_loras
from engine.wire import EngineReady

log = logging.getLogger(__name__)


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

    def to_params(
        self, engine: EngineReady, seed_source: random.Random, model: ModelPick | None = None
    ) -> GenerationParams:
        """Fill the defaults (the model's sidecar, else its native size and the bot's defaults; a random seed) and
        check what Discord cannot."""
        model = model or ModelPick()
        wanted = model.defaults
        native_width, native_height = (
            (model.native, model.native) if model.native else (engine.native_width, engine.native_height)
        )
        cfg = self.cfg if self.cfg is not None else wanted.cfg
        params = GenerationParams(
            prompt=self.prompt.strip(),
            negative_prompt=(self.negative_prompt or wanted.negative_prompt or "").strip(),
            width=self.width or wanted.width or native_width,
            height=self.height or wanted.height or native_height,
            steps=self.steps or wanted.steps or DEFAULT_STEPS,
            cfg=cfg if cfg is not None else DEFAULT_CFG,
            sampler=self.sampler or wanted.sampler or DEFAULT_SAMPLER,
            seed=self.seed if self.seed is not None else seed_source.randrange(MAX_SEED + 1),
            count=self.count or 1,
            clip_skip=self.clip_skip or wanted.clip_skip or 0,
            model=model.name,
        ).validate()
        check_fits(params, engine)
        return params


class ImagineService:
    """Turns a member's /imagine into a stored, acknowledged, queued job."""

    def __init__(
        self,
        *,
        intake: Intake,
        engine_ready: Callable[[], EngineReady | None],
        models: Models | None = None,
        seed_source: random.Random | None = None,
        loras: NetworkFolder | None = None,
    ) -> None:
        self.intake = intake
        self.engine_ready = engine_ready
        self.models = models or Models()
        self.seed_source = seed_source or random.SystemRandom()
        self.loras = loras or NetworkFolder(None)

    def check(self, interaction: discord.Interaction, options: ImagineOptions) -> tuple[int, GenerationParams]:
        """The channel and the job's parameters, or InvalidParams with the sentence saying what to change."""
        ready = self.engine_ready()
        if ready is None:
            raise InvalidParams("The image engine is starting up: try again in a minute.")
        channel_id = check_channel(interaction)
        model = self.models.pick(options.model, channel_id)
        params = options.to_params(ready, self.seed_source, model)
        # The engine checks again when it draws; here the member hears of a misspelt name before queueing.
        _text, loras = split_loras(params.prompt)
        if loras:
            check_lora_names(loras, self.loras.names())
        return channel_id, params

    def model_choices(self, typed: str) -> list[app_commands.Choice[str]]:
        """Autocomplete for `model:`: catalog names (with their descriptions) matching what was typed."""
        return [app_commands.Choice(name=e.label(), value=e.name) for e in self.models.catalog.matching(typed)]

    async def submit(self, interaction: discord.Interaction, options: ImagineOptions) -> Job | None:
        """Refuse with an ephemeral sentence, or store, acknowledge and queue the job."""
        try:
            channel_id, params = self.check(interaction, options)
        except InvalidParams as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return None
        job = Job(
            id=new_job_id(),
            params=params,
            user_id=interaction.user.id,
            user_name=interaction.user.display_name,
            guild_id=interaction.guild_id,
            channel_id=channel_id,
            created_at=self.intake.clock(),
        )
        return await self.intake.accept(interaction, job)


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
    )
    @app_commands.choices(sampler=[app_commands.Choice(name=s, value=s) for s in SAMPLERS])
    async def imagine(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        negative_prompt: Optional[app_commands.Range[str, 1, MAX_PROMPT_CHARS]] = None,
        width: Optional[app_commands.Range[int, MIN_SIZE, MAX_SIZE]] = None,
        height: Optional[app_commands.Range[int, MIN_SIZE, MAX_SIZE]] = None,
        steps: Optional[app_commands.Range[int, MIN_STEPS, MAX_STEPS]] = None,
        cfg: Optional[app_commands.Range[float, MIN_CFG, MAX_CFG]] = None,
        seed: Optional[app_commands.Range[int, 0, MAX_SEED]] = None,
        count: Optional[app_commands.Range[int, MIN_COUNT, MAX_COUNT]] = None,
        sampler: Optional[app_commands.Choice[str]] = None,
        clip_skip: Optional[app_commands.Range[int, 1, MAX_CLIP_SKIP]] = None,
        model: Optional[app_commands.Range[str, 1, 100]] = None,
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
        )
        await service.submit(interaction, options)

    @imagine.autocomplete("model")
    async def model_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return service.model_choices(current)

    return imagine
