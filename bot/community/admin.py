"""/sdadmin artchannel and /sdadmin digest: where shared images go, and whether that channel gets a weekly digest."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.community.store import CommunityStore
from bot.limits.admin_store import AdminStore
from bot.limits.commands import AdminCommands
from bot.pipeline.progress import Clock


def add_community_admin_commands(
    group: app_commands.Group, *, community: CommunityStore, admin: AdminStore, clock: Clock
) -> None:
    """Add the art channel and digest settings to /sdadmin (checked again for Manage Server, and logged)."""

    @group.command(name="artchannel", description="The channel ⭐ Share posts to, and where the weekly digest goes")
    @app_commands.describe(channel="The art channel")
    async def artchannel(interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        if not await AdminCommands.allowed(interaction):
            return
        assert interaction.guild_id is not None
        await community.set_art_channel(interaction.guild_id, channel.id)
        await admin.log(interaction.guild_id, interaction.user.id, f"art channel {channel.id}", clock())
        await interaction.response.send_message(
            f"Shared images now go to <#{channel.id}>: make sure I can send messages, embed links and attach files"
            " there.",
            ephemeral=True,
        )

    @group.command(name="digest", description="Post the week's most-reacted shared images in the art channel")
    @app_commands.describe(state="on: every week from now; off: no digest")
    @app_commands.choices(
        state=[app_commands.Choice(name="on", value="on"), app_commands.Choice(name="off", value="off")]
    )
    async def digest(interaction: discord.Interaction, state: app_commands.Choice[str]) -> None:
        if not await AdminCommands.allowed(interaction):
            return
        assert interaction.guild_id is not None
        on = state.value == "on"
        await community.set_digest(interaction.guild_id, on, clock())
        await admin.log(interaction.guild_id, interaction.user.id, f"digest {state.value}", clock())
        if not on:
            text = "The weekly digest is off."
        elif (await community.settings(interaction.guild_id)).art_channel_id is None:
            text = "The weekly digest is on, but there is no art channel yet: set one with `/sdadmin artchannel`."
        else:
            text = "The weekly digest is on: the first comes in a week."
        await interaction.response.send_message(text, ephemeral=True)
