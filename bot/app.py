"""The Discord client: builds the pipeline, lets each feature set itself up, and runs the bot's lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import discord
from discord import app_commands

from bot.community import feature as community_feature
from bot.describe import feature as describe_feature
from bot.errors import answer_command_error
from bot.features import Options, Registry, build_shared
from bot.fleet.hub import Hub
from bot.imagine import feature as imagine_feature
from bot.interactions.adapter import caller_and_responder
from bot.limits import feature as limits_feature
from bot.limits.admin_group import admin_group
from bot.limits.rules import Limits
from bot.member_settings import feature as member_settings_feature
from bot.metrics import Metrics
from bot.model_files import feature as model_files_feature
from bot.models import feature as models_feature
from bot.models.picker import Models
from bot.pipeline.database import Database
from bot.pipeline.dispatch import Dispatcher
from bot.pipeline.engines import Engines
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.images import ImageStore
from bot.pipeline.intake import Intake
from bot.pipeline.model_files import ModelFiles
from bot.pipeline.networks import Networks
from bot.pipeline.progress import Clock
from bot.pipeline.store import JobStore
from bot.policy import feature as policy_feature
from bot.results import feature as results_feature
from bot.results.buttons import BUTTON_ITEMS
from bot.settings import Listen
from bot.styles import feature as styles_feature
from bot.systemd import notify, starting, watchdog_interval
from core.chunking import ChunkCounter
from core.jobs import Job, JobState
from core.params import DEFAULT_MAX_LORAS

log = logging.getLogger(__name__)

CHORE_INTERVAL = 3600.0
NO_LIMITS = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_s=0.0)


def member_contexts(allow_dms: bool) -> app_commands.AppCommandContext:
    """Where Discord offers the members' commands: servers, and the bot's DMs only with SDBOT_ALLOW_DMS=1."""
    return app_commands.AppCommandContext(guild=True, dm_channel=allow_dms, private_channel=False)


class SdBot(discord.Client):
    """One process: gateway connection, commands, queue and the engine's supervisor."""

    def __init__(
        self,
        *,
        database: Database,
        engines: Engines,
        images: ImageStore,
        limits: Limits = NO_LIMITS,
        guild_ids: tuple[int, ...] = (),
        clock: Clock = time.time,
        progress_interval: float = 1.0,
        guild_ready_timeout: float = 2.0,
        shutdown_grace: float = 30.0,
        lora_dir: Path | None = None,
        models: Models | None = None,
        owner_ids: tuple[int, ...] = (),
        allow_dms: bool = False,
        max_loras: int = DEFAULT_MAX_LORAS,
        chunks: ChunkCounter | None = None,
        metrics: Listen | None = None,
        loras: Networks | None = None,
        files: ModelFiles | None = None,
        redis_url: str | None = None,
        fleet_poll: float = 1.0,
        upscalers_dir: Path | None = None,
        vae_dir: Path | None = None,
        describe_model: Path | None = None,
    ) -> None:
        # No privileged intents: slash commands and buttons arrive as interactions regardless.
        super().__init__(intents=discord.Intents(guilds=True), guild_ready_timeout=guild_ready_timeout)
        # Every command says where Discord offers it; installed to servers only, never to a user's account (which
        # would reach servers and DMs the bot is not in).
        self.tree = app_commands.CommandTree(
            self,
            allowed_contexts=member_contexts(allow_dms),
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
        )
        self.tree.on_error = answer_command_error  # type: ignore[assignment]
        options = Options(
            limits, clock, progress_interval, lora_dir, owner_ids, allow_dms, max_loras, upscalers_dir, vae_dir
        )
        self.shared = build_shared(
            self,
            database=database,
            engines=engines,
            images=images,
            models=models or Models(),
            options=options,
            closing=lambda: self.closing,
            chunks=chunks or ChunkCounter(),
            loras=loras,
            files=files,
        )
        self.registry = Registry(admin_group=admin_group())
        limits_feature.setup(self.shared, self.registry)
        policy_feature.setup(self.shared, self.registry)
        models_feature.setup(self.shared, self.registry)
        styles_feature.setup(self.shared, self.registry)
        self.community = community_feature.setup(self.shared, self.registry)
        imagine = imagine_feature.setup(self.shared, self.registry)
        describe_feature.setup(self.shared, self.registry, imagine=imagine, model=describe_model)
        member_settings_feature.setup(self.shared, self.registry)
        model_files_feature.setup(self.shared, self.registry)
        # Last: a press may go to any feature's handler.
        self.presses = results_feature.setup(self.shared, self.registry, allow_dms=allow_dms)
        self.registry.hourly["pruning kept images"] = lambda: asyncio.to_thread(images.prune, clock())
        self.guild_ids = guild_ids
        self.shutdown_grace = shutdown_grace
        self.metrics_at = metrics
        self.metrics = Metrics(self.dispatcher, self.queue, clock)
        # The workers' engines, through Redis (SDBOT_REDIS_URL); None: the local engines alone.
        self.hub = (
            Hub(
                redis_url,
                self.dispatcher,
                self.store,
                self.shared.loras,
                self.shared.files,
                poll=fleet_poll,
                retry=2 * fleet_poll,
                clock=clock,
            )
            if redis_url
            else None
        )
        # The port the metrics are served on, once they are (SDBOT_METRICS_PORT may ask for any free one).
        self.metrics_port: int | None = None
        self.closing = False
        self._shutdown: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # The pipeline's parts, by the names the lifecycle (and the tests) use.
    @property
    def database(self) -> Database:
        return self.shared.database

    @property
    def store(self) -> JobStore:
        return self.shared.jobs

    @property
    def engines(self) -> Engines:
        return self.shared.engines

    @property
    def queue(self) -> FairQueue[Job]:
        return self.shared.queue

    @property
    def dispatcher(self) -> Dispatcher:
        return self.shared.dispatcher

    @property
    def intake(self) -> Intake:
        return self.shared.intake

    @property
    def models(self) -> Models:
        return self.shared.models

    @property
    def images(self) -> ImageStore:
        return self.shared.images

    async def setup_hook(self) -> None:
        """Before connecting: open the database, each feature's start-up work, load the model and the prompt
        tokenizer, re-queue unfinished jobs, register commands and buttons, sync commands, deliver what was drawn."""
        await self.database.open()
        await self.shared.estimator.load()
        for start in self.registry.on_start:
            await start()
        await self.engines.start(on_starting=starting)
        await asyncio.to_thread(self.intake.installed.load)
        for job in await self.store.in_states(JobState.QUEUED, JobState.RUNNING):
            await self.queue.put(job.user_id, job, job.guild_id, turns=job.turns)
            log.info("job %s re-queued after a restart", job.id)
        for command in [*self.registry.commands, self.registry.admin_group]:
            self.tree.add_command(command)
        # DynamicItems answer every button ever posted, across restarts: each custom_id matches exactly one.
        self.add_dynamic_items(*BUTTON_ITEMS)
        await self.sync_commands()
        await self.dispatcher.handover.deliver_pending()
        if self.hub is not None:
            # After the re-queue: a result a worker posted before the bot stopped takes its job out of the queue.
            await self.hub.start()
        if self.metrics_at is not None:
            self.metrics_port = self.metrics.serve(self.metrics_at)
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self._chores_hourly(), name="chores"),
        ]
        interval = watchdog_interval()
        if interval is not None:
            self._tasks.append(asyncio.create_task(self._watchdog(interval), name="watchdog"))

    @staticmethod
    async def _watchdog(interval: float) -> None:
        """Ping systemd from the event loop: if the loop ever blocks, the pings stop and systemd restarts us."""
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def run_chores(self) -> None:
        """Each feature's hourly chore once (pruning, the weekly digest); one failing does not stop the others."""
        for name, chore in self.registry.hourly.items():
            try:
                await chore()
            except Exception:
                log.exception("%s failed; trying again in an hour", name)

    async def _chores_hourly(self) -> None:
        """The chores at start and every hour."""
        while True:
            await self.run_chores()
            await asyncio.sleep(CHORE_INTERVAL)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Modals are answered from their custom_id alone, so one opened before a restart still works."""
        if interaction.type is not discord.InteractionType.modal_submit or interaction.data is None:
            return
        custom_id = str(interaction.data.get("custom_id", ""))
        for pattern, submit in self.registry.modals:
            match = pattern.match(custom_id)
            if match is not None:
                caller, responder = caller_and_responder(interaction)
                await submit(caller, responder, match)
                return

    async def sync_commands(self) -> None:
        """Guild sync is instant, so configured guilds get it; otherwise sync globally (takes up to an hour)."""
        if not self.guild_ids:
            synced = await self.tree.sync()
            log.info("synced %d commands globally", len(synced))
            return
        for guild_id in self.guild_ids:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild_id)

    async def on_ready(self) -> None:
        """Every (re)connect; systemd only cares about the first."""
        assert self.user is not None
        log.info("connected as %s (%s) to %d servers", self.user, self.user.id, len(self.guilds))
        notify(f"READY=1\nSTATUS=connected as {self.user}")

    async def close(self) -> None:
        """Stop taking jobs, let the running one finish within the grace period, keep the rest queued in
        SQLite for the next start, finish uploads in flight, stop the engine, close the database."""
        # Called more than once on a signal (by the handler, then by run_bot once start() has returned):
        # every call waits for the one shutdown, so the engine and database are closed before the process exits.
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._close())
        await asyncio.shield(self._shutdown)

    async def _close(self) -> None:
        self.closing = True
        notify("STOPPING=1")
        # An engine that dies from here on stays down: its jobs run after the next start, not on a reloaded model.
        self.engines.begin_shutdown()
        await self.queue.pause()
        try:
            if self.dispatcher.running_jobs():
                await asyncio.wait_for(self.dispatcher.wait_idle(), self.shutdown_grace)
        except asyncio.TimeoutError:
            log.warning(
                "the running job did not finish within %.0f s; it runs again after the restart", self.shutdown_grace
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dispatcher.stop()
        await self.dispatcher.handover.drain()
        if self.hub is not None:
            await self.hub.close()
        await super().close()
        await self.engines.close()
        self.metrics.close()
        await self.database.close()
        log.info("stopped; %d jobs wait in the database for the next start", len(self.queue))
