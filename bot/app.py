"""The Discord client: wires store, engine, queue and commands together in setup_hook."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import discord
from discord import app_commands

from bot.community.admin import add_community_admin_commands
from bot.community.digest import CHECK_INTERVAL, Digest
from bot.community.history import HistoryService, build_history_command
from bot.community.read_params import ReadParamsService, build_read_params_command
from bot.community.sharing import ShareService
from bot.community.store import CommunityStore
from bot.imagine.command import ImagineService, build_imagine_command
from bot.interactions.adapter import caller_and_responder
from bot.limits.admin_store import AdminStore
from bot.limits.commands import AdminCommands, QueueView, build_admin_group, build_member_commands
from bot.limits.owners import Owners
from bot.limits.pauses import Pauses
from bot.limits.quota import Quota
from bot.limits.rules import Limits
from bot.models.channel_defaults import ChannelModels
from bot.models.commands import ModelAdmin, add_model_commands
from bot.models.picker import Models
from bot.pipeline.delivery import Delivery
from bot.pipeline.dispatch import Dispatcher
from bot.pipeline.engine_client import Engine
from bot.pipeline.estimates import Estimator
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.images import ImageStore
from bot.pipeline.installed import Installed
from bot.pipeline.intake import Intake
from bot.pipeline.progress import Clock
from bot.pipeline.source_images import SourceImages
from bot.pipeline.store import JobStore
from bot.policy.commands import PolicyCommands, add_policy_commands
from bot.policy.store import PolicyStore
from bot.results.buttons import ResultButton
from bot.results.presses import PressService
from bot.results.remix import MODAL_ID, RemixService
from bot.systemd import notify, starting, watchdog_interval
from core.jobs import Job, JobState
from core.network_files import NetworkFolder
from core.params import DEFAULT_MAX_LORAS

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0
NO_LIMITS = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_s=0.0)


def member_contexts(allow_dms: bool) -> app_commands.AppCommandContext:
    """Where Discord offers the members' commands: servers, and the bot's DMs only with SDBOT_ALLOW_DMS=1."""
    return app_commands.AppCommandContext(guild=True, dm_channel=allow_dms, private_channel=False)


class SdBot(discord.Client):
    """One process: gateway connection, commands, queue and the engine's supervisor."""

    def __init__(
        self,
        *,
        store: JobStore,
        engine: Engine,
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
        self.tree.on_error = self.on_command_error  # type: ignore[method-assign]
        self.store = store
        self.engine = engine
        self.guild_ids = guild_ids
        self.images = images
        self.clock = clock
        self.channel_models = ChannelModels(store)
        self.models = models or Models()
        self.models.channels = self.channel_models
        # Jobs are grouped by the model they need, so the engine does not switch back and forth.
        self.queue: FairQueue[Job] = FairQueue(affinity=lambda job: self.models.key(job.params.model))
        self.admin = AdminStore(store)
        self.owners = Owners(configured=frozenset(owner_ids), fetch=self.application_info, clock=clock)
        self.pauses = Pauses(admin=self.admin, queue=self.queue)
        self.estimator = Estimator(self.admin)
        self.quota = Quota(
            store=store, admin=self.admin, defaults=limits, clock=clock, guild_ids=lambda: [g.id for g in self.guilds]
        )
        self.policy = PolicyStore(self.admin)
        sources = SourceImages(images, self)
        self.dispatcher = Dispatcher(
            queue=self.queue,
            engine=engine,
            store=store,
            delivery=Delivery(self),
            sources=sources,
            estimator=self.estimator,
            models=self.models,
            clock=clock,
            progress_interval=progress_interval,
        )
        self.intake = Intake(
            store=store,
            queue=self.queue,
            quota=self.quota,
            estimator=self.estimator,
            running=self.dispatcher.running,
            closing=lambda: self.closing,
            clock=clock,
            policy=self.policy,
            installed=Installed(self.models, NetworkFolder(lora_dir), max_loras),
            allow_dms=allow_dms,
        )
        ready = lambda: engine.ready  # noqa: E731
        self.imagine = ImagineService(intake=self.intake, engine_ready=ready, models=self.models, images=images)
        self.community = CommunityStore(store)
        self.sharing = ShareService(
            store=store, community=self.community, policy=self.policy, sources=sources, client=self, clock=clock
        )
        self.remix = RemixService(intake=self.intake, engine_ready=ready)
        self.read_params = ReadParamsService(intake=self.intake, community=self.community, engine_ready=ready)
        self.history = HistoryService(store)
        self.digest = Digest(community=self.community, client=self, clock=clock)
        self.presses = PressService(
            intake=self.intake,
            sources=sources,
            engine_ready=ready,
            cancel=self.dispatcher.cancel,
            allow_dms=allow_dms,
            handlers={
                "share": self.sharing.press,
                "remix": self.remix.press,
                "run": self.read_params.run,
                "history-next": self.history.turn,
                "history-prev": self.history.turn,
            },
        )
        queue_view = QueueView(queue=self.queue, dispatcher=self.dispatcher, estimator=self.estimator, clock=clock)
        admin_group = build_admin_group(
            AdminCommands(
                admin=self.admin,
                store=store,
                quota=self.quota,
                queue=self.queue,
                dispatcher=self.dispatcher,
                queue_view=queue_view,
                pauses=self.pauses,
                owners=self.owners,
                clock=clock,
            )
        )
        model_admin = ModelAdmin(models=self.models, admin=self.admin, reload_engine=engine.reload_models, clock=clock)
        add_model_commands(admin_group, model_admin, AdminCommands.allowed, self.owners)
        add_policy_commands(
            admin_group, PolicyCommands(policy=self.policy, engine_ready=ready, clock=clock), AdminCommands.allowed
        )
        add_community_admin_commands(admin_group, community=self.community, admin=self.admin, clock=clock)
        self.commands: list[app_commands.Command | app_commands.Group | app_commands.ContextMenu] = [  # type: ignore[type-arg]
            build_imagine_command(self.imagine),
            *build_member_commands(quota=self.quota, queue_view=queue_view, clock=clock),
            build_history_command(self.history),
            build_read_params_command(self.read_params),
            admin_group,
        ]
        self.shutdown_grace = shutdown_grace
        self.closing = False
        self._shutdown: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def setup_hook(self) -> None:
        """Before connecting: open the job log, load the model and the prompt tokenizer, re-queue unfinished jobs
        (held where paused), learn the bot's owners, sync commands."""
        await self.store.open()
        await self.pauses.load()
        await self.owners.refresh()
        await self.estimator.load()
        await self.channel_models.load()
        await self.engine.start(on_starting=starting)
        await asyncio.to_thread(self.intake.installed.load)
        for job in await self.store.in_states(JobState.QUEUED, JobState.RUNNING):
            await self.queue.put(job.user_id, job, job.guild_id)
            log.info("job %s re-queued after a restart", job.id)
        for command in self.commands:
            self.tree.add_command(command)
        # One DynamicItem answers every result button ever posted, across restarts.
        self.add_dynamic_items(ResultButton)
        await self.sync_commands()
        await self.dispatcher.deliver_pending()
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self._prune_hourly(), name="prune"),
            asyncio.create_task(self._weekly_digest(), name="weekly-digest"),
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

    async def prune(self) -> None:
        """Drop kept images past SDBOT_KEEP_DAYS and drafts of Read parameters past a day."""
        await asyncio.to_thread(self.images.prune, self.clock())
        await self.community.prune_drafts(self.clock())

    async def _prune_hourly(self) -> None:
        """Prune at start and every hour."""
        while True:
            try:
                await self.prune()
            except Exception:
                log.exception("pruning failed; trying again in an hour")
            await asyncio.sleep(PRUNE_INTERVAL)

    async def _weekly_digest(self) -> None:
        """Post the digests that are due, at start and every hour."""
        while True:
            try:
                await self.digest.run_due()
            except Exception:
                log.exception("the weekly digest failed; trying again in an hour")
            await asyncio.sleep(CHECK_INTERVAL)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Remix modals are answered from their custom_id alone, so one opened before a restart still works."""
        if interaction.type is not discord.InteractionType.modal_submit or interaction.data is None:
            return
        match = MODAL_ID.match(str(interaction.data.get("custom_id", "")))
        if match is not None:
            caller, responder = caller_and_responder(interaction)
            await self.remix.submit(caller, responder, match["job"])

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

    async def on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Log what went wrong and tell the member in a sentence, never a bare "This interaction failed"."""
        command = interaction.command.name if interaction.command else "?"
        if isinstance(error, app_commands.TransformerError):
            log.info("/%s by %s: unusable option value %r", command, interaction.user.id, error.value)
            sentence = f"I can't use {str(error.value)[:50]!r} for one of the options: check it and try again."
        elif isinstance(error, app_commands.CommandSignatureMismatch):
            log.warning("/%s is out of date on Discord's side", command)
            sentence = "Discord sent an out-of-date version of this command: try again in a minute."
        else:
            log.error("/%s by %s failed", command, interaction.user.id, exc_info=error)
            sentence = "Something went wrong on my side; the owner can find it in the bot's log. Please try again."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(sentence, ephemeral=True)
            else:
                await interaction.response.send_message(sentence, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell %s that /%s failed", interaction.user.id, command)

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
        self.engine.begin_shutdown()
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
        await self.dispatcher.drain()
        await super().close()
        await self.engine.close()
        await self.store.close()
        log.info("stopped; %d jobs wait in the database for the next start", len(self.queue))
