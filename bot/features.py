"""What the feature packages share and what they hand back: the app builds `Shared`, each feature's `setup()` adds
its commands, button and modal handlers, start-up work and hourly chores to a `Registry`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import discord
from discord import app_commands

from bot.interactions.port import Caller, Responder
from bot.limits.admin_group import AdminGroup
from bot.limits.admin_store import AdminStore
from bot.limits.owners import Owners
from bot.limits.pauses import Pauses
from bot.limits.quota import Quota
from bot.limits.rules import Limits
from bot.member_settings.store import MemberSettingsStore
from bot.model_files.store import Pick, ServerPicks
from bot.models.channel_defaults import ChannelModels
from bot.models.picker import ModelPick, Models
from bot.pipeline.database import Database
from bot.pipeline.delivery import Delivery
from bot.pipeline.dispatch import Dispatcher
from bot.pipeline.engines import Engines
from bot.pipeline.estimates import Estimator
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.images import ImageStore
from bot.pipeline.installed import Installed
from bot.pipeline.intake import Intake
from bot.pipeline.model_files import ModelFiles
from bot.pipeline.networks import Networks
from bot.pipeline.progress import Clock
from bot.pipeline.source_images import SourceImages
from bot.pipeline.store import JobStore
from bot.policy.store import PolicyStore
from bot.results.buttons import Action
from bot.results.presses import PressHandler
from bot.styles.store import Styles
from core.checkpoint_header import Family
from core.chunking import ChunkCounter
from core.jobs import Job
from core.network_files import NetworkFolder
from core.params import DEFAULT_HIRES_UPSCALER, DEFAULT_MAX_LORAS, LANCZOS
from core.upscaler_files import UpscalerFolder
from core.vae_files import VaeFolder
from core.wire import EngineReady

AppCommand = app_commands.Command[Any, Any, Any] | app_commands.Group | app_commands.ContextMenu
# A modal submission, with the match of its custom_id.
ModalHandler = Callable[[Caller, Responder, re.Match[str]], Awaitable[object]]


class Chore(Protocol):
    """Work done at start and every hour (pruning, the weekly digest); it logs its own failures' context."""

    async def __call__(self) -> object: ...


@dataclass(frozen=True)
class Shared:
    """The pipeline and the stores several features use; built once by the app."""

    client: discord.Client
    database: Database
    jobs: JobStore
    engines: Engines
    queue: FairQueue[Job]
    dispatcher: Dispatcher
    intake: Intake
    images: ImageStore
    sources: SourceImages
    admin: AdminStore
    quota: Quota
    policy: PolicyStore
    models: Models
    loras: Networks
    styles: Styles
    picks: ServerPicks
    files: ModelFiles  # the upscalers and VAEs of the bot's folders and of its workers
    member_settings: MemberSettingsStore
    channel_models: ChannelModels
    owners: Owners
    pauses: Pauses
    estimator: Estimator
    clock: Clock

    def engine_ready(self) -> EngineReady | None:
        """What every engine can draw, or None while they start."""
        return self.engines.ready

    def upscaler_for(self, guild_id: int | None) -> str:
        """What the U button runs in a server: its admins' pick while installed (Lanczos included), else the first
        installed model, else Lanczos."""
        installed = self.files.upscaler_names()
        fallback = installed[0] if installed else LANCZOS
        return self.picks.chosen(guild_id, Pick.UPSCALER, (LANCZOS, *installed), fallback) or fallback

    def hires_upscaler_for(self, guild_id: int | None) -> str:
        """The hires fix's upscaler where neither the member nor the model names one: the server's default upscaler
        where that is a model, else A1111's own default, Latent."""
        upscaler = self.upscaler_for(guild_id)
        return DEFAULT_HIRES_UPSCALER if upscaler == LANCZOS else upscaler

    def vae_for(self, model: ModelPick, guild_id: int | None) -> str:
        """The VAE a job decodes with: the model's own choice (its sidecar, or a file beside it), else the server's
        pick where it is of the model's family, else none ("": the checkpoint's own)."""
        if model.vae:
            return model.vae
        picked = self.picks.chosen(guild_id, Pick.VAE, self.files.vae_names(), None)
        default = self.models.default_entry
        family = model.family or (default.family.value if default is not None else None)
        if picked is None or family is None:
            # A model of unknown family (SDBOT_MODEL outside the models folder) keeps its own VAE.
            return ""
        return picked if self.files.vae_fits(picked, Family(family)) else ""


@dataclass
class Registry:
    """What the features contribute, for the app to register with discord.py and run."""

    admin_group: AdminGroup
    commands: list[AppCommand] = field(default_factory=list)
    presses: dict[Action, PressHandler] = field(default_factory=dict)
    modals: list[tuple[re.Pattern[str], ModalHandler]] = field(default_factory=list)
    on_start: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    hourly: dict[str, Chore] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    """How the owner set the pipeline up (from the settings)."""

    limits: Limits
    clock: Clock
    progress_interval: float = 1.0
    lora_dir: Path | None = None
    owner_ids: tuple[int, ...] = ()
    allow_dms: bool = False
    max_loras: int = DEFAULT_MAX_LORAS
    upscalers_dir: Path | None = None
    vae_dir: Path | None = None


def build_shared(
    client: discord.Client,
    *,
    database: Database,
    engines: Engines,
    images: ImageStore,
    models: Models,
    options: Options,
    closing: Callable[[], bool],
    chunks: ChunkCounter,
    loras: Networks | None = None,
    files: ModelFiles | None = None,
) -> Shared:
    """The pipeline (queue, dispatcher, intake) over the database, the engines and the stores it consults; `chunks`
    counts prompts' chunks with the shipped tokenizer (one loaded counter may serve several bots in one process)."""
    clock = options.clock
    loras = loras or Networks(NetworkFolder(options.lora_dir))
    channel_models = ChannelModels(database)
    models.channels = channel_models
    # Jobs are grouped by the model they need, so the engine does not switch back and forth.
    queue: FairQueue[Job] = FairQueue(affinity=lambda job: models.key(job.params.model))
    jobs = JobStore(database)
    admin = AdminStore(database)
    estimator = Estimator(database, parallel=max(1, len(engines.members)))
    quota = Quota(
        store=jobs, admin=admin, defaults=options.limits, clock=clock, guild_ids=lambda: [g.id for g in client.guilds]
    )
    policy = PolicyStore(admin)
    member_settings = MemberSettingsStore(database)
    files = files or ModelFiles(
        UpscalerFolder(options.upscalers_dir), VaeFolder(options.vae_dir) if options.vae_dir is not None else None
    )
    picks = ServerPicks(database)
    sources = SourceImages(images, client)
    dispatcher = Dispatcher(
        queue=queue,
        engines=engines,
        store=jobs,
        delivery=Delivery(client),
        sources=sources,
        estimator=estimator,
        models=models,
        clock=clock,
        progress_interval=options.progress_interval,
    )
    intake = Intake(
        store=jobs,
        queue=queue,
        quota=quota,
        estimator=estimator,
        running=dispatcher.running,
        closing=closing,
        clock=clock,
        policy=policy,
        installed=Installed(models, loras, options.max_loras, chunks, files),
        allow_dms=options.allow_dms,
        stalled=lambda: engines.stalled,
        quiet=lambda user_id, guild_id: bool(member_settings.get(user_id, guild_id).quiet),
    )
    return Shared(
        client=client,
        database=database,
        jobs=jobs,
        engines=engines,
        queue=queue,
        dispatcher=dispatcher,
        intake=intake,
        images=images,
        sources=sources,
        admin=admin,
        quota=quota,
        policy=policy,
        models=models,
        loras=loras,
        styles=Styles(database),
        picks=picks,
        files=files,
        member_settings=member_settings,
        channel_models=channel_models,
        owners=Owners(configured=frozenset(options.owner_ids), fetch=client.application_info, clock=clock),
        pauses=Pauses(admin=admin, queue=queue),
        estimator=estimator,
        clock=clock,
    )
