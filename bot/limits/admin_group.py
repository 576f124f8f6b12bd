"""/sdadmin and its subgroups: hidden from members without Manage Server, and checked again for every command."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.errors import Refused
from bot.interactions.adapter import caller_of
from bot.interactions.port import Caller

NOT_ADMIN = "Only members with Manage Server can use /sdadmin."


def may_administer(caller: Caller) -> bool:
    """Whether the caller manages the server they call from (in a DM, nobody does)."""
    return caller.guild_id is not None and caller.manage_guild


class AdminGroup(app_commands.Group):
    """A group whose every command is for admins only. discord.py runs only a command's own group's check, so
    each subgroup of /sdadmin is an AdminGroup too (`subgroup` makes one)."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        # Discord hides /sdadmin from members without Manage Server, but a server can change that setting.
        if may_administer(caller_of(interaction)):
            return True
        raise Refused(NOT_ADMIN)

    def subgroup(self, name: str, description: str) -> AdminGroup:
        """A group under this one, checked as this one is."""
        return AdminGroup(name=name, description=description, parent=self)


def admin_group() -> AdminGroup:
    """/sdadmin, which every feature adds its admin commands to: default_member_permissions = Manage Server,
    offered in servers only."""
    return AdminGroup(
        name="sdadmin",
        description="Manage sdbot on this server",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
        # Explicit, so that allowing members' commands in DMs (SDBOT_ALLOW_DMS) never offers this one there.
        allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=False, private_channel=False),
    )
