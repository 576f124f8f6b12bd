"""The one adapter between discord.py and the interaction port: reads the Caller from a `discord.Interaction` and
answers it as the Responder; slash commands, the result buttons' DynamicItem and `on_interaction` call it."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import discord

from bot.interactions.port import MESSAGE_MAX, Caller, ChannelOption, MemberOption, ResponseFailed

log = logging.getLogger(__name__)

# What the bot must be allowed in a channel to post results there with its own token.
NEEDED_PERMISSIONS = {
    "view_channel": "View Channel",
    "send_messages": "Send Messages",
    "embed_links": "Embed Links",
    "attach_files": "Attach Files",
    "read_message_history": "Read Message History",
}


def is_age_restricted(channel: object) -> bool:
    """Whether Discord marks the channel age-restricted (a thread follows its parent; DMs are not)."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def policy_channel_id(channel: object, channel_id: int) -> int:
    """The channel whose policy applies: a thread follows its parent channel."""
    if isinstance(channel, discord.Thread) and channel.parent_id is not None:
        return channel.parent_id
    return channel_id


def missing_permissions(permissions: discord.Permissions) -> tuple[str, ...]:
    """The permissions the bot lacks in the channel to deliver results there, as Discord's client names them."""
    return tuple(label for name, label in NEEDED_PERMISSIONS.items() if not getattr(permissions, name))


def _walk(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for component in components:
        yield component
        yield from _walk(component.get("components") or [])
        if isinstance(component.get("component"), dict):
            yield from _walk([component["component"]])


def submitted_values(data: Mapping[str, Any]) -> dict[str, str]:
    """The text inputs of a modal submission, by custom_id (none for any other interaction)."""
    return {
        c["custom_id"]: str(c.get("value") or "") for c in _walk(list(data.get("components") or [])) if "custom_id" in c
    }


def caller_of(interaction: discord.Interaction) -> Caller:
    """What services may know of an interaction, read where it arrives."""
    user, channel, message = interaction.user, interaction.channel, interaction.message
    return Caller(
        user_id=user.id,
        user_name=user.display_name,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        role_ids=tuple(role.id for role in getattr(user, "roles", [])),
        parent_id=channel.parent_id if isinstance(channel, discord.Thread) else None,
        age_restricted=is_age_restricted(channel),
        manage_guild=interaction.permissions.manage_guild,
        manage_messages=interaction.permissions.manage_messages,
        bot_missing=missing_permissions(interaction.app_permissions) if interaction.guild_id else (),
        upload_limit=interaction.filesize_limit,
        message_id=message.id if message is not None else None,
        message_ephemeral=message is not None and message.flags.ephemeral,
        values=submitted_values(interaction.data or {}),
    )


def member_option(member: discord.abc.User) -> MemberOption:
    """A member option as Discord resolved it (a user outside the server has no roles)."""
    return MemberOption(member.id, tuple(role.id for role in getattr(member, "roles", [])))


def channel_option(channel: discord.abc.Snowflake) -> ChannelOption:
    """A channel option as Discord resolved it."""
    return ChannelOption(channel.id, is_age_restricted(channel))


class DiscordResponder:
    """The Responder over a real `discord.Interaction`."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction
        self._thinking_privately = False

    async def reply_privately(
        self,
        text: str | None = None,
        *,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
        quiet: bool = False,
    ) -> None:
        """See Responder; the text is cut to what Discord accepts (whatever it quotes: a prompt, file names)."""
        message: dict[str, Any] = {}
        if text is not None:
            message["content"] = text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"
        if embed is not None:
            message["embed"] = embed
        if view is not None:
            message["view"] = view
        if quiet:
            message["allowed_mentions"] = discord.AllowedMentions.none()
        if not self.interaction.response.is_done():
            await self.interaction.response.send_message(**message, ephemeral=True)
            return
        if not self._thinking_privately:
            # Everyone sees a public "thinking…": it goes, and the answer comes to the member alone.
            await self.interaction.delete_original_response()
        # After a private "thinking…", Discord shows the first follow-up in its place.
        await self.interaction.followup.send(**message, ephemeral=True)

    async def note_privately(self, text: str) -> None:
        """See Responder; a note Discord refuses is logged, as it changes nothing the member asked for."""
        try:
            await self.interaction.followup.send(text[:MESSAGE_MAX], ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not send a private note: %s", exc)

    async def think(self, *, private: bool) -> None:
        """See Responder."""
        await self.interaction.response.defer(ephemeral=private, thinking=True)
        self._thinking_privately = private

    async def acknowledge(self, text: str, view: discord.ui.View) -> int:
        """See Responder."""
        try:
            if self.interaction.response.is_done():
                message = await self.interaction.edit_original_response(content=text, view=view)
                return message.id
            callback = await self.interaction.response.send_message(text, view=view)
            return callback.message_id or (await self.interaction.original_response()).id
        except discord.HTTPException as exc:
            raise ResponseFailed(str(exc)) from exc

    async def open_modal(self, modal: discord.ui.Modal) -> None:
        """See Responder."""
        await self.interaction.response.send_modal(modal)

    async def update_pressed(self, *, embed: discord.Embed, view: discord.ui.View) -> None:
        """See Responder."""
        await self.interaction.response.edit_message(embed=embed, view=view)

    async def delete_pressed(self) -> None:
        """See Responder."""
        message = self.interaction.message
        if message is None:
            raise ResponseFailed("the interaction has no message")
        try:
            await message.delete()
        except discord.HTTPException as exc:
            raise ResponseFailed(str(exc)) from exc


def caller_and_responder(interaction: discord.Interaction) -> tuple[Caller, DiscordResponder]:
    """Both sides of the seam for one interaction, as the Discord-facing edge hands them to a service."""
    return caller_of(interaction), DiscordResponder(interaction)
