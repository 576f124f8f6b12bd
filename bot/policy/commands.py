"""/sdadmin policy: the server's safe-content policy, shown and set by admins (Manage Server), every change logged."""

from __future__ import annotations

from collections.abc import Callable

import discord
from discord import app_commands

from bot.interactions.adapter import caller_and_responder, channel_option
from bot.interactions.port import Caller, ChannelOption
from bot.limits.admin_group import AdminGroup
from bot.pipeline.progress import Clock
from bot.policy.blocklist import BadEntry, normalize_entry, split_entries
from bot.policy.rules import (
    AGE_BLOCKLIST,
    AGE_FLAGGED,
    FLAGGED,
    Flagged,
    GuildPolicy,
    format_setting,
)
from bot.policy.store import PolicyStore, TooManyEntries
from core.wire import EngineReady

# Discord caps a message at 2000 characters; a long block list is cut short in /sdadmin policy show.
_LIST_CHARS = 600
_MESSAGE_CHARS = 1900
# The channels a policy can be set for: those members can /imagine in (threads follow their parent).
PolicyChannel = discord.TextChannel | discord.VoiceChannel | discord.StageChannel | discord.ForumChannel

FLAGGED_LABELS = {
    Flagged.POST: "posted as drawn (not checked)",
    Flagged.SPOILER: "posted as spoilers",
    Flagged.WITHHOLD: "withheld",
}


def _entries(words: tuple[str, ...]) -> str:
    if not words:
        return "empty"
    shown = ", ".join(f"`{w}`" for w in words)
    if len(shown) <= _LIST_CHARS:
        return shown
    cut = shown[:_LIST_CHARS].rsplit(", ", 1)[0]
    return f"{cut} … ({len(words)} in all)"


def _where(channel_id: int | None) -> str:
    return "this server" if channel_id is None else f"<#{channel_id}>"


def describe_policy(
    policy: GuildPolicy, checker: bool, channel_id: int | None = None, age_restricted: bool = False
) -> str:
    """The policy as admins read it: the server's, each channel's own, and what applies in one channel."""
    server = policy.server
    lines = [
        "**Safe content**",
        "• Safety checker: "
        + ("loaded" if checker else "not configured (the owner sets `SDBOT_SAFETY_MODEL`), so images are not checked"),
        f"• Block list: {_entries(server.words)}",
        f"• Flagged images: {FLAGGED_LABELS[_flagged(policy, FLAGGED, None)]}",
        "• Age-restricted channels: block list "
        + ("applies" if policy.setting(AGE_BLOCKLIST, None) else "does not apply")
        + f", flagged images {FLAGGED_LABELS[_flagged(policy, AGE_FLAGGED, None)]}",
    ]
    for own_id, own in sorted(policy.channels.items()):
        parts = [f"also blocks {_entries(own.words)}"] if own.words else []
        parts += [f"{name.replace('_', ' ')} {format_setting(value)}" for name, value in sorted(own.settings.items())]
        if parts:
            lines.append(f"• <#{own_id}>: " + "; ".join(parts))
    if channel_id is not None:
        rules = policy.rules(channel_id, age_restricted)
        kind = "age-restricted" if age_restricted else "not age-restricted"
        lines += [
            f"**In <#{channel_id}>** ({kind}):",
            f"• Prompts are checked against: {_entries(rules.block_list.entries)}",
            f"• Flagged images are {FLAGGED_LABELS[rules.on_flagged]}",
        ]
    return _fit(lines)


def _fit(lines: list[str]) -> str:
    """The lines that fit in one Discord message, and how many did not."""
    kept: list[str] = []
    for index, line in enumerate(lines):
        if sum(len(k) + 1 for k in kept) + len(line) > _MESSAGE_CHARS:
            kept.append(f"… and {len(lines) - index} more lines")
            break
        kept.append(line)
    return "\n".join(kept)


def _flagged(policy: GuildPolicy, name: str, channel_id: int | None) -> Flagged:
    value = policy.setting(name, channel_id)
    assert isinstance(value, Flagged)
    return value


class PolicyCommands:
    """The actions behind /sdadmin policy."""

    def __init__(self, *, policy: PolicyStore, engine_ready: Callable[[], EngineReady | None], clock: Clock) -> None:
        self.policy = policy
        self.engine_ready = engine_ready
        self.clock = clock

    def _checker(self) -> bool:
        ready = self.engine_ready()
        return ready is not None and ready.safety_checker

    async def show(self, caller: Caller, channel: ChannelOption | None) -> str:
        """The server's policy, and what applies in `channel`."""
        assert caller.guild_id is not None
        policy = await self.policy.policy(caller.guild_id)
        if channel is None:
            return describe_policy(policy, self._checker())
        return describe_policy(policy, self._checker(), channel.id, channel.age_restricted)

    async def blocklist(self, caller: Caller, action: str, words: str, channel: ChannelOption | None) -> str:
        """Add or remove comma-separated entries, for the server or one channel."""
        assert caller.guild_id is not None
        channel_id = channel.id if channel is not None else None
        try:
            entries = [normalize_entry(raw) for raw in split_entries(words)]
        except BadEntry as exc:
            return str(exc)
        if not entries:
            return "Give one or more words or phrases, separated by commas."
        now, by_id, where = self.clock(), caller.user_id, _where(channel_id)
        if action == "add":
            try:
                added = await self.policy.add_words(caller.guild_id, channel_id, entries, by_id, now)
            except TooManyEntries as exc:
                return f"{exc} Remove some first."
            if not added:
                return f"Those are already on the block list of {where}."
            return f"Added to the block list of {where}: {_entries(tuple(added))}."
        removed = await self.policy.remove_words(caller.guild_id, channel_id, entries, by_id, now)
        if not removed:
            return f"None of those is on the block list of {where}."
        return f"Removed from the block list of {where}: {_entries(tuple(removed))}."

    async def flagged(self, caller: Caller, action: Flagged, channel: ChannelOption | None) -> str:
        """What happens to flagged images in channels that are not age-restricted."""
        assert caller.guild_id is not None
        channel_id = channel.id if channel is not None else None
        await self.policy.set_setting(caller.guild_id, channel_id, FLAGGED, action, caller.user_id, self.clock())
        text = f"Flagged images in {_where(channel_id)} are now {FLAGGED_LABELS[action]}"
        if channel is not None and channel.age_restricted:
            text += " (but that channel is age-restricted: `/sdadmin policy agerestricted` sets what applies there)"
        if not self._checker():
            text += "; no safety checker is configured yet (`SDBOT_SAFETY_MODEL`)"
        return text + "."

    async def age_restricted(
        self, caller: Caller, blocklist: bool | None, flagged: Flagged | None, channel: ChannelOption | None
    ) -> str:
        """What applies in age-restricted channels: the block list on or off, and what happens to flagged images."""
        assert caller.guild_id is not None
        if blocklist is None and flagged is None:
            return "Give `blocklist`, `flagged` or both."
        channel_id = channel.id if channel is not None else None
        changes = []
        if blocklist is not None:
            await self.policy.set_setting(
                caller.guild_id, channel_id, AGE_BLOCKLIST, blocklist, caller.user_id, self.clock()
            )
            changes.append("the block list " + ("applies" if blocklist else "does not apply"))
        if flagged is not None:
            await self.policy.set_setting(
                caller.guild_id, channel_id, AGE_FLAGGED, flagged, caller.user_id, self.clock()
            )
            changes.append(f"flagged images are {FLAGGED_LABELS[flagged]}")
        where = "age-restricted channels" if channel is None else f"<#{channel.id}> while it is age-restricted"
        return f"In {where}, " + " and ".join(changes) + "."

    async def reset(self, caller: Caller, channel: ChannelOption) -> str:
        """Drop a channel's own entries and settings."""
        assert caller.guild_id is not None
        if await self.policy.reset_channel(caller.guild_id, channel.id, caller.user_id, self.clock()):
            return f"<#{channel.id}> follows the server's policy again."
        return f"<#{channel.id}> had no policy of its own; the server's applies."


def add_policy_commands(admin: AdminGroup, commands: PolicyCommands) -> AdminGroup:
    """/sdadmin policy show | blocklist | flagged | agerestricted | reset, under the Manage Server /sdadmin."""
    group = admin.subgroup("policy", "Safe content: block list and flagged images")
    flagged_choices = [app_commands.Choice(name=f"{a.value}: {FLAGGED_LABELS[a]}", value=a.value) for a in Flagged]
    channel_help = "Set it for this channel only (its threads follow it); default the whole server"

    @group.command(name="show", description="The block list, what happens to flagged images, per channel")
    @app_commands.describe(channel="Also show what applies in this channel")
    async def show(interaction: discord.Interaction, channel: PolicyChannel | None = None) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await commands.show(caller, _option(channel)), quiet=True)

    @group.command(name="blocklist", description="Add or remove words or phrases that prompts may not use")
    @app_commands.describe(
        action="Add to the block list or remove from it",
        words="Words or phrases, separated by commas; end one with * to match any word it starts",
        channel=channel_help,
    )
    @app_commands.choices(
        action=[app_commands.Choice(name="add", value="add"), app_commands.Choice(name="remove", value="remove")]
    )
    async def blocklist(
        interaction: discord.Interaction,
        action: app_commands.Choice[str],
        words: app_commands.Range[str, 1, 1000],
        channel: PolicyChannel | None = None,
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        text = await commands.blocklist(caller, action.value, words, _option(channel))
        await responder.reply_privately(text, quiet=True)

    @group.command(name="flagged", description="What happens to images the safety checker flags")
    @app_commands.describe(action="Spoiler them or withhold them", channel=channel_help)
    @app_commands.choices(action=[c for c in flagged_choices if c.value != Flagged.POST.value])
    async def flagged(
        interaction: discord.Interaction, action: app_commands.Choice[str], channel: PolicyChannel | None = None
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        text = await commands.flagged(caller, Flagged(action.value), _option(channel))
        await responder.reply_privately(text, quiet=True)

    @group.command(name="agerestricted", description="What applies in channels Discord marks age-restricted")
    @app_commands.describe(
        blocklist="Whether the block list applies there (default: no)",
        flagged="What happens to flagged images there (default: posted, not checked)",
        channel=channel_help,
    )
    @app_commands.choices(flagged=flagged_choices)
    async def agerestricted(
        interaction: discord.Interaction,
        blocklist: bool | None = None,
        flagged: app_commands.Choice[str] | None = None,
        channel: PolicyChannel | None = None,
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        action = Flagged(flagged.value) if flagged is not None else None
        text = await commands.age_restricted(caller, blocklist, action, _option(channel))
        await responder.reply_privately(text, quiet=True)

    @group.command(name="reset", description="Drop a channel's own policy, so the server's applies there")
    async def reset(interaction: discord.Interaction, channel: PolicyChannel) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await commands.reset(caller, channel_option(channel)), quiet=True)

    return group


def _option(channel: PolicyChannel | None) -> ChannelOption | None:
    """A channel option as the commands read it, None when left out."""
    return channel_option(channel) if channel is not None else None
