"""/imagine: options constrained on Discord's side, checked again here, then stored, acknowledged, queued."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import discord
from discord import app_commands

from bot.fair_queue import FairQueue
from bot.jobs import Job, new_job_id
from bot.progress import Clock
from bot.render import queued_text
from bot.store import JobStore
from engine.params import (
    DEFAULT_CFG,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MAX_CFG,
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
from engine.wire import EngineReady

log = logging.getLogger(__name__)

# What the bot must be allowed in a channel to post results there with its own token.
NEEDED_PERMISSIONS = {
    "view_channel": "View Channel",
    "send_messages": "Send Messages",
    "embed_links": "Embed Links",
    "attach_files": "Attach Files",
    "read_message_history": "Read Message History",
}


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

    def to_params(self, engine: EngineReady, seed_source: random.Random) -> GenerationParams:
        """Fill the defaults (the model's native size, a random seed) and check what Discord cannot."""
        params = GenerationParams(
            prompt=self.prompt.strip(),
            negative_prompt=(self.negative_prompt or "").strip(),
            width=self.width or engine.native_width,
            height=self.height or engine.native_height,
            steps=self.steps or DEFAULT_STEPS,
            cfg=self.cfg if self.cfg is not None else DEFAULT_CFG,
            sampler=self.sampler or DEFAULT_SAMPLER,
            seed=self.seed if self.seed is not None else seed_source.randrange(MAX_SEED + 1),
            count=self.count or 1,
        ).validate()
        if params.pixels > engine.max_pixels:
            what = f"{params.width}×{params.height}" + (f" × {params.count} images" if params.count > 1 else "")
            raise InvalidParams(
                f"{what} is more than this GPU can draw at once ({engine.max_pixels / 1e6:.1f} megapixels at most):"
                " lower the width, height or count."
            )
        return params


def missing_permissions(permissions: discord.Permissions) -> list[str]:
    """The permissions the bot lacks in the channel to deliver results there."""
    return [label for name, label in NEEDED_PERMISSIONS.items() if not getattr(permissions, name)]


class ImagineService:
    """Turns a member's /imagine into a stored, acknowledged, queued job."""

    def __init__(
        self,
        *,
        store: JobStore,
        queue: FairQueue[Job],
        engine_ready: Callable[[], EngineReady | None],
        clock: Clock,
        seed_source: random.Random | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.engine_ready = engine_ready
        self.clock = clock
        self.seed_source = seed_source or random.SystemRandom()

    def check(self, interaction: discord.Interaction, options: ImagineOptions) -> GenerationParams:
        """The job's parameters, or InvalidParams with the sentence that tells the member what to change."""
        ready = self.engine_ready()
        if ready is None:
            raise InvalidParams("The image engine is starting up: try again in a minute.")
        if interaction.channel_id is None:
            raise InvalidParams("I can only draw in a channel.")
        missing = missing_permissions(interaction.app_permissions) if interaction.guild_id else []
        if missing:
            raise InvalidParams(
                f"I can't post images in this channel: ask an admin to give me {', '.join(missing)} here,"
                " or use me in another channel."
            )
        return options.to_params(ready, self.seed_source)

    async def submit(self, interaction: discord.Interaction, options: ImagineOptions) -> Job | None:
        """Refuse with an ephemeral sentence, or store, acknowledge and queue the job."""
        try:
            params = self.check(interaction, options)
        except InvalidParams as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return None
        assert interaction.channel_id is not None
        job = Job(
            id=new_job_id(),
            params=params,
            user_id=interaction.user.id,
            user_name=interaction.user.display_name,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            created_at=self.clock(),
        )
        await self.store.add(job)
        try:
            callback = await interaction.response.send_message(queued_text(self.queue.next_position(job.user_id)))
            message_id = callback.message_id or (await interaction.original_response()).id
        except discord.HTTPException as exc:
            # The member saw "interaction failed" and will likely ask again: running this one too would double it.
            log.warning("job %s: could not acknowledge, dropping it: %s", job.id, exc)
            await self.store.mark_failed(job.id, "Discord refused the acknowledgement.", self.clock())
            return None
        await self.store.set_message(job.id, message_id)
        job = job.with_message(message_id)
        await self.queue.put(job.user_id, job)
        log.info("job %s queued for %s (%s): %s", job.id, job.user_name, job.user_id, params)
        return job


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
        )
        await service.submit(interaction, options)

    return imagine
