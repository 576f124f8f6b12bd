"""/sdadmin artchannel and /sdadmin digest: where shared images go, and whether that channel gets a weekly digest."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.community.store import CommunityStore
from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import Caller
from bot.limits.admin_group import AdminGroup
from bot.limits.admin_store import AdminStore
from bot.pipeline.progress import Clock


class CommunityAdmin:
    """The actions behind /sdadmin artchannel and /sdadmin digest; every change is logged with who made it."""

    def __init__(self, *, community: CommunityStore, admin: AdminStore, clock: Clock) -> None:
        self.community = community
        self.admin = admin
        self.clock = clock

    async def art_channel(self, caller: Caller, channel_id: int) -> str:
        """Make `channel_id` the server's art channel."""
        assert caller.guild_id is not None
        await self.community.set_art_channel(caller.guild_id, channel_id)
        await self.admin.log(caller.guild_id, caller.user_id, f"art channel {channel_id}", self.clock())
        return (
            f"Shared images now go to <#{channel_id}>: make sure I can send messages, embed links and attach files"
            " there."
        )

    async def digest(self, caller: Caller, on: bool) -> str:
        """Turn the weekly digest on (the first a week from now) or off."""
        assert caller.guild_id is not None
        await self.community.set_digest(caller.guild_id, on, self.clock())
        await self.admin.log(caller.guild_id, caller.user_id, f"digest {'on' if on else 'off'}", self.clock())
        if not on:
            return "The weekly digest is off."
        if (await self.community.settings(caller.guild_id)).art_channel_id is None:
            return "The weekly digest is on, but there is no art channel yet: set one with `/sdadmin artchannel`."
        return "The weekly digest is on: the first comes in a week."


def add_community_admin_commands(
    group: AdminGroup, *, community: CommunityStore, admin: AdminStore, clock: Clock
) -> None:
    """Add the art channel and digest settings to /sdadmin (every change logged)."""
    actions = CommunityAdmin(community=community, admin=admin, clock=clock)

    @group.command(name="artchannel", description="The channel ⭐ Share posts to, and where the weekly digest goes")
    @app_commands.describe(channel="The art channel")
    async def artchannel(interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await actions.art_channel(caller, channel.id))

    @group.command(name="digest", description="Post the week's most-reacted shared images in the art channel")
    @app_commands.describe(state="on: every week from now; off: no digest")
    @app_commands.choices(
        state=[app_commands.Choice(name="on", value="on"), app_commands.Choice(name="off", value="off")]
    )
    async def digest(interaction: discord.Interaction, state: app_commands.Choice[str]) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await actions.digest(caller, state.value == "on"))
