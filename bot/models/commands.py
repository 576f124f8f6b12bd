"""/sdadmin models: list the models folder, set a channel's default model, rescan the folder without a restart (the
bot's owners only: every server draws from that folder)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Optional

import discord
from discord import app_commands

from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import Caller
from bot.limits.admin_group import AdminGroup
from bot.limits.admin_store import AdminStore
from bot.limits.owners import Owners, owner_allowed
from bot.models.picker import Models
from bot.pipeline.progress import Clock
from core.catalog import CatalogError
from core.params import InvalidParams

log = logging.getLogger(__name__)

_MAX_LISTED = 40


class ModelAdmin:
    """The actions behind /sdadmin models; every change is logged with who made it."""

    def __init__(
        self, *, models: Models, admin: AdminStore, reload_engine: Callable[[], Awaitable[None]], clock: Clock
    ) -> None:
        self.models = models
        self.admin = admin
        self.reload_engine = reload_engine
        self.clock = clock

    def describe(self, guild_id: int) -> str:
        """The models an /imagine can name, with the default and this server's channel defaults."""
        entries = [self.models.catalog.entries[name] for name in self.models.catalog.names()]
        default = self.models.default_entry
        lines = [f"**Models** ({len(entries)} in the models folder):"]
        for entry in entries[:_MAX_LISTED]:
            marks = [entry.family.value]
            if entry is default:
                marks.append("the bot's default")
            if entry.defaults.clip_skip:
                marks.append(f"clip skip {entry.defaults.clip_skip}")
            if entry.pickle and not self.models.allow_pickle:
                marks.append("pickle: refused")
            about = f" — {entry.defaults.description}" if entry.defaults.description else ""
            lines.append(f"• `{entry.name}` ({', '.join(marks)}){about}")
        if len(entries) > _MAX_LISTED:
            lines.append(f"… and {len(entries) - _MAX_LISTED} more")
        lines += [f"Skipped {line}" for line in self.models.catalog.skipped]
        if default is None:
            lines.append("The bot's default model (SDBOT_MODEL) is outside the models folder.")
        channels = self.models.channels.in_guild(guild_id) if self.models.channels is not None else {}
        for channel_id, name in sorted(channels.items()):
            gone = "" if self.models.catalog.get(name) else " (no longer installed: the bot's default applies)"
            lines.append(f"<#{channel_id}> draws with `{name}`{gone}")
        return "\n".join(lines)

    async def set_channel(self, caller: Caller, channel_id: int, name: str | None) -> str:
        """Set (or with None clear) a channel's default model."""
        assert caller.guild_id is not None and self.models.channels is not None
        if name is not None:
            try:
                name = self.models.entry(name.strip()).name
            except InvalidParams as exc:
                return str(exc)
        await self.models.channels.set(caller.guild_id, channel_id, name)
        action = f"channel {channel_id}: model {name or 'default'}"
        await self.admin.log(caller.guild_id, caller.user_id, action, self.clock())
        if name is None:
            return f"<#{channel_id}> draws with the bot's default model again."
        return f"<#{channel_id}> now draws with `{name}` unless a member picks another model."

    async def reload(self, caller: Caller) -> str:
        """Rescan the models folder here and in the engine."""
        before = set(self.models.catalog.entries)
        try:
            catalog = await self.models.rescan()
        except CatalogError as exc:
            return f"The models folder has a problem, so I kept the models I had: {exc}"
        await self.reload_engine()
        await self.admin.log(caller.guild_id, caller.user_id, "reload models", self.clock())
        added = sorted(set(catalog.entries) - before)
        removed = sorted(before - set(catalog.entries))
        changes = [f"new: {', '.join(added)}" if added else "", f"gone: {', '.join(removed)}" if removed else ""]
        summary = "; ".join(c for c in changes if c) or "no models added or removed"
        skipped = "".join(f"\nSkipped {line}" for line in catalog.skipped)
        return f"Rescanned the models folder: {len(catalog.entries)} models ({summary}).{skipped}"


def add_model_commands(group: AdminGroup, models: ModelAdmin, owners: Owners) -> None:
    """Add `/sdadmin models list|channel|reload` to the /sdadmin group."""
    sub = group.subgroup("models", "The models members can draw with")

    @sub.command(name="list", description="The models in the models folder, and each channel's default")
    async def list_models(interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        assert caller.guild_id is not None
        await responder.reply_privately(models.describe(caller.guild_id), quiet=True)

    @sub.command(name="channel", description="Set the model a channel draws with (leave model out for the default)")
    @app_commands.describe(
        model="The model members here get when they name none; leave out to go back to the bot's default",
        channel="Which channel (default: this one)",
    )
    async def channel_model(
        interaction: discord.Interaction,
        model: Optional[app_commands.Range[str, 1, 100]] = None,  # noqa: UP045 (the form discord.py reads)
        channel: discord.TextChannel | None = None,
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        channel_id = channel.id if channel is not None else caller.channel_id
        assert channel_id is not None
        await responder.reply_privately(await models.set_channel(caller, channel_id, model), quiet=True)

    @channel_model.autocomplete("model")
    async def model_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return models.models.choices(current)

    @sub.command(name="reload", description="Rescan the models folder for every server, no restart (bot owners only)")
    async def reload(interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        if await owner_allowed(caller, responder, owners, "rescan the models folder: every server draws from it"):
            await responder.reply_privately(await models.reload(caller), quiet=True)
